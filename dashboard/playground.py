"""The search playground: one query against a knowledge base in every mode at once, side by side."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kbportal.errors import DomainError
from knowledge.errors import UnknownKnowledgeBase
from knowledge.models import KnowledgeBase
from knowledge.selectors import KbState, knowledge_base_states
from search.query import MODES, SearchHit
from search.services import search_knowledge


@dataclass
class ModeResult:
    mode: str
    hits: list[SearchHit] = field(default_factory=list)
    total: int = 0
    #: The search server's round trip, and the whole call (embedding included), in milliseconds.
    search_ms: float | None = None
    wall_ms: float = 0.0
    error: str = ""


def run_mode(kb_state: KbState, query: str, mode: str, size: int) -> ModeResult:
    """One mode's search; its failure is reported in the result. The search service keeps no result
    cache, so the timings compared side by side are those of real searches."""
    started = time.perf_counter()
    result = ModeResult(mode=mode)
    try:
        found = search_knowledge(kb_slugs=[kb_state.slug], query=query, mode=mode, size=size, kb_states=[kb_state])
    except DomainError as exc:  # search server down, or a refused query
        result.error = exc.detail
    else:
        result.hits, result.total, result.search_ms = found.hits, found.total, found.search_ms
    result.wall_ms = round((time.perf_counter() - started) * 1000, 1)
    return result


def compare_modes(kb: KnowledgeBase, query: str, size: int = 5) -> list[ModeResult]:
    """Run `query` in every mode at once, one thread each; a failing mode does not hide the others.

    The knowledge base is read here, in the request's thread, and handed to the searches: the
    threads then use only the search server, the cache and the embedder, never the database, so
    they open no database connections of their own.
    """
    try:
        [kb_state] = knowledge_base_states([kb.slug])
    except UnknownKnowledgeBase as exc:  # deleted since the form read it
        return [ModeResult(mode=mode, error=exc.detail) for mode in MODES]
    with ThreadPoolExecutor(max_workers=len(MODES), thread_name_prefix="playground") as pool:
        return list(pool.map(lambda mode: run_mode(kb_state, query, mode, size), MODES))
