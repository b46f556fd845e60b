"""Real worker processes racing over real PostgreSQL and Redis: every job runs exactly once."""

import collections
import os
import signal
import subprocess
import sys
from datetime import timedelta

import django_rq
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from bench.processes import wait_until
from ingestion.models import IngestionJob
from ingestion.services import source_add
from ingestion.tasks import sweep_jobs
from kbportal.claiming import JobStatus
from search.client import get_client
from tests.support import embedded_texts, start_worker, stop_worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def add_text_sources(kb, count: int) -> list:
    return [
        source_add(kb=kb, kind="text", name=f"doc {n}", config={"text": f"unique marker m{n}x body"})[1]
        for n in range(count)
    ]


def statuses(jobs) -> collections.Counter:
    return collections.Counter(
        IngestionJob.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )


def markers_embedded() -> collections.Counter:
    return collections.Counter(
        text.split("unique marker ")[1].split(" ")[0] for text in embedded_texts() if "unique marker" in text
    )


def indexed_chunks(document_id: int) -> int:
    client = get_client()
    client.indices.refresh(index=settings.KB_ES_INDEX)
    return client.count(index=settings.KB_ES_INDEX, query={"term": {"document": str(document_id)}})["count"]


@pytest.mark.parametrize("workers", [2, 4])
def test_each_of_80_jobs_runs_exactly_once_across_workers(kb, workers):
    jobs = add_text_sources(kb, 80)
    processes = [start_worker("high", burst=True) for _ in range(workers)]
    for process in processes:
        process.wait(timeout=600)
    assert statuses(jobs) == {JobStatus.SUCCEEDED: 80}
    embedded = markers_embedded()
    assert len(embedded) == 80
    assert set(embedded.values()) == {1}


def test_second_delivery_of_a_finished_job_is_a_no_op(kb):
    (job,) = add_text_sources(kb, 1)
    start_worker("high", burst=True).wait(timeout=120)
    assert IngestionJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    # rq may deliver again (abandoned-job cleanup, retries): force a second delivery.
    django_rq.get_queue("high").enqueue(job.rq_function, job.pk, job_id=f"{job.rq_job_id}-again")
    start_worker("high", burst=True).wait(timeout=120)
    assert markers_embedded() == {"m0x": 1}
    assert IngestionJob.objects.get(pk=job.pk).attempts == 1


def test_killed_worker_job_is_finished_by_another_after_lease_expiry(kb):
    (job,) = add_text_sources(kb, 1)
    doomed = start_worker("high", KB_JOB_LEASE_SECONDS="2", KB_TEST_EMBED_DELAY="30")
    try:
        wait_until(lambda: embedded_texts(), timeout=60, message="the first worker to start embedding")
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its scheduler die, as in a crash
        doomed.wait()
    assert IngestionJob.objects.get(pk=job.pk).status == JobStatus.RUNNING
    wait_until(lambda: sweep_jobs()["expired"] == 1, timeout=30, message="the lease to expire and the sweeper to act")
    rescuer = start_worker("high", burst=True)
    rescuer.wait(timeout=120)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 2
    document = job.source.documents.get()
    assert document.chunk_count >= 1
    assert indexed_chunks(document.pk) == document.chunk_count


