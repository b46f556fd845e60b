"""The Django admin's job and answer pages: read-only (jobs change only through their actions), the
status in colour with the one-line reason and when it happened, and answers searchable by question."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from ingestion.models import IngestionJob
from kbportal.claiming import JobStatus
from search.models import AnswerTask

pytestmark = pytest.mark.django_db

REASON = "all 2 documents failed; first: red.png: PNG image cannot be read"


def make_task(kb, question: str, **fields) -> AnswerTask:
    values = {"kb": kb, "question": question, "fingerprint": "f" * 64, "generator": "extractive",
              "expires_at": timezone.now() + timedelta(hours=1), **fields}
    return AnswerTask.objects.create(**values)


def test_job_list_shows_the_failed_status_in_red_with_the_reason(admin_client, make_job):
    make_job(status=JobStatus.FAILED, error=REASON + "\nsecond line", finished_at=timezone.now())
    html = admin_client.get(reverse("admin:ingestion_ingestionjob_changelist")).content.decode()
    assert '<strong style="color: #b3261e">failed</strong>' in html
    assert f'<span style="display: block; min-width: 20em; color: #b3261e">{REASON} second line</span>' in html
    assert 'class="sortable column-when"' in html and 'class="column-reason_line"' in html


def test_job_change_page_is_read_only_and_lists_document_errors_as_a_table(admin_client, make_job):
    errors = [{"document": "red.png", "error": "PNG image cannot be read"}]
    job = make_job(status=JobStatus.FAILED, total=2, failed=2, error=REASON, recent_errors=errors)
    url = reverse("admin:ingestion_ingestionjob_change", args=[job.pk])
    page = admin_client.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and REASON in html
    assert "<tr><td>red.png</td><td>PNG image cannot be read</td></tr>" in html and '[{"' not in html
    assert 'name="status"' not in html and 'name="failed"' not in html and 'name="_save"' not in html
    response = admin_client.post(url, {"status": JobStatus.SUCCEEDED, "failed": "0", "total": "2", "done": "2"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert (job.status, job.failed) == (JobStatus.FAILED, 2)


def test_jobs_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:ingestion_ingestionjob_add")).status_code == 403


def test_answer_list_shows_status_reason_and_when_and_searches_questions(admin_client, kb):
    failed = make_task(kb, "Why does printing fail?", status=JobStatus.FAILED, error="model server answered 500",
                       finished_at=timezone.now())
    make_task(kb, "How many vacation days?", status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    url = reverse("admin:search_answertask_changelist")
    html = admin_client.get(url, {"q": "printing"}).content.decode()
    assert "Why does printing fail?" in html and "How many vacation days?" not in html
    assert '<strong style="color: #b3261e">failed</strong>' in html
    assert '<span style="display: block; min-width: 20em; color: #b3261e">model server answered 500</span>' in html
    assert reverse("admin:search_answertask_change", args=[failed.pk]) in html


def test_answer_pages_are_read_only(admin_client, kb):
    task = make_task(kb, "Why does printing fail?", status=JobStatus.RUNNING, attempts=2, error="timed out")
    url = reverse("admin:search_answertask_change", args=[task.pk])
    html = admin_client.get(url).content.decode()
    assert 'name="question"' not in html and 'name="_save"' not in html
    assert admin_client.post(url, {"question": "changed"}).status_code == 403
    assert admin_client.get(reverse("admin:search_answertask_add")).status_code == 403
    list_html = admin_client.get(reverse("admin:search_answertask_changelist")).content.decode()
    assert "retrying after: timed out" in list_html


def test_document_list_shows_each_documents_error_on_one_line(admin_client, text_source):
    text_source.documents.create(key="red.png", status="failed", error="PNG image\ncannot be read")
    html = admin_client.get(reverse("admin:knowledge_document_changelist")).content.decode()
    assert "PNG image cannot be read" in html


def test_cancel_action_still_works_on_the_read_only_list(admin_client, make_job):
    job = make_job(status=JobStatus.QUEUED)
    admin_client.post(reverse("admin:ingestion_ingestionjob_changelist"),
                      {"action": "cancel_jobs", "_selected_action": [str(job.pk)]})
    assert IngestionJob.objects.get(pk=job.pk).status == JobStatus.CANCELED
