"""enqueue_due_syncs(): scheduled re-syncs of url sources, low priority, never two per source."""

import threading
from datetime import timedelta

import django_rq
import pytest
from django.db import connection
from django.utils import timezone
from rq.cron import CronScheduler

from ingestion.models import IngestionJob
from ingestion.services import source_sync
from ingestion.tasks import enqueue_due_syncs
from kbportal.claiming import JobStatus, Priority
from knowledge.models import Source
from knowledge.services import source_create
from tests.support import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def url_source(kb, name="site", *, hours=None, synced_hours_ago=None, enabled=True):
    config = {"start_urls": [f"https://{name}.example/"], "schedule_hours": hours}
    source = source_create(kb=kb, kind="url", name=name, config=config)
    synced = timezone.now() - timedelta(hours=synced_hours_ago) if synced_hours_ago is not None else None
    Source.objects.filter(pk=source.pk).update(last_synced_at=synced, enabled=enabled)
    return source


def sync_jobs(source) -> list[IngestionJob]:
    return list(IngestionJob.objects.filter(source=source, kind="sync"))


def test_due_sources_get_a_low_priority_job_on_the_low_queue(kb):
    never = url_source(kb, "never", hours=6)
    stale = url_source(kb, "stale", hours=6, synced_hours_ago=7)
    ids = enqueue_due_syncs()
    jobs = IngestionJob.objects.filter(pk__in=ids)
    assert {job.source_id for job in jobs} == {never.pk, stale.pk}
    assert {(job.priority, job.status) for job in jobs} == {(Priority.LOW, JobStatus.QUEUED)}
    assert set(django_rq.get_queue("low").job_ids) == {job.rq_job_id for job in jobs}


def test_sources_not_due_get_nothing(kb):
    fresh = url_source(kb, "fresh", hours=6, synced_hours_ago=5)
    unscheduled = url_source(kb, "unscheduled", synced_hours_ago=1000)
    disabled = url_source(kb, "disabled", hours=1, enabled=False)
    text = source_create(kb=kb, kind="text", name="text", config={"text": "hello"})
    assert enqueue_due_syncs() == []
    assert not IngestionJob.objects.filter(source__in=[fresh, unscheduled, disabled, text]).exists()


def test_source_with_an_active_sync_gets_no_second_job(kb):
    source = url_source(kb, hours=1)
    manual = source_sync(source=source)
    assert enqueue_due_syncs() == []
    IngestionJob.objects.filter(pk=manual.pk).update(status=JobStatus.RUNNING)
    assert enqueue_due_syncs() == []
    assert sync_jobs(source) == [manual]


def test_repeated_runs_queue_one_job_per_due_source(kb):
    source = url_source(kb, hours=1)
    first = enqueue_due_syncs()
    assert enqueue_due_syncs() == []
    assert [job.pk for job in sync_jobs(source)] == first


def test_concurrent_runs_never_create_two_jobs_for_a_source(kb):
    sources = [url_source(kb, f"s{n}", hours=1) for n in range(5)]
    barrier = threading.Barrier(4)

    def run():
        try:
            barrier.wait()
            enqueue_due_syncs()
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(sync_jobs(source)) for source in sources] == [1] * 5


def test_manual_sync_while_a_scheduled_one_waits_returns_it(kb):
    source = url_source(kb, hours=1)
    (scheduled,) = enqueue_due_syncs()
    assert source_sync(source=source).pk == scheduled


def test_source_is_due_again_after_its_sync_finished_and_time_passed(kb):
    source = url_source(kb, hours=2)
    (first,) = enqueue_due_syncs()
    IngestionJob.objects.filter(pk=first).update(status=JobStatus.SUCCEEDED)
    Source.objects.filter(pk=source.pk).update(last_synced_at=timezone.now() - timedelta(hours=1))
    assert enqueue_due_syncs() == []
    Source.objects.filter(pk=source.pk).update(last_synced_at=timezone.now() - timedelta(hours=3))
    (second,) = enqueue_due_syncs()
    assert second != first


def test_cron_config_runs_it_every_minute(clean_redis):
    scheduler = CronScheduler(connection=clean_redis)
    scheduler.load_config_from_file(str(ROOT / "ingestion" / "cron.py"))
    jobs = {job.func_name: job for job in scheduler.get_jobs()}
    assert jobs["ingestion.tasks.enqueue_due_syncs"].interval == 60
