"""Ingestion jobs: one row per unit of work, claimed by exactly one worker at a time."""

from django.db import models

from kbportal.claiming import ClaimableJob
from knowledge.models import KnowledgeBase, Source


class JobKind(models.TextChoices):
    SYNC = "sync", "Sync a source"
    DELETE_DOCUMENTS = "delete_documents", "Delete documents"
    DELETE_SOURCE = "delete_source", "Delete a source"


class Stage(models.TextChoices):
    WAITING = "waiting"
    FETCH = "fetch"
    EXTRACT = "extract"
    CHUNK = "chunk"
    EMBED = "embed"
    INDEX = "index"
    CLEANUP = "cleanup"
    DONE = "done"


class IngestionJob(ClaimableJob):
    kind = models.CharField(max_length=32, choices=JobKind.choices, default=JobKind.SYNC)
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="jobs")
    source = models.ForeignKey(Source, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
    payload = models.JSONField(default=dict, blank=True)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.WAITING)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    recent_errors = models.JSONField(default=list, blank=True)

    rq_function = "ingestion.tasks.run_ingestion_job"

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"job {self.pk} ({self.kind} {self.status})"
