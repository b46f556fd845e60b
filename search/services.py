"""The search service the search API, the `search` command, the dashboard and answering share.

`plan_search` resolves a request against its knowledge bases: it reads them (unknown ->
`UnknownKnowledgeBase`, not granted to the API key -> `NotAllowed`) with their generation,
embedder and language - from the key's grants, read with the key itself (knowledge.authentication),
or with one query - and normalises the request, which from then on names knowledge bases by id, as
the index does. `run_search` runs a plan: the query vector comes from the embedding cache or the
knowledge base's embedder, and `search.query.search` runs through the "search" circuit breaker (one
`_msearch` round trip). An open breaker or a failing search server raises `SearchDown`, a query
the server rejects `SearchRefused`. `search_knowledge` plans and runs in one call.

The arguments are valid values: the API and the `search` command validate them once, with
`search.api.SearchInput`. Nothing here caches results: the API caches the bodies it answers with
(`search.api.search_response`), so that a cache hit serialises nothing.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any

from django.conf import settings

from kbportal.breaker import OPEN, CircuitBreaker, CircuitOpen, shared_breaker
from kbportal.health import ComponentDown
from kbportal.metrics import embedding_timer
from knowledge.embedders import get_embedder
from knowledge.errors import NotAllowed
from knowledge.models import ApiKey
from knowledge.selectors import KbState, knowledge_base_states
from search import cache
from search.client import SearchError, SearchUnavailable, failure_in_words
from search.errors import MixedEmbedders, SearchDown, SearchRefused
from search.index import health_check
from search.query import SearchHit, SearchRequest, search

#: Retry-After (seconds) of a 503 when a search failed but the breaker is still closed.
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class SearchPlan:
    """A request resolved against its knowledge bases (`kbs`, in the order of their sorted slugs)."""

    request: SearchRequest
    kbs: list[KbState]
    #: The embedder of the query vector; empty in keyword mode, which needs none.
    embedder: str
    #: The request and embedder as one digest: equal plans on equal generations find the same hits.
    fingerprint: str
    #: When the search began (`time.perf_counter()`), for `took_ms`.
    started: float

    @property
    def generations(self) -> list[int]:
        return [kb.generation for kb in self.kbs]

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


@dataclass(frozen=True)
class SearchAnswer:
    """A page of hits, each naming its knowledge base by slug.

    `total` hits are available to page through ("gte": at least that many); `search_ms` is the
    search server's round trip, `took_ms` the whole search from its plan on.
    """

    hits: list[SearchHit]
    total: int
    total_relation: str
    mode: str
    page: int
    size: int
    search_ms: float
    took_ms: float


# --- the breaker ---------------------------------------------------------------------------------

def search_breaker() -> CircuitBreaker:
    """The process's breaker around search-server calls; its state is shared through Redis."""
    return shared_breaker(
        "search",
        failure_exceptions=(SearchUnavailable,),
        call_seconds=settings.KB_ES_TIMEOUT,
        describe_failure=failure_in_words,
    )


def search_health() -> dict:
    """Readiness check "search", with the breaker's state.

    Down while searches fail: the breaker is open, or the latest searches failed (its failing
    period), with the reason in words and how long it has lasted. The server answering a health
    check is not enough, since it can answer one while every search times out. Otherwise the server
    must answer a health check within KB_HEALTH_TIMEOUT and the cluster must not be red.
    """
    breaker = search_breaker()
    state, failure = breaker.state(), breaker.failure()
    if failure is not None:
        failing_for = _duration_in_words(failure.seconds)
        raise ComponentDown(
            f"failing: {failure.reason}, for {failing_for} (breaker {state['state']})",
            reason=failure.reason,
            failing_since=datetime.fromtimestamp(failure.since, UTC).isoformat(timespec="seconds"),
            failing_seconds=round(failure.seconds, 1),
            failing_for=failing_for,
            breaker=state,
        )
    try:
        details = health_check()
    except SearchUnavailable as exc:
        reason = failure_in_words(exc, timeout=settings.KB_HEALTH_TIMEOUT)
        raise ComponentDown(f"failing: {reason} (breaker {state['state']})", reason=reason, breaker=state) from exc
    return {**details, "breaker": state}


def _duration_in_words(seconds: float) -> str:
    if seconds < 60:
        return f"{round(seconds)} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


# --- the service ---------------------------------------------------------------------------------


