"""The claimable background job: one lifecycle for every kind of work a worker runs.

A job is a PostgreSQL row (the truth) plus an rq job (the doorbell). The rq job id is derived
from the row, so enqueueing twice is harmless, and the rq job body first *claims* the row with
`SELECT ... FOR UPDATE SKIP LOCKED`. rq may deliver a job twice (retries, abandoned-job
cleanup); a delivery that cannot claim its row does nothing. A worker holds a lease that it
renews while it works; a killed worker's lease expires and the sweeper hands the job on.

`JobRunner` owns the lifecycle (claim, lease, retry with backoff, cancel, finish); subclasses
implement only `run()`. Ingestion jobs and answer tasks both use it.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from datetime import timedelta
from typing import Any, ClassVar

import django_rq
import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, models, transaction
from django.db.models import Q
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus as RqStatus
from rq.queue import Queue

from kbportal import metrics
from kbportal.logging import job_context
from kbportal.redis_gate import GatedConnectionPool

logger = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class Priority(models.TextChoices):
    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


class TransientError(Exception):
    """A failure worth retrying: the search server, object store or network faltered."""


class LeaseLost(Exception):
    """Another worker owns the job now (our lease expired); stop without touching it."""


class JobCanceled(Exception):
    """Cancellation was requested; raised at a batch boundary."""


class WorkerStopping(Exception):
    """This worker process is shutting down (SIGTERM); raised at a batch boundary."""


#: Set once this process was asked to stop (see kbportal.worker.Worker): running jobs give
#: their row back at their next batch boundary instead of running to the end.
_stopping = threading.Event()


def request_worker_stop() -> None:
    _stopping.set()


def worker_stop_requested() -> bool:
    return _stopping.is_set()


class ClaimableJob(models.Model):
    """Abstract row of a background job; concrete models add what their work needs."""

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.DEFAULT)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    #: Dotted path of the rq entry point that runs this kind of job, called with the row's pk.
    rq_function: ClassVar[str] = ""
    #: Queue for every priority, when the job kind has its own queue (answers).
    fixed_queue: ClassVar[str] = ""

    class Meta:
        abstract = True

    @property
    def rq_job_id(self) -> str:
        """Derived from the row and its attempt count: enqueueing the same attempt twice is
        harmless (same id), while a retry or a hand-over never collides with the delivery that
        is still running (or died) under the previous id."""
        return f"{self._meta.label_lower.replace('.', '-')}-{self.pk}-a{self.attempts}"

    @property
    def queue_name(self) -> str:
        return self.fixed_queue or self.priority

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def finished_or_created_at(self):
        """When it finished, or when it was created while it is still active."""
        return self.finished_at or self.created_at

    @property
    def reason(self) -> str:
        """Why the job failed or was canceled, on one line; empty while it is active or once it succeeded."""
        return one_line(self.error) if self.status in (JobStatus.FAILED, JobStatus.CANCELED) else ""

    @property
    def retry_reason(self) -> str:
        """The error of the previous attempt, on one line, while the job waits for or runs another one."""
        return one_line(self.error) if self.status in (JobStatus.QUEUED, JobStatus.RUNNING) else ""

    @property
    def reason_line(self) -> str:
        """What a list shows beside the status: the reason, or the previous attempt's error while retrying."""
        return self.reason or (f"retrying after: {self.retry_reason}" if self.retry_reason else "")


