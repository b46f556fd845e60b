"""The dashboard pages through Django's test client: permissions, what each page shows, and every
form, including the services' validation messages."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from ingestion.models import IngestionJob, JobKind
from kbportal.claiming import JobStatus
from knowledge.models import ApiKey, Document, DocumentStatus, KnowledgeBase, Source

pytestmark = pytest.mark.django_db

PAGES = [
    ("dashboard:overview", []),
    ("dashboard:jobs", []),
    ("dashboard:playground", []),
    ("dashboard:ask", []),
    ("dashboard:api-keys", []),
]


def kb_pages(kb):
    return [reverse(name, args=args) for name, args in PAGES] + [reverse("dashboard:kb", args=[kb.slug])]


def add_documents(source, count, **fields):
    return Document.objects.bulk_create(
        Document(source=source, key=f"doc-{n}.txt", title=f"Doc {n}", **fields) for n in range(count)
    )


# -- permissions -------------------------------------------------------------------------------


def test_anonymous_user_is_redirected_to_login_from_every_page(client, kb):
    for url in kb_pages(kb):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={url}"


def test_non_staff_user_gets_403_on_every_page(client, plain_user, kb):
    client.force_login(plain_user)
    for url in kb_pages(kb):
        assert client.get(url).status_code == 403


def test_non_staff_user_cannot_post_an_action(client, plain_user, make_job):
    client.force_login(plain_user)
    job = make_job(status=JobStatus.QUEUED)
    assert client.post(reverse("dashboard:job-cancel", args=[job.pk])).status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_login_page_signs_a_staff_user_in_and_returns_to_the_dashboard(client, staff_user):
    page = client.get("/accounts/login/?next=/dashboard/jobs/")
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post(
        "/accounts/login/", {"username": "operator", "password": "pw-operator-1", "next": "/dashboard/jobs/"}
    )
    assert response.status_code == 302 and response["Location"] == "/dashboard/jobs/"
    assert client.get("/dashboard/jobs/").status_code == 200


def test_actions_refuse_get(staff_client, make_job, text_source):
    job = make_job()
    for url in (
        reverse("dashboard:job-cancel", args=[job.pk]),
        reverse("dashboard:job-retry", args=[job.pk]),
        reverse("dashboard:source-sync", args=[text_source.kb.slug, text_source.pk]),
    ):
        assert staff_client.get(url).status_code == 405


# -- overview ----------------------------------------------------------------------------------


def test_overview_shows_document_and_chunk_counts_per_kb(staff_client, kb, text_source):
    add_documents(text_source, 3, status=DocumentStatus.INDEXED, chunk_count=4)
    add_documents(Source.objects.create(kb=kb, kind="text", name="failed", config={"text": "x"}), 1,
                  status=DocumentStatus.FAILED, chunk_count=0)
    response = staff_client.get(reverse("dashboard:overview"))
    row = next(k for k in response.context["kbs"] if k.pk == kb.pk)
    assert (row.documents, row.chunks) == (4, 12)
    assert kb.name.encode() in response.content


def test_overview_shows_jobs_workers_queues_and_components(staff_client, make_job):
    make_job(status=JobStatus.RUNNING)
    make_job(status=JobStatus.QUEUED)
    make_job(status=JobStatus.QUEUED)
    response = staff_client.get(reverse("dashboard:overview"))
    assert (response.context["jobs"]["running"], response.context["jobs"]["queued"]) == (1, 2)
    assert response.context["queues"]["workers"] == 0
    assert set(response.context["queues"]["queues"]) == {"high", "default", "ocr", "low", "answers"}
    components = response.context["system"]["components"]
    assert {"database", "redis", "search"} <= set(components)
    assert components["database"]["status"] == "up"
    assert response.context["system"]["breakers"][0]["state"] == "closed"
    assert b"/admin/django-rq/" in response.content


def test_create_kb_form_creates_it_and_opens_its_page(staff_client):
    response = staff_client.post(
        reverse("dashboard:kb-new"), {"name": "Handbook", "slug": "handbook", "embedder": "hashing"}
    )
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:kb", args=["handbook"])
    assert KnowledgeBase.objects.get(slug="handbook").dimensions == 384


def test_create_kb_with_taken_slug_shows_the_services_message(staff_client, kb):
    response = staff_client.post(reverse("dashboard:kb-new"), {"name": "Again", "slug": kb.slug, "embedder": "hashing"})
    assert response.status_code == 400
    assert "already exists" in " ".join(response.context["kb_form"].errors["slug"])


# -- knowledge base page -----------------------------------------------------------------------


def test_kb_page_lists_sources_with_last_sync_outcome(staff_client, kb, text_source):
    Source.objects.filter(pk=text_source.pk).update(last_sync_outcome="3 indexed, 1 failed")
    response = staff_client.get(reverse("dashboard:kb", args=[kb.slug]))
    assert b"Handbook" in response.content and b"3 indexed, 1 failed" in response.content


def test_documents_are_filtered_by_status_and_text(staff_client, kb, text_source):
    add_documents(text_source, 3, status=DocumentStatus.INDEXED)
    Document.objects.create(source=text_source, key="broken.pdf", title="Broken", status="failed", error="no text")
    url = reverse("dashboard:kb", args=[kb.slug])
    failed = staff_client.get(url, {"status": "failed"}).context["documents"]
    assert [doc.key for doc in failed] == ["broken.pdf"]
    found = staff_client.get(url, {"q": "doc-1"}).context["documents"]
    assert [doc.key for doc in found] == ["doc-1.txt"]


def test_documents_are_paginated(staff_client, kb, text_source):
    add_documents(text_source, 30)
    url = reverse("dashboard:kb", args=[kb.slug])
    second = staff_client.get(url, {"page": 2}).context["documents"]
    assert (second.number, len(second.object_list), second.paginator.count) == (2, 5, 30)


def test_adding_a_text_source_queues_its_sync(staff_client, kb):
    response = staff_client.post(
        reverse("dashboard:source-new", args=[kb.slug, "text"]), {"text-name": "Notes", "text-text": "Some notes."}
    )
    assert response.status_code == 302
    source = Source.objects.get(kb=kb, name="Notes")
    assert source.config == {"text": "Some notes."}
    assert IngestionJob.objects.filter(source=source, kind=JobKind.SYNC, status=JobStatus.QUEUED).count() == 1


def test_blank_text_source_shows_the_services_message(staff_client, kb):
    response = staff_client.post(
        reverse("dashboard:source-new", args=[kb.slug, "text"]), {"text-name": "Notes", "text-text": "   "}
    )
    assert response.status_code == 400
    assert response.context["source_forms"]["text"].errors["text"] == ["Text must be a non-empty string."]
    assert response.context["open_form"] == "text"
    assert not Source.objects.filter(kb=kb, name="Notes").exists()


def test_url_source_with_crawl_settings_is_saved(staff_client, kb):
    data = {
        "url-name": "Site",
        "url-start_urls": "https://example.org/docs/\nhttps://example.org/blog/",
        "url-exclude": "/private/",
        "url-max_depth": "2",
        "url-max_pages": "40",
        "url-concurrency": "4",
        "url-delay": "0.5",
        "url-use_sitemap": "on",
    }
    assert staff_client.post(reverse("dashboard:source-new", args=[kb.slug, "url"]), data).status_code == 302
    config = Source.objects.get(kb=kb, name="Site").config
    assert config["start_urls"] == ["https://example.org/docs/", "https://example.org/blog/"]
    assert (config["max_depth"], config["max_pages"], config["concurrency"], config["delay"]) == (2, 40, 4, 0.5)
    assert (config["exclude"], config["use_sitemap"]) == (["/private/"], True)
    assert config["allowed_domains"] == ["example.org"]


def test_url_source_errors_land_on_their_fields(staff_client, kb):
    url = reverse("dashboard:source-new", args=[kb.slug, "url"])
    base = {"url-name": "Site", "url-max_depth": "2", "url-max_pages": "40", "url-concurrency": "4", "url-delay": "0"}
    bad_url = staff_client.post(url, {**base, "url-start_urls": "ftp://example.org/"})
    assert bad_url.status_code == 400
    assert bad_url.context["source_forms"]["url"].errors["start_urls"] == ["Not an http(s) URL: ftp://example.org/"]
    too_deep = staff_client.post(url, {**base, "url-start_urls": "https://example.org/", "url-max_depth": "99"})
    assert too_deep.context["source_forms"]["url"].errors["max_depth"] == ["Must be an integer from 0 to 50."]
    assert b"Must be an integer from 0 to 50." in too_deep.content


def test_file_upload_stores_the_file_and_queues_its_sync(staff_client, kb):
    upload = SimpleUploadedFile("guide.txt", b"How to file expenses.", content_type="text/plain")
    response = staff_client.post(reverse("dashboard:source-new", args=[kb.slug, "file"]), {"file-files": [upload]})
    assert response.status_code == 302
    source = Source.objects.get(kb=kb, kind="file")
    (entry,) = source.config["files"]
    assert (source.name, entry["filename"], entry["size"]) == ("guide.txt", "guide.txt", 21)
    assert IngestionJob.objects.filter(source=source).exists()


def test_file_upload_of_unsupported_type_is_refused(staff_client, kb):
    upload = SimpleUploadedFile("tool.exe", b"MZ\x90\x00", content_type="application/x-msdownload")
    response = staff_client.post(reverse("dashboard:source-new", args=[kb.slug, "file"]), {"file-files": [upload]})
    assert response.status_code == 400
    summary, reason = response.context["source_forms"]["file"].errors["files"]
    assert summary == "Nothing was stored: the file was refused (tool.exe)."
    assert reason.startswith("tool.exe: Windows program (.exe) cannot be read; the supported kinds are plain text")
    assert not Source.objects.filter(kb=kb, kind="file").exists()


def test_sync_now_queues_one_job_however_often_it_is_pressed(staff_client, kb, text_source):
    url = reverse("dashboard:source-sync", args=[kb.slug, text_source.pk])
    assert staff_client.post(url).status_code == 302
    assert staff_client.post(url).status_code == 302
    assert IngestionJob.objects.filter(source=text_source, status=JobStatus.QUEUED).count() == 1


def test_delete_asks_for_confirmation_then_deletes(staff_client, kb, text_source):
    url = reverse("dashboard:source-delete", args=[kb.slug, text_source.pk])
    page = staff_client.get(url)
    assert page.status_code == 200 and b"Delete source" in page.content
    assert Source.objects.filter(pk=text_source.pk).exists()
    assert staff_client.post(url).status_code == 302
    assert not Source.objects.filter(pk=text_source.pk).exists()
    assert IngestionJob.objects.filter(kind=JobKind.DELETE_SOURCE, payload__source_id=text_source.pk).exists()


# -- jobs --------------------------------------------------------------------------------------


def test_jobs_list_is_filtered_by_status(staff_client, make_job):
    running, failed = make_job(status=JobStatus.RUNNING), make_job(status=JobStatus.FAILED)
    response = staff_client.get(reverse("dashboard:jobs"), {"status": "failed"})
    assert [job.pk for job, _ in response.context["jobs"]] == [failed.pk]
    assert f'data-job-id="{running.pk}"'.encode() not in response.content


def test_job_detail_shows_progress_counters_and_recent_errors(staff_client, make_job):
    errors = [{"document": "a.pdf", "error": "no text"}]
    job = make_job(done=40, failed=2, total=80, stage="embed", recent_errors=errors)
    response = staff_client.get(reverse("dashboard:job", args=[job.pk]))
    content = response.content.decode()
    assert 'value="52.5"' in content and "52.5%" in content
    assert "embed" in content and "a.pdf" in content and "no text" in content
    assert f'data-live-job="{job.pk}"' in content


def test_cancel_button_cancels_a_queued_job(staff_client, make_job):
    job = make_job(status=JobStatus.QUEUED)
    response = staff_client.post(reverse("dashboard:job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED


def test_retry_button_queues_a_new_job_and_opens_it(staff_client, make_job):
    job = make_job(status=JobStatus.FAILED)
    response = staff_client.post(reverse("dashboard:job-retry", args=[job.pk]))
    new = IngestionJob.objects.exclude(pk=job.pk).get()
    assert response["Location"] == reverse("dashboard:job", args=[new.pk])
    assert (new.status, new.source_id) == (JobStatus.QUEUED, job.source_id)


# -- search playground -------------------------------------------------------------------------


def test_playground_without_a_query_shows_only_the_form(staff_client, kb):
    response = staff_client.get(reverse("dashboard:playground"))
    assert response.status_code == 200 and response.context["results"] is None


def test_playground_runs_every_mode_with_timings(staff_client, kb, search_index):
    response = staff_client.get(reverse("dashboard:playground"), {"kb": kb.slug, "q": "vacation policy", "size": 5})
    results = response.context["results"]
    assert [result.mode for result in results] == ["hybrid", "keyword", "semantic"]
    assert all(result.error == "" and result.wall_ms > 0 for result in results)


def test_playground_reports_an_unknown_kb(staff_client, kb):
    response = staff_client.get(reverse("dashboard:playground"), {"kb": "nope", "q": "x"})
    assert response.context["results"] is None and "kb" in response.context["form"].errors


# -- API keys ----------------------------------------------------------------------------------


def test_new_api_key_is_shown_once(staff_client, kb):
    response = staff_client.post(
        reverse("dashboard:api-keys"), {"name": "ci", "kb_slugs": [kb.slug], "scopes": ["search", "ingest"]}
    )
    full_key = response.context["new_key"]
    key = ApiKey.objects.get(name="ci")
    assert full_key.startswith(f"kb_{key.prefix}_") and key.matches(full_key.split("_", 2)[2])
    assert response["Cache-Control"] == "no-store"
    assert full_key.encode() not in staff_client.get(reverse("dashboard:api-keys")).content


def test_api_key_without_kb_or_scope_shows_the_services_messages(staff_client, kb):
    response = staff_client.post(reverse("dashboard:api-keys"), {"name": "ci", "scopes": ["search"]})
    assert response.status_code == 400
    assert response.context["form"].errors["kb_slugs"] == ["Give at least one knowledge base."]
    response = staff_client.post(reverse("dashboard:api-keys"), {"name": "ci", "kb_slugs": [kb.slug]})
    assert response.status_code == 400 and response.context["form"].errors["scopes"]
    assert not ApiKey.objects.exists()


def test_revoke_button_revokes_the_key(staff_client, kb):
    staff_client.post(reverse("dashboard:api-keys"), {"name": "ci", "kb_slugs": [kb.slug], "scopes": ["search"]})
    key = ApiKey.objects.get()
    assert staff_client.post(reverse("dashboard:api-key-revoke", args=[key.pk])).status_code == 302
    key.refresh_from_db()
    assert key.revoked
