"""What every ingestion job runner shares: the `IngestionJobRunner` base on the claim machinery.

Each job kind has its runner: the sync in `ingestion.pipeline`, the deletes in
`ingestion.deleting`; `ingestion.tasks.run_ingestion_job` picks it by the job's kind. A runner
claims only jobs of its own kind, so a job can never run in another kind's runner. The base
saves and publishes progress, writes the counters with the final state and publishes that state.
"""

from __future__ import annotations

from typing import ClassVar

from django.db.models import Q
from django.utils import timezone

from ingestion.models import IngestionJob, Stage
from ingestion.services import job_groups, job_state
from kbportal.claiming import JobRunner
from kbportal.progress import ProgressThrottle
from knowledge.embedders import EmbeddingUnavailable
from knowledge.storage import StorageError
from search.client import SearchUnavailable

#: Failures of the services a job writes to, worth a retry (`kbportal.claiming.TransientError`).
TRANSIENT = (StorageError, SearchUnavailable, EmbeddingUnavailable)


class IngestionJobRunner(JobRunner):
    """Runs one claimed ingestion job of kind `kind`; subclasses implement `run()`."""

    model = IngestionJob
    job: IngestionJob
    #: The `JobKind` this runner runs.
    kind: ClassVar[str]

    def __init__(self, job, keeper):
        super().__init__(job, keeper)
        self.progress = ProgressThrottle(job_groups(job))

    @classmethod
    def claims(cls) -> Q:
        return Q(kind=cls.kind)

    def final_fields(self) -> dict:
        job = self.job
        return {
            "stage": Stage.DONE,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "skipped": job.skipped,
            "recent_errors": job.recent_errors[-20:],
            "payload": job.payload,
        }

    def on_finish(self, status: str) -> None:
        job = IngestionJob.objects.select_related("kb").get(pk=self.job.pk)
        self.record_outcome(job)
        self.progress.publish(job_state(job), final=True)

    def record_outcome(self, job: IngestionJob) -> None:
        """What the job leaves beside its own row once it stopped (`job`: the row as written)."""

    def set_stage(self, stage: str) -> None:
        self.job.stage = stage
        self.save_progress()

    def save_progress(self) -> None:
        job = self.job
        IngestionJob.objects.filter(pk=job.pk, lease_owner=job.lease_owner).update(
            stage=job.stage,
            total=job.total,
            done=job.done,
            failed=job.failed,
            skipped=job.skipped,
            recent_errors=job.recent_errors[-20:],
            payload=job.payload,
            updated_at=timezone.now(),
        )
        self.progress.publish(job_state(job))