def one_line(text: str, limit: int = 300) -> str:
    """`text` with its whitespace (newlines included) collapsed, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_rq_clients: dict[str, redis.Redis] = {}
_rq_clients_lock = threading.Lock()


def rq_queue(name: str) -> Queue:
    """The rq queue `name` on a Redis client shared by this process's threads.

    `django_rq.get_queue` builds a new client, so a new connection, on every call: on the accept
    path of an upload or a question that was a TCP connect and rq's INFO per request.
    """
    url = settings.RQ_QUEUES[name]["URL"]
    with _rq_clients_lock:
        client = _rq_clients.get(url)
        if client is None:
            timeout = settings.REDIS_SOCKET_TIMEOUT
            pool = GatedConnectionPool.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                # One immediate retry survives a stale pooled connection (Redis restarted); with
                # Redis down (or hanging: the gate) the caller, a 202 whose doorbell the sweeper
                # rings later, fails fast.
                retry=Retry(NoBackoff(), 1),
            )
            client = _rq_clients[url] = redis.Redis(connection_pool=pool)
    return django_rq.get_queue(name, connection=client)


def enqueue(job: ClaimableJob, *, new: bool = False, at_front: bool = False) -> bool:
    """Put the job's doorbell on its rq queue unless one is already waiting or running.

    Returns True when an rq job was enqueued. A job that is due later goes to rq's scheduler.
    `new`: the row was just created, so it has no doorbell to look for (one round trip less on
    the accept path; a stray second doorbell would be harmless anyway, the claim runs a job once).
    `at_front`: ahead of the jobs already waiting, for a job that waited or ran before them.
    """
    if not new and rq_job_waiting(job):
        return False
    queue = rq_queue(job.queue_name)
    options: dict[str, Any] = {
        "job_id": job.rq_job_id,
        "job_timeout": settings.RQ_QUEUES[job.queue_name]["DEFAULT_TIMEOUT"],
        "result_ttl": 600,
        "failure_ttl": 86400,
    }
    # rq sends what it writes in one MULTI/EXEC when given the pipeline (on its own it makes two
    # round trips): the accept path of every upload and question.
    with queue.connection.pipeline() as pipeline:
        if job.not_before and job.not_before > timezone.now():
            # rq keeps scheduled times in whole seconds, truncated, so a doorbell scheduled for
            # 12:00:00.9 rings at 12:00:00 and finds a row that is not due yet (the claim refuses
            # it, and the job waits for the sweeper). Round up: it never rings early.
            due = job.not_before.replace(microsecond=0) + timedelta(seconds=1)
            queue.enqueue_at(due, job.rq_function, job.pk, pipeline=pipeline, **options)
        else:
            queue.enqueue(job.rq_function, job.pk, pipeline=pipeline, at_front=at_front, **options)
        pipeline.execute()
    return True


def enqueue_on_commit(job: ClaimableJob) -> None:
    """Enqueue after the row is committed, so a worker can never miss the row it is told about.

    Robust: when Redis is unreachable the committed row stays queued and the sweeper enqueues it
    once Redis is back, so the caller (an upload answering 202) is not failed for it.
    """
    transaction.on_commit(lambda: enqueue(job, new=True), robust=True)


def claimable_filter(now) -> Q:
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    return (Q(status=JobStatus.QUEUED) & due) | Q(status=JobStatus.RUNNING, lease_expires_at__lt=now)


def claim(
    model: type[ClaimableJob], pk: int, owner: str, lease_seconds: int | None = None, *, only: Q | None = None
) -> ClaimableJob | None:
    """Claim the job row for `owner`, or return None when it is not ours to run right now.

    `only`: a further condition the row must meet (a runner of one kind of job claims only that kind).
    """
    lease_seconds = lease_seconds or settings.KB_JOB_LEASE_SECONDS
    with transaction.atomic():
        now = timezone.now()
        rows = model.objects.select_for_update(skip_locked=True).filter(claimable_filter(now), only or Q(), pk=pk)
        job = rows.first()
        if job is None:
            return None
        if job.cancel_requested:
            job.status = JobStatus.CANCELED
            job.finished_at = now
            job.error = job.error or "canceled before it started"
            job.save(update_fields=["status", "finished_at", "error", "updated_at"])
            return None
        job.status = JobStatus.RUNNING
        job.lease_owner = owner
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.attempts += 1
        job.started_at = job.started_at or now
        job.save(update_fields=["status", "lease_owner", "lease_expires_at", "attempts", "started_at", "updated_at"])
        return job


def renew_lease(job: ClaimableJob, lease_seconds: int | None = None) -> bool:
    """Extend our lease; returns whether cancellation was requested. Raises LeaseLost."""
    lease_seconds = lease_seconds or settings.KB_JOB_LEASE_SECONDS
    held = type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_owner=job.lease_owner)
    updated = held.update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds))
    if not updated:
        raise LeaseLost(f"job {job.pk} is no longer held by {job.lease_owner}")
    return type(job).objects.filter(pk=job.pk).values_list("cancel_requested", flat=True).first() or False


def _finish_fields(job: ClaimableJob, status: str, error: str = "", **fields: Any) -> int:
    """Write a final state, fenced on our lease: a worker that lost the job cannot overwrite it."""
    now = timezone.now()
    held = type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_owner=job.lease_owner)
    return held.update(
        status=status, error=error[:4000], finished_at=now, lease_expires_at=None, updated_at=now, **fields
    )


def retry_delay(attempts: int) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(settings.KB_JOB_RETRY_MAX_SECONDS, settings.KB_JOB_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


def schedule_retry(job: ClaimableJob, error: str) -> str:
    """Requeue after a transient error, or fail for good when attempts are used up."""
    if job.attempts >= job.max_attempts:
        _finish_fields(job, JobStatus.FAILED, f"gave up after {job.attempts} attempts: {error}")
        return JobStatus.FAILED
    not_before = timezone.now() + timedelta(seconds=retry_delay(job.attempts))
    held = type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_owner=job.lease_owner)
    if held.update(
        status=JobStatus.QUEUED, error=error[:4000], not_before=not_before, lease_owner="", lease_expires_at=None
    ):
        job.not_before = not_before
        enqueue(job)
    return JobStatus.QUEUED


def release(job: ClaimableJob) -> None:
    """Give the job back at once (graceful shutdown): queued again, first in its queue, no wait
    for the lease."""
    held = type(job).objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_owner=job.lease_owner)
    if held.update(status=JobStatus.QUEUED, lease_owner="", lease_expires_at=None):
        job.not_before = None
        enqueue(job, at_front=True)


def request_cancel(model: type[ClaimableJob], pk: int) -> ClaimableJob:
    """Ask a job to stop: a queued one is canceled now, a running one at its next batch boundary."""
    with transaction.atomic():
        job = model.objects.select_for_update().get(pk=pk)
        if job.is_finished:
            return job
        job.cancel_requested = True
        fields = ["cancel_requested", "updated_at"]
        if job.status == JobStatus.QUEUED:
            job.status = JobStatus.CANCELED
            job.finished_at = timezone.now()
            job.error = "canceled before it started"
            fields += ["status", "finished_at", "error"]
        job.save(update_fields=fields)
        return job


def rq_job_waiting(job: ClaimableJob) -> bool:
    """Whether the job's doorbell will still ring: waiting in its queue, scheduled or running.

    A doorbell whose status still says queued but that is in no queue was popped by a worker that
    never started it: the worker died, or lost its connection, with the reply in flight. Nothing
    will ever run it, so it does not count.
    """
    queue = rq_queue(job.queue_name)
    try:
        existing = RqJob.fetch(job.rq_job_id, connection=queue.connection)
    except NoSuchJobError:
        return False
    status = existing.get_status(refresh=False)
    if status == RqStatus.QUEUED:
        return queue.connection.lpos(queue.key, existing.id) is not None
    return status in (RqStatus.STARTED, RqStatus.SCHEDULED, RqStatus.DEFERRED)


def sweep(model: type[ClaimableJob]) -> dict[str, int]:
    """Re-enqueue queued jobs whose doorbell will not ring (Redis forgot it, or a dying worker
    popped it) and jobs a dead worker held (their lease ran out).

    Both go to the front of their queues, oldest first: they were accepted before anything that
    waits there now, and a job handed over from a dead worker does not wait behind the backlog
    that built up during its lease. (Pushed to the front newest first, they end up oldest first.)
    """
    now = timezone.now()
    counts = {"requeued": 0, "expired": 0}
    stale = Q(status=JobStatus.QUEUED) | Q(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    for job in model.objects.filter(stale).order_by("-pk"):
        # A dead worker's delivery had the previous attempt's id, so an expired job's is new.
        if enqueue(job, at_front=True):
            counts["expired" if job.status == JobStatus.RUNNING else "requeued"] += 1
    return counts


class LeaseKeeper(threading.Thread):
    """Renews a job's lease in the background; the job polls `check()` at batch boundaries."""

    def __init__(self, job: ClaimableJob, lease_seconds: int):
        super().__init__(daemon=True, name=f"lease-{job.pk}")
        self.job = job
        self.lease_seconds = lease_seconds
        self.stopped = threading.Event()
        self.lost = False
        self.cancel_requested = False

    def run(self) -> None:
        try:
            while not self.stopped.wait(max(self.lease_seconds / 3, 0.2)):
                try:
                    self.cancel_requested = renew_lease(self.job, self.lease_seconds)
                except LeaseLost:
                    self.lost = True
                    return
                except Exception:  # a database blip: try again next tick, the lease still runs
                    logger.warning("lease renewal of job %s failed", self.job.pk, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"job {self.job.pk} lease lost")
        if self.cancel_requested:
            raise JobCanceled("canceled by request")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