def test_a_job_handed_over_by_the_sweeper_goes_ahead_of_the_backlog(kb):
    (held,) = add_text_sources(kb, 1)
    # A worker claimed it and vanished; its lease ran out while three more jobs were queued.
    IngestionJob.objects.filter(pk=held.pk).update(
        status=JobStatus.RUNNING, attempts=1, lease_owner="gone", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    backlog = add_text_sources(kb, 3)
    assert sweep_jobs() == {"requeued": 0, "expired": 1}
    held.refresh_from_db()
    waiting = django_rq.get_queue("high").job_ids
    assert waiting[0] == held.rq_job_id
    assert waiting[-3:] == [job.rq_job_id for job in backlog]


def test_sweeper_restores_queued_jobs_after_redis_lost_its_data(kb):
    jobs = add_text_sources(kb, 5)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    assert django_rq.get_queue("high").count == 0
    assert sweep_jobs()["requeued"] == 5
    assert django_rq.get_queue("high").job_ids == [job.rq_job_id for job in jobs]  # in the order they came
    start_worker("high", burst=True).wait(timeout=120)
    assert statuses(jobs) == {JobStatus.SUCCEEDED: 5}


def test_sweeper_rings_again_for_a_doorbell_a_dying_worker_popped(kb):
    (job,) = add_text_sources(kb, 1)
    queue = django_rq.get_queue("high")
    # What a worker's blocking pop does; the worker then dies with the reply unread. The rq job
    # still says queued, but it is in no queue and nothing will ever run it.
    assert queue.connection.lpop(queue.key).decode() == job.rq_job_id
    assert queue.fetch_job(job.rq_job_id).get_status() == "queued"
    assert sweep_jobs() == {"requeued": 1, "expired": 0}
    assert sweep_jobs() == {"requeued": 0, "expired": 0}  # now it waits in the queue
    start_worker("high", burst=True).wait(timeout=120)
    assert statuses([job]) == {JobStatus.SUCCEEDED: 1}


def test_the_scheduler_sweeps_in_its_own_process_while_no_worker_is_free(kb):
    jobs = add_text_sources(kb, 3)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    scheduler = subprocess.Popen(
        [sys.executable, "manage.py", "scheduler", "ingestion/cron.py"], cwd=settings.BASE_DIR,
        env=worker_env(KB_SWEEP_INTERVAL="1", KB_PRELOAD=""), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # No worker runs, so only a sweep made by the scheduler itself can ring for the lost jobs.
        wait_until(lambda: django_rq.get_queue("high").job_ids[:3] == [job.rq_job_id for job in jobs], timeout=30,
                   message="the scheduler's sweeper to enqueue the jobs Redis lost")
    finally:
        stop_worker(scheduler)
    start_worker("high", burst=True).wait(timeout=120)
    assert statuses(jobs) == {JobStatus.SUCCEEDED: 3}


def test_worker_survives_bad_input_and_indexes_the_rest(kb):
    from ingestion.services import store_upload, upload_add

    files = [
        store_upload(data=b"", filename="empty.txt", content_type="text/plain"),
        store_upload(data=bytes(range(256)) * 40, filename="junk.bin", content_type="application/octet-stream"),
        store_upload(data=b"%PDF-1.4 broken beyond repair", filename="broken.pdf", content_type="application/pdf"),
        store_upload(data=b"unique marker good1x a fine document", filename="good.txt", content_type="text/plain"),
    ]
    _, job = upload_add(kb=kb, files=files)
    worker = start_worker()  # every ingestion queue: an upload holding a PDF goes to `ocr`
    try:
        wait_until(lambda: IngestionJob.objects.get(pk=job.pk).is_finished, timeout=120, message="the job to finish")
        assert worker.poll() is None, "the worker must stay up"
    finally:
        stop_worker(worker)
    job.refresh_from_db()
    assert (job.status, job.done, job.failed) == (JobStatus.SUCCEEDED, 1, 3)
    errors = dict(job.source.documents.values_list("key", "error"))
    assert errors["good.txt"] == ""
    assert all(errors[name] for name in ("empty.txt", "junk.bin", "broken.pdf"))


def test_minilm_is_loaded_once_per_worker_process_across_many_jobs(make_kb):
    kb = make_kb(embedder="minilm")
    jobs = add_text_sources(kb, 5)
    client = redis.Redis.from_url(settings.REDIS_URL)
    start_worker("high", burst=True, KB_EMBEDDER="minilm", KB_TORCH_THREADS="1").wait(timeout=300)
    assert statuses(jobs) == {JobStatus.SUCCEEDED: 5}
    loads = {k.decode(): int(v) for k, v in client.hgetall("kb:embedder_loads").items()}
    minilm = {k: v for k, v in loads.items() if k.startswith("minilm:")}
    assert len(minilm) == 1, loads
    assert list(minilm.values()) == [1]
