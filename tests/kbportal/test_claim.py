"""The claim fence: who may run a job, proved on real PostgreSQL rows."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from ingestion.models import IngestionJob
from kbportal.claiming import JobStatus, LeaseLost, claim, renew_lease, request_cancel, schedule_retry
from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def job():
    kb = KnowledgeBase.objects.create(slug="claims", name="claims")
    return IngestionJob.objects.create(kb=kb)


def test_claim_of_queued_job_sets_running_lease_and_attempt(job):
    claimed = claim(IngestionJob, job.pk, "host:1", lease_seconds=30)
    assert claimed.status == JobStatus.RUNNING
    assert claimed.lease_owner == "host:1"
    assert claimed.attempts == 1
    assert claimed.lease_expires_at > timezone.now() + timedelta(seconds=25)


def test_second_claim_while_lease_is_live_gets_nothing(job):
    assert claim(IngestionJob, job.pk, "host:1", lease_seconds=30) is not None
    assert claim(IngestionJob, job.pk, "host:2", lease_seconds=30) is None


def test_expired_lease_can_be_claimed_by_another_worker(job):
    claim(IngestionJob, job.pk, "host:1", lease_seconds=30)
    IngestionJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    taken = claim(IngestionJob, job.pk, "host:2", lease_seconds=30)
    assert taken.lease_owner == "host:2"
    assert taken.attempts == 2


def test_finished_job_is_never_claimed_again(job):
    IngestionJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    assert claim(IngestionJob, job.pk, "host:1") is None


def test_job_due_later_is_not_claimed_before_its_time(job):
    IngestionJob.objects.filter(pk=job.pk).update(not_before=timezone.now() + timedelta(minutes=5))
    assert claim(IngestionJob, job.pk, "host:1") is None


def test_worker_that_lost_its_lease_cannot_renew_it(job):
    mine = claim(IngestionJob, job.pk, "host:1", lease_seconds=30)
    IngestionJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    claim(IngestionJob, job.pk, "host:2", lease_seconds=30)
    with pytest.raises(LeaseLost):
        renew_lease(mine)


def test_cancel_of_queued_job_cancels_it_before_it_starts(job):
    request_cancel(IngestionJob, job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    assert claim(IngestionJob, job.pk, "host:1") is None


def test_retry_requeues_with_backoff_then_fails_when_attempts_are_used(job, settings):
    settings.KB_JOB_RETRY_BASE_SECONDS = 10
    IngestionJob.objects.filter(pk=job.pk).update(max_attempts=2)
    first = claim(IngestionJob, job.pk, "host:1")
    assert schedule_retry(first, "search server down") == JobStatus.QUEUED
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.not_before > timezone.now() + timedelta(seconds=4)
    IngestionJob.objects.filter(pk=job.pk).update(not_before=None)
    second = claim(IngestionJob, job.pk, "host:1")
    assert schedule_retry(second, "still down") == JobStatus.FAILED
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "still down" in job.error


def test_racing_claims_from_many_threads_have_exactly_one_winner(job):
    winners = []
    barrier = threading.Barrier(8)

    def race(n):
        barrier.wait()
        try:
            if claim(IngestionJob, job.pk, f"host:{n}", lease_seconds=30) is not None:
                winners.append(n)
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_a_retry_doorbell_never_rings_before_the_row_is_due(job, settings):
    """rq stores scheduled times in whole seconds (truncated): the retry must be rounded up."""
    import django_rq
    from rq.registry import ScheduledJobRegistry

    settings.KB_JOB_RETRY_BASE_SECONDS = 0.4
    settings.KB_JOB_RETRY_MAX_SECONDS = 0.4
    claimed = claim(IngestionJob, job.pk, "host:1")
    schedule_retry(claimed, "blip")
    job.refresh_from_db()
    registry = ScheduledJobRegistry(queue=django_rq.get_queue(job.queue_name))
    ring_at = registry.get_scheduled_time(job.rq_job_id)
    assert ring_at >= job.not_before
