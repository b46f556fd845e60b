"""rq entry points, each body gated on its PostgreSQL row (see kbportal.claiming), and the job sweep
the scheduler runs."""

import logging
from datetime import timedelta

from django.utils import timezone

from ingestion.deleting import DeleteDocumentsRunner, DeleteKnowledgeBaseRunner, DeleteSourceRunner
from ingestion.models import IngestionJob, JobKind
from ingestion.pipeline import SyncRunner
from ingestion.services import ACTIVE_STATUSES, source_sync
from kbportal.claiming import Priority, sweep
from knowledge.models import Source, SourceKind
from search.asking.tasks import sweep_answers

logger = logging.getLogger(__name__)

RUNNERS = {
    runner.kind: runner for runner in (SyncRunner, DeleteDocumentsRunner, DeleteSourceRunner, DeleteKnowledgeBaseRunner)
}


def run_ingestion_job(job_id: int) -> str | None:
    """Run the ingestion job with the runner of its kind: its final status, or None when it was
    not claimed (gone, not due, or held by another worker)."""
    kind = IngestionJob.objects.filter(pk=job_id).values_list("kind", flat=True).first()
    if kind is None:
        return None
    return RUNNERS[kind].execute(job_id)


def sweep_jobs() -> dict:
    """Re-enqueue jobs Redis forgot and jobs whose worker died (the scheduler runs it every
    KB_SWEEP_INTERVAL seconds, in its own process).

    Covers ingestion jobs and answer tasks; the counts are summed over both.
    """
    counts = sweep(IngestionJob)
    for name, count in sweep_answers().items():
        counts[name] = counts.get(name, 0) + count
    if any(counts.values()):
        logger.info("sweep: requeued %(requeued)d queued job(s), handed on %(expired)d expired lease(s)", counts)
    return counts


def enqueue_due_syncs() -> list[int]:
    """Queue a low-priority sync of every enabled url source whose schedule is due (run by cron).

    Due: `schedule_hours` is set and the source was never synced or last synced longer ago than
    that. A source with a sync queued or running gets no second one (`job_create` returns the
    active job), so a slow crawl is never doubled by the scheduler. Returns the queued jobs' ids.
    """
    now = timezone.now()
    created = []
    for source in Source.objects.filter(kind=SourceKind.URL, enabled=True).select_related("kb"):
        hours = source.config.get("schedule_hours")
        if not hours:
            continue
        if source.last_synced_at and now - source.last_synced_at < timedelta(hours=float(hours)):
            continue
        active = IngestionJob.objects.filter(source=source, kind=JobKind.SYNC, status__in=ACTIVE_STATUSES)
        if active.exists():
            continue
        created.append(source_sync(source=source, priority=Priority.LOW).pk)
    return created
