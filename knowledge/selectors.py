"""Reads of knowledge bases' sources and documents."""

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet

from knowledge.models import ApiKey, Document, DocumentStatus, KnowledgeBase, Source


def key_grant_table() -> tuple[str, str, str]:
    """The table granting API keys their knowledge bases, with its key and knowledge-base columns.

    For the plain-SQL reads on the request path (authentication, search), which join it by name.
    """
    through = ApiKey.knowledge_bases.through._meta
    return through.db_table, through.get_field("apikey").column, through.get_field("knowledgebase").column


def source_list(*, kb: KnowledgeBase) -> QuerySet[Source]:
    return Source.objects.filter(kb=kb).order_by("id")


def document_list(*, kb: KnowledgeBase, filters: dict[str, Any] | None = None) -> QuerySet[Document]:
    """Documents of `kb`, optionally filtered.

    filters: `status` (a DocumentStatus value), `source` (a source id of this kb), `q` (text
    matched case-insensitively against title and key). Empty values are ignored; bad ones raise
    ValidationError so the API can answer 400.
    """
    filters = filters or {}
    documents = Document.objects.filter(source__kb=kb).select_related("source").order_by("id")
    status = filters.get("status")
    if status:
        if status not in DocumentStatus.values:
            raise ValidationError({"status": f"Choose among {', '.join(DocumentStatus.values)}."})
        documents = documents.filter(status=status)
    source = filters.get("source")
    if source not in (None, ""):
        try:
            documents = documents.filter(source_id=int(source))
        except (TypeError, ValueError):
            raise ValidationError({"source": "Must be a source id."})
    q = (filters.get("q") or "").strip()
    if q:
        documents = documents.filter(Q(title__icontains=q) | Q(key__icontains=q))
    return documents
