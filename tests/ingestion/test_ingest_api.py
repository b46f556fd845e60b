"""The ingestion REST API: uploads, sources, document deletes and jobs, with their errors."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from ingestion.models import IngestionJob
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus
from knowledge.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


def key_client(kb, scopes):
    _, raw = api_key_create(name="k", kb_slugs=[kb.slug], scopes=scopes, rate="100/s")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def upload(client, kb, name="a.txt", body=b"hello upload", content_type="text/plain"):
    return client.post(
        f"/api/v1/kbs/{kb.slug}/uploads/", {"file": SimpleUploadedFile(name, body, content_type=content_type)}
    )


def test_upload_answers_202_with_job_and_its_status_url(staff_api, kb):
    response = upload(staff_api, kb)
    assert response.status_code == 202
    job = response.json()["job"]
    assert job["status"] == JobStatus.QUEUED
    assert response["Location"].endswith(f"/api/v1/jobs/{job['id']}/")
    run_ingestion_job(job["id"])
    detail = staff_api.get(f"/api/v1/jobs/{job['id']}/").json()
    assert (detail["status"], detail["done"], detail["percent"]) == (JobStatus.SUCCEEDED, 1, 100.0)


def test_upload_over_the_limit_is_413(staff_api, kb, settings):
    settings.KB_MAX_UPLOAD_BYTES = 10
    response = upload(staff_api, kb, body=b"x" * 11)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_upload_of_an_unextractable_type_is_415(staff_api, kb):
    response = upload(staff_api, kb, name="notes.rar", body=b"Rar!\x1a\x07", content_type="application/x-rar")
    assert response.status_code == 415


def test_upload_without_a_file_is_400_naming_the_field(staff_api, kb):
    response = staff_api.post(f"/api/v1/kbs/{kb.slug}/uploads/", {})
    assert response.status_code == 400
    assert "file" in response.json()["fields"]


def test_upload_file_name_cannot_traverse_paths(staff_api, kb):
    response = upload(staff_api, kb, name="../../etc/passwd.txt")
    assert response.json()["source"]["config"]["files"][0]["filename"] == "passwd.txt"


def test_text_source_with_bad_config_is_400_with_field_errors(staff_api, kb):
    response = staff_api.post(
        f"/api/v1/kbs/{kb.slug}/sources/", {"kind": "text", "name": "t", "config": {"text": ""}}, format="json"
    )
    assert response.status_code == 400
    assert "config" in response.json()["fields"]


def test_url_source_with_a_non_http_url_is_400(staff_api, kb):
    response = staff_api.post(
        f"/api/v1/kbs/{kb.slug}/sources/",
        {"kind": "url", "name": "u", "config": {"start_urls": ["ftp://example.com/"]}},
        format="json",
    )
    assert response.status_code == 400


def test_key_without_ingest_scope_is_403(kb):
    assert upload(key_client(kb, ["search"]), kb).status_code == 403


def test_key_for_another_knowledge_base_is_403(kb, make_kb):
    other = make_kb()
    assert upload(key_client(other, ["ingest"]), kb).status_code == 403


def test_ingest_key_uploads_and_cancels_its_job(kb):
    client = key_client(kb, ["ingest"])
    job_id = upload(client, kb).json()["job"]["id"]
    response = client.post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.json()["status"] == JobStatus.CANCELED
    assert IngestionJob.objects.get(pk=job_id).status == JobStatus.CANCELED


def test_document_delete_answers_202_and_the_document_is_gone(staff_api, kb):
    job_id = upload(staff_api, kb).json()["job"]["id"]
    run_ingestion_job(job_id)
    (document,) = staff_api.get(f"/api/v1/kbs/{kb.slug}/documents/").json()["results"]
    response = staff_api.delete(f"/api/v1/kbs/{kb.slug}/documents/{document['id']}/")
    assert response.status_code == 202
    assert response.json()["job"]["kind"] == "delete_documents"
    assert staff_api.get(f"/api/v1/kbs/{kb.slug}/documents/{document['id']}/").status_code == 404