def plan_search(
    *,
    kb_slugs: Sequence[str],
    query: str,
    mode: str = "hybrid",
    sources: Sequence[int] = (),
    tags: Sequence[str] = (),
    date_from: date | None = None,
    date_to: date | None = None,
    page: int = 1,
    size: int = 10,
    highlight: bool = True,
    collapse: bool = True,
    api_key: ApiKey | None = None,
    kb_states: list[KbState] | None = None,
) -> SearchPlan:
    """The request resolved against the named knowledge bases, normalised (query text, sorted and
    de-duplicated lists, `date_to` to the end of its day).

    `api_key`: when given, every knowledge base must be granted to it; staff and in-process
    callers pass None. `kb_states`: the knowledge bases of `kb_slugs` as a staff caller already
    read them (`knowledge_base_states`), so that a search run in a thread of its own does not touch
    the database. Raises UnknownKnowledgeBase, NotAllowed (also when there is no knowledge base to
    search) and MixedEmbedders.
    """
    started = time.perf_counter()
    slugs = sorted(set(kb_slugs))
    if not slugs:
        raise NotAllowed("No knowledge base to search.")
    kbs = kb_states if kb_states is not None else knowledge_base_states(slugs, api_key=api_key)
    request = SearchRequest(
        query=cache.normalise_query(query),
        # A slug can be reused after a delete, an id never is (and so neither is a cache key built from ids).
        kbs=[str(kb.id) for kb in kbs],
        mode=mode,
        sources=sorted({str(source) for source in sources}),
        tags=sorted(set(tags)),
        date_from=date_from,
        date_to=_end_of_day(date_to),
        page=page,
        size=size,
        highlight=highlight,
        collapse=collapse,
        languages={str(kb.id): kb.language for kb in kbs},
    )
    embedder = _embedder_of(kbs) if mode != "keyword" else ""
    # vars(), not asdict(): the fields are plain values and lists, and asdict deep-copies them all.
    fingerprint = cache.fingerprint({**vars(request), "embedder": embedder})
    return SearchPlan(request=request, kbs=kbs, embedder=embedder, fingerprint=fingerprint, started=started)


def run_search(plan: SearchPlan, *, vector: list[float] | None = None) -> SearchAnswer:
    """The page of hits the plan asks for. `vector`: the query's embedding when the caller already
    has it; otherwise it comes from the embedding cache or the embedder.

    Raises SearchDown (breaker open, or the search server failing) and SearchRefused.
    """
    breaker = search_breaker()
    try:
        if plan.embedder and vector is None:
            vector = cache.get_embedding(plan.embedder, plan.request.query)
        if plan.embedder and vector is None:
            # Embedding can take milliseconds (MiniLM): do not spend them when the search cannot run.
            state = breaker.state()
            if state["state"] == OPEN:
                raise CircuitOpen(breaker.name, state["retry_after"])
            vector = embed_query(plan.embedder, plan.request.query)
        result = breaker.call(search, plan.request, vector)
    except CircuitOpen as exc:
        raise SearchDown("circuit open", retry_after=exc.retry_after) from exc
    except SearchUnavailable as exc:
        raise SearchDown("search server failing", retry_after=RETRY_AFTER_SECONDS) from exc
    except SearchError as exc:
        raise SearchRefused(str(exc)[:300]) from exc
    slugs = {str(kb.id): kb.slug for kb in plan.kbs}  # the index knows a knowledge base by its id
    return SearchAnswer(
        hits=[replace(hit, kb=slugs[hit.kb]) for hit in result.hits],
        total=result.total,
        total_relation=result.total_relation,
        mode=result.mode,
        page=result.page,
        size=result.size,
        search_ms=result.took_ms,
        took_ms=plan.elapsed_ms(),
    )


def search_knowledge(**arguments: Any) -> SearchAnswer:
    """Plan (`plan_search`'s keyword arguments) and run a search at once, for callers that keep no
    result cache: answering, the dashboard's playground."""
    return run_search(plan_search(**arguments))


def query_vector(embedder_name: str, text: str) -> list[float]:
    """The query's embedding, from the embedding cache or computed (and cached)."""
    vector = cache.get_embedding(embedder_name, text)
    return vector if vector is not None else embed_query(embedder_name, text)


def embed_query(embedder_name: str, text: str) -> list[float]:
    """The query's embedding computed by the embedder, and cached."""
    with embedding_timer(embedder_name, "query", 1):
        vector = get_embedder(embedder_name).embed([text])[0]
    cache.store_embedding(embedder_name, text, vector)
    return vector


def _end_of_day(value: date | None) -> date | str | None:
    """`date_to` is inclusive: a bare date means up to the end of that day."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, dtime.max).isoformat(timespec="milliseconds") + "Z"
    return value


def _embedder_of(kbs: list[KbState]) -> str:
    embedders = {kb.embedder for kb in kbs}
    if len(embedders) > 1:
        raise MixedEmbedders()
    return embedders.pop()
