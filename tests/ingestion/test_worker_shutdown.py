"""Graceful shutdown of a real worker process: SIGTERM mid-job releases the job at a batch boundary."""

import collections
import signal
import time

import django_rq
import pytest
from django.conf import settings
from rq import Worker as RqWorker

from bench.processes import wait_until
from ingestion.models import IngestionJob
from ingestion.services import store_upload, upload_add
from kbportal.claiming import JobStatus, rq_job_waiting
from search.client import get_client
from tests.support import embedded_texts, start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

FILES = 6


def upload_files(kb) -> IngestionJob:
    files = [
        store_upload(data=f"# Part {n}\n\nshutdown marker s{n}x body".encode(), filename=f"part-{n}.md",
                     content_type="text/markdown")
        for n in range(FILES)
    ]
    return upload_add(kb=kb, files=files)[1]


def markers_embedded() -> collections.Counter:
    return collections.Counter(
        text.split("shutdown marker ")[1].split(" ")[0] for text in embedded_texts() if "shutdown marker" in text
    )


def chunks_per_document(source) -> collections.Counter:
    client = get_client()
    client.indices.refresh(index=settings.KB_ES_INDEX)
    query = {"bool": {"filter": [{"term": {"kb": str(source.kb_id)}}, {"term": {"source": str(source.pk)}}]}}
    hits = client.search(index=settings.KB_ES_INDEX, query=query, size=100, _source=["document"])["hits"]["hits"]
    return collections.Counter(hit["_source"]["document"] for hit in hits)


def test_sigterm_mid_job_releases_it_at_once_and_another_worker_finishes_it_without_duplicates(kb):
    job = upload_files(kb)
    # One document per batch, each embedding 3 s (18 s in all): the job is mid-way at the signal.
    stopping = start_worker("high", KB_EMBED_BATCH="1", KB_TEST_EMBED_DELAY="3")
    try:
        wait_until(lambda: len(embedded_texts()) >= 2, timeout=60, message="the worker to embed two batches")
        signalled = time.monotonic()
        stopping.send_signal(signal.SIGTERM)
        stopping.wait(timeout=15)
        exited_after = time.monotonic() - signalled
    finally:
        stop_worker(stopping, signal.SIGKILL)
    assert stopping.returncode == 0
    assert exited_after < 10  # the batch in flight (3 s + indexing), not the remaining ones (12 s)
    job.refresh_from_db()
    # Queued again with its doorbell waiting now, not after the 60 s lease would have expired.
    assert (job.status, job.lease_owner, job.lease_expires_at) == (JobStatus.QUEUED, "", None)
    assert rq_job_waiting(job)
    assert 0 < job.done < FILES  # the batches before the boundary were indexed and counted

    start_worker("high", burst=True).wait(timeout=120)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert set(markers_embedded().values()) == {1} and len(markers_embedded()) == FILES
    chunks = chunks_per_document(job.source)
    assert len(chunks) == FILES and set(chunks.values()) == {1}


def a_worker_waits_on_its_queue() -> bool:
    """An rq worker is idle: past start-up (model preload) with its signal handlers installed."""
    return any(worker.get_state() == "idle" for worker in RqWorker.all(connection=django_rq.get_connection("high")))


def test_sigterm_to_an_idle_worker_exits_promptly(kb):
    idle = start_worker("high")
    try:
        wait_until(a_worker_waits_on_its_queue, timeout=60, message="the worker to wait on its queue")
        idle.send_signal(signal.SIGTERM)
        idle.wait(timeout=10)
    finally:
        stop_worker(idle, signal.SIGKILL)
    assert idle.returncode == 0
