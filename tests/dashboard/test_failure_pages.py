"""Failures on the dashboard pages, through Django's test client: a failed job or answer is shown
red with its one-line reason (lists, job page, answer page), per-document errors as a table, a
retrying job or answer without a red error, retry of a failed answer, and where job history lives."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from kbportal.claiming import JobStatus
from search.models import AnswerTask

pytestmark = pytest.mark.django_db

REASON = "all 2 documents failed; first: red.png: PNG image cannot be read"
DOCUMENT_ERRORS = [
    {"document": "red.png", "error": "PNG image cannot be read"},
    {"document": "blue.png", "error": "PNG image cannot be read"},
]


def make_task(kb, **fields) -> AnswerTask:
    values = {"kb": kb, "question": "How many vacation days?", "fingerprint": "f" * 64, "generator": "extractive",
              "expires_at": timezone.now() + timedelta(hours=1), **fields}
    return AnswerTask.objects.create(**values)


def cell(html: str, pattern: str) -> str:
    match = re.search(pattern, html, re.S)
    assert match, pattern
    return " ".join(match.group(1).split())


def failed_job(make_job):
    return make_job(status=JobStatus.FAILED, total=2, failed=2, error=REASON, recent_errors=DOCUMENT_ERRORS,
                    finished_at=timezone.now())


def test_job_list_shows_a_failed_job_red_with_its_reason_in_the_error_column(staff_client, make_job):
    job = failed_job(make_job)
    html = staff_client.get(reverse("dashboard:jobs")).content.decode()
    assert '<th scope="col">Error</th>' in html
    row = cell(html, rf'(<tr data-job-id="{job.pk}" class="job status-failed">.*?</tr>)')
    assert cell(row, r'<td class="reason-cell" data-field="reason">(.*?)</td>') == REASON
    assert "[{" not in html and "{'document'" not in html


def test_knowledge_base_page_lists_its_failed_job_with_the_reason(staff_client, make_job, kb):
    job = failed_job(make_job)
    html = staff_client.get(reverse("dashboard:kb", args=[kb.slug])).content.decode()
    row = cell(html, rf'(<tr data-job-id="{job.pk}" class="job status-failed">.*?</tr>)')
    assert REASON in row


def test_job_page_shows_the_reason_and_each_documents_error_in_a_table(staff_client, make_job):
    job = failed_job(make_job)
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert 'class="panel job-detail status-failed"' in html
    assert cell(html, r'<p class="reason" data-field="reason" role="status">(.*?)</p>') == REASON
    body = cell(html, r'<tbody data-field="recent_errors">(.*?)</tbody>')
    assert body == ("<tr><td>red.png</td><td>PNG image cannot be read</td></tr>"
                    "<tr><td>blue.png</td><td>PNG image cannot be read</td></tr>")


def test_a_running_job_retrying_after_an_error_shows_no_red_error(staff_client, make_job):
    job = make_job(status=JobStatus.RUNNING, attempts=2, error="SearchUnavailable: timed out after 2 s")
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert 'status-running' in html and 'status-failed' not in html
    reason = cell(html, r'<p class="reason" data-field="reason" role="status">(.*?)</p>')
    assert reason == "retrying after: SearchUnavailable: timed out after 2 s"


def test_a_succeeded_job_shows_no_reason(staff_client, make_job):
    job = make_job(status=JobStatus.SUCCEEDED, error="")
    html = staff_client.get(reverse("dashboard:job", args=[job.pk])).content.decode()
    assert re.search(r'<p class="reason" data-field="reason" role="status" hidden>\s*</p>', html)


def test_knowledge_base_page_marks_sources_and_documents_for_refresh_when_a_job_finishes(staff_client, kb):
    html = staff_client.get(reverse("dashboard:kb", args=[kb.slug])).content.decode()
    assert re.search(r'<div class="table-wrap" id="sources-table" data-refresh-on-job-finish>', html)
    assert '<div id="documents-results" data-refresh-on-job-finish>' in html
    assert 'data-live-kb="' + kb.slug + '"' in html


# -- answers -----------------------------------------------------------------------------------


def test_failed_answer_shows_its_reason_and_an_ask_again_button(staff_client, kb):
    task = make_task(kb, status=JobStatus.FAILED, error="model server answered 500:\nInternal error",
                     finished_at=timezone.now())
    html = staff_client.get(reverse("dashboard:answer", args=[task.pk])).content.decode()
    assert "status-failed" in html
    assert cell(html, r'<p class="reason" data-field="reason" role="status">(.*?)</p>') == (
        "model server answered 500: Internal error"
    )
    retry = reverse("dashboard:answer-retry", args=[task.pk])
    assert re.search(rf'<form method="post" action="{retry}" data-show-when="retryable">', html)


def test_running_answer_shows_no_error_and_no_retry(staff_client, kb):
    task = make_task(kb, status=JobStatus.RUNNING, attempts=2, error="TransientError: search server unavailable")
    html = staff_client.get(reverse("dashboard:answer", args=[task.pk])).content.decode()
    assert 'class="error"' not in html and "status-failed" not in html
    assert "retrying after: TransientError: search server unavailable" in html
    retry = reverse("dashboard:answer-retry", args=[task.pk])
    assert re.search(rf'<form method="post" action="{retry}" data-show-when="retryable" hidden>', html)


def test_ask_again_queues_the_same_question_as_a_new_answer(staff_client, staff_user, kb):
    task = make_task(kb, status=JobStatus.FAILED, error="model server answered 500", mode="keyword", passages=3,
                     finished_at=timezone.now())
    response = staff_client.post(reverse("dashboard:answer-retry", args=[task.pk]))
    new = AnswerTask.objects.exclude(pk=task.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:answer", args=[new.pk])
    assert (new.question, new.mode, new.passages, new.status) == (task.question, "keyword", 3, JobStatus.QUEUED)
    assert new.requester_user == staff_user


def test_ask_again_of_a_succeeded_answer_is_refused_with_a_message(staff_client, kb):
    task = make_task(kb, status=JobStatus.SUCCEEDED, answer="25 days.", finished_at=timezone.now())
    response = staff_client.post(reverse("dashboard:answer-retry", args=[task.pk]), follow=True)
    assert AnswerTask.objects.count() == 1
    assert "Only a failed or canceled answer can be asked again" in response.content.decode()


def test_ask_again_is_for_staff_only(client, plain_user, kb):
    task = make_task(kb, status=JobStatus.FAILED, finished_at=timezone.now())
    assert client.post(reverse("dashboard:answer-retry", args=[task.pk])).status_code == 302  # to the login page
    client.force_login(plain_user)
    assert client.post(reverse("dashboard:answer-retry", args=[task.pk])).status_code == 403
    assert AnswerTask.objects.count() == 1


def test_recent_questions_show_a_failed_answers_reason(staff_client, kb):
    make_task(kb, status=JobStatus.FAILED, error="model server answered 500", finished_at=timezone.now())
    html = staff_client.get(reverse("dashboard:ask")).content.decode()
    row = cell(html, r'(<tr class="status-failed">.*?</tr>)')
    assert cell(row, r'<td class="reason-cell">(.*?)</td>') == "model server answered 500"


# -- where job history lives -------------------------------------------------------------------


def test_overview_says_failures_live_in_jobs_not_in_django_rq(staff_client):
    html = " ".join(staff_client.get(reverse("dashboard:overview")).content.decode().split())
    assert "Job history and failures live in" in html and f'<a href="{reverse("dashboard:jobs")}">Jobs</a>' in html


def test_django_rq_page_points_to_the_jobs_page(admin_client):
    html = admin_client.get(reverse("django_rq:home")).content.decode()
    assert 'data-testid="rq-note"' in html and f'href="{reverse("dashboard:jobs")}?status=failed"' in html
    assert "<h1>Queues</h1>" in html  # django-rq's own page, with the note added
