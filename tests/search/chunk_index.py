"""Test support for the search engine tests: a throw-away alias per module, hand-made vectors, chunks."""

import math
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.test import override_settings

from search.client import get_client
from search.indexer import forget_ensured


def drop_versions(alias: str) -> None:
    """Delete `<alias>-v*` by name (real clusters refuse wildcard deletes by default)."""
    client = get_client()
    names = list(client.indices.get(index=f"{alias}-v*", allow_no_indices=True, ignore_unavailable=True))
    if names:
        client.indices.delete(index=",".join(names))


@contextmanager
def temporary_alias(suffix: str) -> Iterator[str]:
    """Point KB_ES_INDEX at `<test alias>_<suffix>` and drop its indices before and after."""
    alias = f"{settings.KB_ES_INDEX}_{suffix}"
    with override_settings(KB_ES_INDEX=alias):
        drop_versions(alias)
        forget_ensured()
        try:
            yield alias
        finally:
            drop_versions(alias)
            forget_ensured()


def vector(*components: float, dims: int = 8) -> list[float]:
    """A unit vector from its first components (the rest are zero)."""
    values = list(components) + [0.0] * (dims - len(components))
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def chunk(document: int, position: int = 0, *, kb: str = "kb-a", source: int = 1, content: str = "text",
          title: str = "Title", tags: list[str] | None = None, created: str = "2024-01-15T00:00:00Z",
          embedding: list[float] | None = None) -> dict:
    return {
        "kb": kb,
        "source": source,
        "document": document,
        "tags": tags or [],
        "title": title,
        "content": content,
        "position": position,
        "created": created,
        "embedding": embedding or vector(1.0),
        "url": f"https://example.test/{document}",
        "key": f"doc-{document}",
    }
