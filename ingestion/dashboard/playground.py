"""The search playground: one query against a knowledge base in every mode, side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from knowledge.models import KnowledgeBase
from search.client import SearchError, SearchUnavailable
from search.embedders import EmbeddingError, EmbeddingUnavailable, get_embedder
from search.query import MODES, SearchHit, SearchRequest, search


@dataclass
class ModeResult:
    mode: str
    hits: list[SearchHit] = field(default_factory=list)
    total: int = 0
    #: Time the search server reported for the round trip, and the whole call including embedding.
    took_ms: float | None = None
    wall_ms: float = 0.0
    error: str = ""


def run_query(kb: KnowledgeBase, query: str, mode: str, size: int):
    """The one place the playground calls search (switch to a search service here)."""
    vector = None if mode == "keyword" else get_embedder(kb.embedder).embed([query])[0]
    return search(SearchRequest(query=query, kbs=[kb.slug], mode=mode, size=size), vector)


def compare_modes(kb: KnowledgeBase, query: str, size: int = 5) -> list[ModeResult]:
    """Run `query` in each mode; a failing mode reports its error without hiding the others."""
    results = []
    for mode in MODES:
        started = time.perf_counter()
        result = ModeResult(mode=mode)
        try:
            found = run_query(kb, query, mode, size)
            result.hits, result.total, result.took_ms = found.hits, found.total, found.took_ms
        except (SearchUnavailable, EmbeddingUnavailable) as exc:
            result.error = f"Unavailable, try again shortly: {exc}"[:300]
        except (SearchError, EmbeddingError, ValueError) as exc:
            result.error = str(exc)[:300]
        result.wall_ms = round((time.perf_counter() - started) * 1000, 1)
        results.append(result)
    return results
