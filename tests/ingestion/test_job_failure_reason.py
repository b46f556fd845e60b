"""A failed job says why in one plain line: the pipeline's own reason, and the one-line forms of any
error (`reason`, `retry_reason`) that every page, the admin and the `jobs` command show."""

import pytest

from ingestion.models import IngestionJob
from ingestion.services import job_state, store_upload, upload_add
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus, one_line

pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def failing_upload(kb, names: list[str]) -> IngestionJob:
    files = [store_upload(data=PNG, filename=name, content_type="image/png") for name in names]
    _, job = upload_add(kb=kb, files=files)
    run_ingestion_job(job.pk)
    return IngestionJob.objects.select_related("kb").get(pk=job.pk)


def test_a_sync_whose_documents_all_fail_names_the_first_document_and_its_error_in_words(kb):
    job = failing_upload(kb, ["red.png", "blue.png"])
    first = job.recent_errors[0]
    assert job.status == JobStatus.FAILED
    assert job.error == f"all 2 documents failed; first: red.png: {first['error']}"
    assert first["error"] and "{" not in job.error and "[" not in job.error


def test_a_sync_of_one_failing_document_says_the_only_document_failed(kb):
    job = failing_upload(kb, ["red.png"])
    assert job.error.startswith("the only document failed: red.png: ")


def test_job_state_gives_the_reason_of_a_failed_job_on_one_line(kb):
    job = failing_upload(kb, ["red.png"])
    IngestionJob.objects.filter(pk=job.pk).update(error=job.error + "\n  Traceback line two")
    job.refresh_from_db()
    state = job_state(job)
    assert state["reason"] == one_line(job.error) and "\n" not in state["reason"]
    assert state["reason"].endswith("Traceback line two") and state["retry_reason"] == ""


def test_a_running_job_with_an_earlier_attempts_error_has_no_reason_only_a_retry_reason(make_kb):
    kb = make_kb()
    job = IngestionJob.objects.create(kb=kb, status=JobStatus.RUNNING, attempts=2, error="SearchUnavailable: timed out")
    state = job_state(job)
    assert (state["reason"], state["retry_reason"]) == ("", "SearchUnavailable: timed out")
    assert job.reason_line == "retrying after: SearchUnavailable: timed out"


def test_a_succeeded_job_has_no_reason_at_all(make_kb):
    job = IngestionJob.objects.create(kb=make_kb(), status=JobStatus.SUCCEEDED, error="an old attempt's error")
    assert (job.reason, job.retry_reason, job.reason_line) == ("", "", "")


def test_one_line_collapses_whitespace_and_cuts_long_text():
    assert one_line("a\n\n b\tc ") == "a b c"
    cut = one_line("word " * 200, limit=50)
    assert len(cut) == 50 and cut.endswith("…")

