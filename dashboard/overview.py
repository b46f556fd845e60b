"""Reads behind the dashboard: knowledge base totals, job and queue figures, component health."""

from __future__ import annotations

import logging

import django_rq
from django.conf import settings
from django.db.models import Count, QuerySet, Sum
from rq import Worker

from ingestion.models import IngestionJob
from kbportal.claiming import JobStatus
from kbportal.health import run_checks
from knowledge.models import KnowledgeBase
from search.services import search_breaker

logger = logging.getLogger(__name__)

def kb_summaries() -> QuerySet[KnowledgeBase]:
    """Knowledge bases with `documents` and `chunks` (sum of their chunk counts)."""
    return KnowledgeBase.objects.annotate(
        documents=Count("sources__documents"),
        chunks=Sum("sources__documents__chunk_count", default=0),
    ).order_by("slug")


def job_counts() -> dict[str, int]:
    """Number of ingestion jobs in each status (every status present, zero when none)."""
    counts = dict.fromkeys(JobStatus.values, 0)
    for row in IngestionJob.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def queue_stats() -> dict:
    """Workers and queue depths as rq sees them; `error` is set when Redis cannot be read."""
    try:
        connection = django_rq.get_connection("default")
        return {
            "workers": len(Worker.all(connection=connection)),
            "queues": {name: django_rq.get_queue(name).count for name in settings.RQ_QUEUES},
            "error": "",
        }
    except Exception as exc:  # the overview must render while Redis is down
        logger.warning("queue stats unavailable: %s", exc)
        return {"workers": None, "queues": {}, "error": f"{type(exc).__name__}: {exc}"[:200]}


def breaker_states() -> list[dict]:
    """States of the circuit breakers around backing services (shared by every process through Redis)."""
    return [search_breaker().state()]


def system_status() -> dict:
    """Component checks (as /health/ready reports them) and circuit breaker states."""
    return {"components": run_checks(), "breakers": breaker_states()}


def kb_live_jobs(kb: KnowledgeBase, recent: int = 20) -> list[IngestionJob]:
    """Every queued or running job of `kb`, then its most recent others, newest first."""
    jobs = IngestionJob.objects.select_related("kb", "source").filter(kb=kb)
    active = list(jobs.filter(status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).order_by("-created_at"))
    others = list(jobs.exclude(pk__in=[job.pk for job in active]).order_by("-created_at")[:recent])
    return sorted(active + others, key=lambda job: job.created_at, reverse=True)
