"""Writes to knowledge bases, sources, API keys and stored bytes. Keyword-only, validated, one transaction each."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from knowledge.embedders import embedder_dimensions
from knowledge.models import ApiKey, Document, KnowledgeBase, Language, Source, SourceKind, hash_secret
from knowledge.storage import ObjectNotFound, get_object_store

#: A knowledge base's slug, as the forms, the API and `createkb` document it.
KB_SLUG = re.compile(r"[a-z0-9-]+")
KB_SLUG_HELP = "Lowercase letters, digits and hyphens; used in URLs and the API."


def kb_slug_error(slug: str) -> str:
    """What is wrong with a knowledge-base slug, in words; "" when nothing is."""
    if KB_SLUG.fullmatch(slug or ""):
        return ""
    if KB_SLUG.fullmatch((slug or "").lower()):
        return f"Use lowercase letters: “{slug.lower()}”, not “{slug}”."
    return "Use only lowercase letters, digits and hyphens (such as “team-docs”)."


@transaction.atomic
def knowledge_base_create(
    *,
    slug: str,
    name: str,
    description: str = "",
    embedder: str | None = None,
    language: str = Language.ENGLISH,
    ocr_languages: str = "",
) -> KnowledgeBase:
    """Create a knowledge base whose vector size is its embedder's (KB_EMBEDDER unless given).

    Raises ValidationError for a bad or taken slug, an unknown embedder, or malformed OCR languages.
    """
    embedder = embedder or settings.KB_EMBEDDER
    try:
        dimensions = embedder_dimensions(embedder)
    except ValueError as exc:
        raise ValidationError({"embedder": str(exc)})
    slug_error = kb_slug_error(slug)
    if slug_error:
        raise ValidationError({"slug": slug_error})
    kb = KnowledgeBase(
        slug=slug,
        name=name,
        description=description,
        embedder=embedder,
        dimensions=dimensions,
        language=language,
        ocr_languages=ocr_languages,
    )
    kb.full_clean()
    kb.save()
    return kb


@transaction.atomic
def source_create(*, kb: KnowledgeBase, kind: str, name: str, config: dict) -> Source:
    """Create a source; `full_clean` normalises `config` for its kind or raises ValidationError."""
    source = Source(kb=kb, kind=kind, name=name, config=config)
    source.full_clean()
    source.save()
    return source


@transaction.atomic
def api_key_create(*, name: str, kb_slugs: list[str], scopes: list[str], rate: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for the given knowledge bases; return it with the full key string.

    The full string is shown once: only its prefix and a hash of the secret are stored.
    `rate` defaults to KB_DEFAULT_KEY_RATE.
    """
    slugs = list(dict.fromkeys(kb_slugs))
    kbs = list(KnowledgeBase.objects.filter(slug__in=slugs))
    unknown = sorted(set(slugs) - {kb.slug for kb in kbs})
    if unknown:
        raise ValidationError({"kb_slugs": f"Unknown knowledge base(s): {', '.join(unknown)}."})
    if not kbs:
        raise ValidationError({"kb_slugs": "Give at least one knowledge base."})
    prefix, secret, full_key = ApiKey.generate()
    key = ApiKey(
        name=name,
        prefix=prefix,
        secret_hash=hash_secret(secret),
        scopes=list(dict.fromkeys(scopes)),
        rate=rate or settings.KB_DEFAULT_KEY_RATE,
    )
    key.full_clean()
    key.save()
    key.knowledge_bases.set(kbs)
    return key, full_key


def api_key_revoke(*, key: ApiKey) -> None:
    """Revoke the key; authentication refuses it from the next request on."""
    ApiKey.objects.filter(pk=key.pk).update(revoked=True)
    key.revoked = True


def remove_unreferenced_objects(*, keys: set[str]) -> int:
    """Delete stored bytes that no document or file source references (any more)."""
    store = get_object_store()
    removed = 0
    for key in filter(None, keys):
        in_documents = Document.objects.filter(object_key=key).exists()
        in_sources = Source.objects.filter(kind=SourceKind.FILE, config__files__contains=[{"object_key": key}]).exists()
        if not in_documents and not in_sources:
            try:
                store.delete(key)
                removed += 1
            except ObjectNotFound:
                pass
    return removed
