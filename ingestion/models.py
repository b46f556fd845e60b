"""Ingestion jobs: one row per unit of work, claimed by exactly one worker at a time."""

from django.db import models

from kbportal.claiming import ClaimableJob
from knowledge.models import KnowledgeBase, Source


class JobKind(models.TextChoices):
    SYNC = "sync", "Sync a source"
    DELETE_DOCUMENTS = "delete_documents", "Delete documents"
    DELETE_SOURCE = "delete_source", "Delete a source"
    DELETE_KNOWLEDGE_BASE = "delete_knowledge_base", "Delete a knowledge base"


class Stage(models.TextChoices):
    WAITING = "waiting"
    FETCH = "fetch"
    EXTRACT = "extract"
    OCR = "ocr"
    CHUNK = "chunk"
    EMBED = "embed"
    INDEX = "index"
    CLEANUP = "cleanup"
    DONE = "done"


class IngestionJob(ClaimableJob):
    """A sync or delete of a knowledge base's content, with its progress counters.

    `kb` is empty once the knowledge base is deleted (its jobs stay as history); `payload` then
    still names it (`kb_slug`), as it names a deleted source (`source_name`).
    """

    kind = models.CharField(max_length=32, choices=JobKind.choices, default=JobKind.SYNC)
    kb = models.ForeignKey(KnowledgeBase, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
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

    @property
    def queue_name(self) -> str:
        """`ocr` for a sync whose files may need OCR (`payload["ocr"]`), else the priority's queue."""
        return "ocr" if (self.payload or {}).get("ocr") else self.priority

    @property
    def kb_slug(self) -> str:
        """The knowledge base's slug, also once it is deleted."""
        return self.kb.slug if self.kb_id else (self.payload or {}).get("kb_slug", "")
