"""The ingestion management commands, as an operator runs them."""

from datetime import datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from ingestion.models import IngestionJob
from kbportal.claiming import JobStatus
from knowledge.models import Source

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_addsource_then_ingest_inline_indexes_the_text(kb):
    source_id = int(run("addsource", kb.slug, "--text", "the inline path works", "--name", "note").strip())
    output = run("ingest", str(source_id), "--inline")
    assert "100.0%" in output
    source = Source.objects.get(pk=source_id)
    assert source.documents.get().status == "indexed"
    assert source.last_sync_outcome.startswith("succeeded")


def test_addsource_file_stores_and_queues_it(kb, tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nSome notes.")
    source_id = int(run("addsource", kb.slug, "--file", str(path)).strip())
    source = Source.objects.get(pk=source_id)
    assert source.config["files"][0]["filename"] == "notes.md"
    assert IngestionJob.objects.get(source=source).status == JobStatus.QUEUED


def test_addsource_errors_are_clear(kb, tmp_path):
    with pytest.raises(CommandError, match="No knowledge base"):
        run("addsource", "missing", "--text", "x")
    with pytest.raises(CommandError, match="No such file"):
        run("addsource", kb.slug, "--file", str(tmp_path / "absent.txt"))
    with pytest.raises(CommandError, match="start_urls"):
        run("addsource", kb.slug, "--url", "ftp://nowhere")


def test_ingest_of_unknown_source_is_an_error():
    with pytest.raises(CommandError, match="No source"):
        run("ingest", "999999")


def test_jobs_lists_and_filters(kb):
    run("addsource", kb.slug, "--text", "listed")
    output = run("jobs", "--kb", kb.slug, "--status", "queued")
    assert kb.slug in output and "queued" in output
    assert kb.slug not in run("jobs", "--kb", kb.slug, "--status", "failed")


def test_jobs_shows_when_each_job_finished_and_why_it_failed_on_one_line(kb):
    finished = timezone.make_aware(datetime(2026, 3, 4, 5, 6, 7))
    failed = IngestionJob.objects.create(
        kb=kb, status=JobStatus.FAILED, finished_at=finished,
        error="all 2 documents failed; first: red.png:\nPNG image cannot be read",
    )
    retrying = IngestionJob.objects.create(kb=kb, status=JobStatus.QUEUED, attempts=1, error="timed out after 2 s")
    lines = {line.split()[0]: line for line in run("jobs", "--kb", kb.slug).splitlines()}
    assert lines["id"].split()[-2:] == ["when", "error"]
    reason = "all 2 documents failed; first: red.png: PNG image cannot be read"
    assert lines[str(failed.pk)].endswith(f"{timezone.localtime(finished):%Y-%m-%d %H:%M:%S} {reason}")
    created = timezone.localtime(retrying.created_at)
    assert lines[str(retrying.pk)].endswith(f"{created:%Y-%m-%d %H:%M:%S} retrying after: timed out after 2 s")


def test_cancel_of_a_queued_job_and_of_a_finished_one(kb):
    run("addsource", kb.slug, "--text", "cancel me")
    job = IngestionJob.objects.get(kb=kb)
    assert "canceled" in run("cancel", str(job.pk))
    with pytest.raises(CommandError, match="already ended"):
        run("cancel", str(job.pk))


def test_sweep_jobs_reports_what_it_requeued(kb, clean_redis):
    run("addsource", kb.slug, "--text", "lost in redis")
    clean_redis.flushdb()
    assert "requeued 1 queued job(s)" in run("sweep_jobs")
