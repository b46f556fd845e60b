"""rq entry points. Each body is gated on its PostgreSQL row (see kbportal.claiming)."""

from kbportal.claiming import sweep


def run_ingestion_job(job_id: int) -> str | None:
    from ingestion.pipeline import IngestionRunner

    return IngestionRunner.execute(job_id)


def sweep_jobs() -> dict:
    """Re-enqueue jobs Redis forgot and jobs whose worker died (run by the cron scheduler)."""
    from ingestion.models import IngestionJob

    return sweep(IngestionJob)
