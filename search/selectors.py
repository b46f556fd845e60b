"""Reads for searching: which knowledge bases a search covers when it names none."""

from knowledge.models import ApiKey, KnowledgeBase


def searchable_kb_slugs(*, api_key: ApiKey | None) -> list[str]:
    """Slugs of the knowledge bases `api_key` may search, sorted; every one for staff and in-process
    callers (`api_key` None).

    A key authenticated in this request brings its grants along (`granted`, read with the key by
    knowledge.authentication), so no query is needed for it.
    """
    if api_key is None:
        return sorted(KnowledgeBase.objects.values_list("slug", flat=True))
    granted = getattr(api_key, "granted", None)
    if granted is not None:
        return sorted(granted)
    return sorted(api_key.knowledge_bases.values_list("slug", flat=True))
