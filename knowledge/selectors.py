"""Reads of knowledge bases, their sources and documents, and of what an API key may use."""

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet

from knowledge.errors import NotAllowed, UnknownKnowledgeBase
from knowledge.models import ApiKey, Document, DocumentStatus, KnowledgeBase, Source


@dataclass(frozen=True)
class KbState:
    """What a search needs of a knowledge base: its id (the index's name for it), generation,
    embedder and language."""

    id: int
    slug: str
    generation: int
    embedder: str
    language: str


def knowledge_base_states(kb_slugs: list[str], *, api_key: ApiKey | None = None) -> list[KbState]:
    """The named knowledge bases in the order given.

    UnknownKnowledgeBase for an unknown slug; NotAllowed when `api_key` is given and lacks one of
    them. A key authenticated in this request brings its granted knowledge bases along (`granted`,
    read with the key, knowledge.authentication): when it names only those, no query is needed.
    """
    granted = getattr(api_key, "granted", None)
    if granted is not None and all(slug in granted for slug in kb_slugs):
        return [KbState(kb.id, kb.slug, kb.generation, kb.embedder, kb.language) for kb in map(granted.get, kb_slugs)]
    rows = KnowledgeBase.objects.filter(slug__in=kb_slugs)
    if api_key is not None:
        grants = ApiKey.knowledge_bases.through.objects.filter(apikey_id=api_key.pk, knowledgebase_id=OuterRef("pk"))
        rows = rows.annotate(allowed=Exists(grants))
    found = {row["slug"]: row for row in rows.values()}
    unknown = [slug for slug in kb_slugs if slug not in found]
    if unknown:
        raise UnknownKnowledgeBase(f"No knowledge base {', '.join(map(repr, unknown))}.")
    if api_key is not None:
        refused = [slug for slug in kb_slugs if not found[slug]["allowed"]]
        if refused:
            raise NotAllowed(f"This API key may not search {', '.join(map(repr, refused))}.")
    return [
        KbState(row["id"], row["slug"], row["generation"], row["embedder"], row["language"])
        for row in map(found.get, kb_slugs)
    ]


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
