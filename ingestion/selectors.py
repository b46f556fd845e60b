"""Reads of ingestion jobs and of what the index holds of a knowledge base."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from ingestion.models import IngestionJob, JobKind
from kbportal.claiming import JobStatus
from knowledge.models import Document, DocumentStatus, KnowledgeBase
from search.indexer import kb_chunk_count


def job_list(
    *, kbs: QuerySet[KnowledgeBase] | None = None, filters: dict[str, Any] | None = None
) -> QuerySet[IngestionJob]:
    """Jobs newest first: of the knowledge bases `kbs`, or every job (deleted knowledge bases' too)
    when `kbs` is None; optionally filtered.

    filters: `kb` (a slug among `kbs`), `status` (a JobStatus value), `kind` (a JobKind value).
    Empty values are ignored; unknown ones raise ValidationError naming the field and what it
    accepts, so a typo is an error rather than an empty list.
    """
    filters = filters or {}
    errors = {}
    jobs = IngestionJob.objects.select_related("kb", "source").order_by("-created_at")
    if kbs is not None:
        jobs = jobs.filter(kb__in=kbs)
    slug = filters.get("kb")
    if slug:
        if not (KnowledgeBase.objects.all() if kbs is None else kbs).filter(slug=slug).exists():
            errors["kb"] = f"No knowledge base {slug!r}."
        jobs = jobs.filter(kb__slug=slug)
    for name, choices in (("status", JobStatus.values), ("kind", JobKind.values)):
        value = filters.get(name)
        if value:
            if value not in choices:
                errors[name] = f"Unknown {name} {value!r}; choose among {', '.join(choices)}."
            jobs = jobs.filter(**{name: value})
    if errors:
        raise ValidationError(errors)
    return jobs


def index_lost(*, kb: KnowledgeBase) -> bool:
    """Whether the rows say documents are indexed while the search index holds none of the knowledge
    base's chunks (a new search node, its data lost): a sync with `reindex` puts them back."""
    indexed = Document.objects.filter(source__kb=kb, status=DocumentStatus.INDEXED)
    return indexed.exists() and kb_chunk_count(kb.pk) == 0