class JobRunner:
    """Runs one claimed job from start to a final state. Subclasses implement `run()`."""

    model: ClassVar[type[ClaimableJob]]

    def __init__(self, job: ClaimableJob, keeper: LeaseKeeper):
        self.job = job
        self.keeper = keeper

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def claims(cls) -> Q:
        """Which rows of `model` this runner runs; `execute` claims no other (by default: all)."""
        return Q()

    def check(self) -> None:
        """Call at batch boundaries: raises when the lease is lost, cancel was requested or the
        worker is shutting down."""
        self.keeper.check()
        if worker_stop_requested():
            raise WorkerStopping(f"job {self.job.pk}: worker {self.job.lease_owner} is stopping")

    def on_finish(self, status: str) -> None:
        """Hook for subclasses (final progress event)."""

    def final_fields(self) -> dict[str, Any]:
        """Extra fields written with the final state (counters)."""
        return {}

    @classmethod
    def default_lease_seconds(cls) -> int:
        """Lease of this kind of job; a short one makes cancellation noticed sooner (renewed at 1/3)."""
        return settings.KB_JOB_LEASE_SECONDS

    @classmethod
    def execute(cls, pk: int, owner: str | None = None, lease_seconds: int | None = None) -> str | None:
        """rq entry point body: claim, run, finish. Returns the final status, or None if not claimed.

        Everything logged meanwhile carries `job_id` ("ingestion.ingestionjob:12"); the run's
        duration is observed in kb_job_duration_seconds by kind and the status it ended in.
        """
        kind = cls.model._meta.label_lower
        with job_context(f"{kind}:{pk}"):
            lease_seconds = lease_seconds or cls.default_lease_seconds()
            job = claim(cls.model, pk, owner or worker_identity(), lease_seconds, only=cls.claims())
            if job is None:
                return None
            started = time.perf_counter()
            keeper = LeaseKeeper(job, lease_seconds)
            keeper.start()
            runner = cls(job, keeper)
            try:
                status = runner._run_to_end()
            finally:
                keeper.stop()
            metrics.observe_job(kind, status, time.perf_counter() - started)
            runner.on_finish(status)
            return status

    def _run_to_end(self) -> str:
        job = self.job
        try:
            self.run()
        except LeaseLost:
            logger.warning("job %s: lease lost, stopping without a final write", job.pk)
            return JobStatus.RUNNING
        except JobCanceled as exc:
            _finish_fields(job, JobStatus.CANCELED, str(exc), **self.final_fields())
            return JobStatus.CANCELED
        except WorkerStopping:
            # Work up to the last batch boundary is saved; another worker picks the job up now.
            logger.info("job %s: worker stopping, job released at a batch boundary", job.pk)
            release(job)
            return JobStatus.QUEUED
        except (SystemExit, KeyboardInterrupt):
            # Cold shutdown (a second SIGTERM) mid-batch: still hand the job on without the lease wait.
            release(job)
            raise
        except TransientError as exc:
            logger.warning("job %s: transient error, attempt %s: %s", job.pk, job.attempts, exc)
            return schedule_retry(job, str(exc))
        except (OperationalError, InterfaceError) as exc:
            # PostgreSQL went away mid-job: never a reason to fail the job for good. Retry once it
            # answers again; while it does not, this raises too and the lease expires (sweeper).
            logger.warning("job %s: database error, attempt %s: %s", job.pk, job.attempts, exc)
            close_old_connections()
            return schedule_retry(job, f"database unavailable: {exc}")
        except Exception as exc:
            logger.exception("job %s failed", job.pk)
            _finish_fields(job, JobStatus.FAILED, f"{type(exc).__name__}: {exc}", **self.final_fields())
            return JobStatus.FAILED
        status, error = self.outcome()
        _finish_fields(job, status, error, **self.final_fields())
        return status

    def outcome(self) -> tuple[str, str]:
        """Final status and error once `run()` returned; subclasses refine it."""
        return JobStatus.SUCCEEDED, ""
