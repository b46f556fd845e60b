"""Job lists (API and `manage.py jobs`): filters narrow the list, unknown filter values are errors."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from ingestion.models import IngestionJob, JobKind
from kbportal.claiming import JobStatus
from knowledge.services import api_key_create, knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def jobs(kb):
    return {
        "failed": IngestionJob.objects.create(kb=kb, status=JobStatus.FAILED),
        "queued": IngestionJob.objects.create(kb=kb, kind=JobKind.DELETE_SOURCE),
    }


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content
    return {job["id"] for job in response.json()["results"]}


def test_api_filters_jobs_by_knowledge_base_status_and_kind(staff_api, kb, jobs):
    assert ids(staff_api.get("/api/v1/jobs/", {"kb": kb.slug, "status": "failed"})) == {jobs["failed"].pk}
    assert ids(staff_api.get("/api/v1/jobs/", {"kb": kb.slug, "kind": "delete_source"})) == {jobs["queued"].pk}
    assert ids(staff_api.get("/api/v1/jobs/", {"kb": kb.slug})) == {job.pk for job in jobs.values()}


def test_api_answers_an_unknown_status_or_kind_with_400_naming_the_allowed_values(staff_api, jobs):
    response = staff_api.get("/api/v1/jobs/", {"status": "bogus", "kind": "resync"})
    assert response.status_code == 400
    fields = response.json()["fields"]
    assert fields["status"] == ["Unknown status 'bogus'; choose among queued, running, succeeded, failed, canceled."]
    assert fields["kind"] == [
        "Unknown kind 'resync'; choose among sync, delete_documents, delete_source, delete_knowledge_base."
    ]


def test_api_answers_an_unknown_knowledge_base_with_400(staff_api, jobs):
    response = staff_api.get("/api/v1/jobs/", {"kb": "nope"})
    assert response.status_code == 400
    assert response.json()["fields"] == {"kb": ["No knowledge base 'nope'."]}


def test_key_filtering_on_a_knowledge_base_it_may_not_read_is_told_it_does_not_exist(kb, jobs):
    other = knowledge_base_create(slug="other-team", name="Other team", embedder="hashing")
    _, raw = api_key_create(name="k", kb_slugs=[kb.slug], scopes=["ingest"], rate="100/s")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = client.get("/api/v1/jobs/", {"kb": other.slug})
    assert response.status_code == 400
    assert response.json()["fields"] == {"kb": ["No knowledge base 'other-team'."]}


def test_jobs_command_refuses_an_unknown_knowledge_base(jobs):
    with pytest.raises(CommandError, match=r"^No knowledge base 'nope'\.$"):
        call_command("jobs", "--kb", "nope", stdout=StringIO())


def test_jobs_command_refuses_an_unknown_status(jobs):
    with pytest.raises(CommandError, match="invalid choice: 'bogus'"):
        call_command("jobs", "--status", "bogus", stdout=StringIO())


def test_jobs_command_filters_by_kind(kb, jobs):
    out = StringIO()
    call_command("jobs", "--kb", kb.slug, "--kind", "delete_source", stdout=out)
    lines = out.getvalue().splitlines()[1:]
    assert [int(line.split()[0]) for line in lines] == [jobs["queued"].pk]
