"""Answer tasks: a question asked of a knowledge base, answered by a worker on the `answers` queue.

An `AnswerTask` is a claimable job (kbportal.claiming): the same claim, lease, retry, cancel and
sweeper guarantees as ingestion jobs, through the same code. `fingerprint` + `kb_generation`
identify "the same question on the same content", so a repeated question is answered from the
stored answer until the knowledge base changes (its generation moves) or the answer expires.
"""

from django.conf import settings
from django.db import models

from kbportal.claiming import ClaimableJob
from knowledge.models import ApiKey, KnowledgeBase


class AnswerTask(ClaimableJob):
    """A question asked of a knowledge base, with its answer and citations once a worker wrote them."""

    kb = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="answer_tasks")
    question = models.TextField()
    mode = models.CharField(max_length=16, default="hybrid")
    passages = models.PositiveSmallIntegerField(default=6)
    requester_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="answer_tasks"
    )
    requester_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="answer_tasks"
    )
    #: Digest of the normalised question, mode, passages, generator and model.
    fingerprint = models.CharField(max_length=64, db_index=True)
    #: The knowledge base's generation the answer was (or will be) computed on.
    kb_generation = models.PositiveBigIntegerField(default=0)
    generator = models.CharField(max_length=32)
    model = models.CharField(max_length=200, blank=True, default="")
    answer = models.TextField(blank=True, default="")
    citations = models.JSONField(default=list, blank=True)
    retrieval_ms = models.FloatField(null=True, blank=True)
    generation_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    #: Set when this answer was copied from an earlier identical question instead of generated.
    reused_from = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    expires_at = models.DateTimeField(db_index=True)

    rq_function = "search.asking.tasks.run_answer_task"
    fixed_queue = "answers"

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"], name="answer_status_lease"),
            models.Index(fields=["kb", "fingerprint", "kb_generation"], name="answer_reuse"),
        ]

    def __str__(self) -> str:
        return f"answer {self.pk} ({self.status})"
