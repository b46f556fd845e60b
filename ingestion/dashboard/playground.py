"""The search playground: one query against a knowledge base in every mode, side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from rest_framework.exceptions import APIException

from knowledge.models import KnowledgeBase
from search.query import MODES
from search.services import search_knowledge


@dataclass
class ModeResult:
    mode: str
    hits: list[dict] = field(default_factory=list)
    total: int = 0
    #: The search server's round trip, and the whole call (embedding included), in milliseconds.
    search_ms: float | None = None
    wall_ms: float = 0.0
    degraded: bool = False
    error: str = ""


def run_query(kb: KnowledgeBase, query: str, mode: str, size: int) -> dict:
    """The one place the playground calls search. The result cache is bypassed: the timings
    compared side by side are those of real searches."""
    return search_knowledge(kb_slugs=[kb.slug], query=query, mode=mode, size=size, use_cache=False)


def compare_modes(kb: KnowledgeBase, query: str, size: int = 5) -> list[ModeResult]:
    """Run `query` in each mode; a failing mode reports its error without hiding the others."""
    results = []
    for mode in MODES:
        started = time.perf_counter()
        result = ModeResult(mode=mode)
        try:
            found = run_query(kb, query, mode, size)
        except ValidationError as exc:
            result.error = " ".join(exc.messages)
        except APIException as exc:  # search server down with nothing cached, or a refused query
            result.error = str(exc.detail)
        else:
            result.hits, result.total = found["hits"], found["total"]
            result.search_ms, result.degraded = found.get("search_ms"), found.get("degraded", False)
        result.wall_ms = round((time.perf_counter() - started) * 1000, 1)
        results.append(result)
    return results
