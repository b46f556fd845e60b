"""The query service the search API, the `search` command and the evaluation share.

`search_knowledge` takes a request from any caller and answers it:

1. the named knowledge bases are read (existence -> 404, the API key's grant -> 403, generation
   and embedder): from the key's grants, read with the key itself (knowledge.authentication), or
   with one query;
2. the result cache is looked up with the normalised request and those generations, together with
   the query's cached embedding (one round trip): a hit returns at once, without touching the
   search server or the embedder;
3. on a miss the query vector comes from the embedding cache or the knowledge base's embedder, and
   `search.query.search` runs through the "search" circuit breaker (one `_msearch` round trip);
4. when the breaker is open or the search server fails, the last good result for the request is
   served with `degraded: true`; with none, `ServiceUnavailable` (503 with Retry-After).
"""

import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from rest_framework.exceptions import APIException, NotFound, PermissionDenied

from kbportal.breaker import OPEN, CircuitBreaker, CircuitOpen, shared_breaker
from kbportal.errors import ServiceUnavailable
from kbportal.health import ComponentDown
from kbportal.metrics import embedding_timer, observe_search
from knowledge.models import ApiKey, KnowledgeBase
from knowledge.selectors import key_grant_table
from search import cache
from search.client import SearchError, SearchUnavailable, failure_in_words
from search.embedders import get_embedder
from search.index import health_check
from search.query import MAX_DEPTH, MAX_SIZE, MODES, SearchRequest, search

MAX_QUERY_CHARS = 1000
#: Retry-After (seconds) of a 503 when a search failed but the breaker is still closed.
RETRY_AFTER_SECONDS = 1


class SearchRefused(APIException):
    """The search server rejected the query (a bug or an unsupported input, not an outage)."""

    status_code = 502
    default_code = "search_refused"
    default_detail = "The search server refused the query."


@dataclass(frozen=True)
class KbState:
    id: int
    slug: str
    generation: int
    embedder: str
    language: str


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


# --- knowledge bases -----------------------------------------------------------------------------


def _states_sql() -> str:
    kb_table = KnowledgeBase._meta.db_table
    grant_table, key_column, kb_column = key_grant_table()
    return (
        f"SELECT kb.id, kb.slug, kb.generation, kb.embedder, kb.language, EXISTS (SELECT 1 FROM {grant_table} g "
        f"WHERE g.{key_column} = %s AND g.{kb_column} = kb.id) "
        f"FROM {kb_table} kb WHERE kb.slug = ANY(%s)"
    )


def knowledge_base_states(kb_slugs: list[str], *, api_key: ApiKey | None = None) -> list[KbState]:
    """The named knowledge bases in the order given.

    NotFound for an unknown slug; PermissionDenied when `api_key` is given and lacks one of them.
    A key authenticated in this request brings its granted knowledge bases along (`granted`, read
    with the key in the same query): when it names only those, no query is needed. Otherwise one
    query, in plain SQL because this runs on every search, cache hits included: the ORM spent more
    time compiling it (with its grant subquery) than PostgreSQL spent answering it.
    """
    granted = getattr(api_key, "granted", None)
    if granted is not None and all(slug in granted for slug in kb_slugs):
        return [KbState(kb.id, kb.slug, kb.generation, kb.embedder, kb.language) for kb in map(granted.get, kb_slugs)]
    with connection.cursor() as cursor:
        cursor.execute(_states_sql(), [api_key.pk if api_key is not None else None, list(kb_slugs)])
        found = {row[1]: row for row in cursor.fetchall()}
    unknown = [slug for slug in kb_slugs if slug not in found]
    if unknown:
        raise NotFound(f"No knowledge base {', '.join(map(repr, unknown))}.")
    if api_key is not None:
        refused = [slug for slug in kb_slugs if not found[slug][5]]
        if refused:
            raise PermissionDenied(f"This API key may not search {', '.join(map(repr, refused))}.")
    return [KbState(*found[slug][:5]) for slug in kb_slugs]


# --- the service ---------------------------------------------------------------------------------


def _end_of_day(value: date | str | None) -> date | str | None:
    """`date_to` is inclusive: a bare date means up to the end of that day."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime.combine(value, dtime.max).isoformat(timespec="milliseconds") + "Z"
    return value


def build_request(
    *,
    kb_slugs: list[str],
    query: str,
    mode: str,
    sources: list[int | str],
    tags: list[str],
    date_from: date | str | None,
    date_to: date | str | None,
    page: int,
    size: int,
    highlight: bool,
    collapse: bool,
    weights: dict[str, float] | None,
) -> SearchRequest:
    """A validated, normalised request (sorted, de-duplicated lists; normalised text)."""
    errors = {}
    text = cache.normalise_query(query or "")
    if not text:
        errors["q"] = "The query must not be empty."
    elif len(text) > MAX_QUERY_CHARS:
        errors["q"] = f"The query may have at most {MAX_QUERY_CHARS} characters."
    if mode not in MODES:
        errors["mode"] = f"Choose one of {', '.join(MODES)}."
    if not 1 <= size <= MAX_SIZE:
        errors["size"] = f"Ensure this value is between 1 and {MAX_SIZE}."
    elif page < 1 or page * size > MAX_DEPTH:
        errors["page"] = f"page must be at least 1 and page * size at most {MAX_DEPTH}."
    if not kb_slugs:
        errors["kb"] = "Name at least one knowledge base."
    if errors:
        raise ValidationError(errors)
    try:
        return SearchRequest(
            query=text,
            kbs=sorted(set(kb_slugs)),
            mode=mode,
            sources=sorted({str(source) for source in sources}),
            tags=sorted(set(tags)),
            date_from=date_from,
            date_to=_end_of_day(date_to),
            page=page,
            size=size,
            highlight=highlight,
            collapse=collapse,
            weights=weights,
        )
    except ValueError as exc:
        raise ValidationError(str(exc))


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


def _embedder_of(kbs: list[KbState]) -> str:
    embedders = {kb.embedder for kb in kbs}
    if len(embedders) > 1:
        # Vectors of different models live in different spaces: one query vector cannot serve both.
        raise ValidationError({"kb": "These knowledge bases use different embedders; search them one at a time "
                                     "or use mode=keyword."})
    return embedders.pop()


def _result_body(result, *, started: float, slugs: dict[str, str]) -> dict:
    """The API's answer; `slugs` names each hit's knowledge base (the index knows only its id)."""
    return {
        "hits": [
            {
                "document_id": hit.document_id,
                "title": hit.title,
                "source_id": hit.source_id,
                "kb": slugs[hit.kb],
                "score": hit.score,
                "snippet": hit.snippet,
                "position": hit.position,
                "chunk_id": hit.chunk_id,
                "url": hit.url,
                "tags": hit.tags,
                "ranks": hit.ranks,
            }
            for hit in result.hits
        ],
        "total": result.total,
        "total_relation": result.total_relation,
        "mode": result.mode,
        "page": result.page,
        "size": result.size,
        "took_ms": _elapsed_ms(started),
        "search_ms": result.took_ms,
        "degraded": False,
        "cache": "miss",
    }


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _fallback(fresh_key: str, good_key: str, *, started: float, retry_after: float, reason: str) -> dict:
    cached = cache.get_result(fresh_key) or cache.get_result(good_key)
    if cached is None:
        raise ServiceUnavailable(
            f"Search is unavailable ({reason}) and this query has no cached answer; retry shortly.",
            retry_after=max(1, math.ceil(retry_after)),
        )
    return {**cached, "took_ms": _elapsed_ms(started), "degraded": True, "cache": "hit"}


@observe_search
def search_knowledge(
    *,
    kb_slugs: list[str],
    query: str,
    mode: str = "hybrid",
    sources: list[int | str] = (),
    tags: list[str] = (),
    date_from: date | str | None = None,
    date_to: date | str | None = None,
    page: int = 1,
    size: int = 10,
    highlight: bool = True,
    collapse: bool = True,
    weights: dict[str, float] | None = None,
    api_key: ApiKey | None = None,
    use_cache: bool = True,
    kb_states: list[KbState] | None = None,
) -> dict:
    """Search knowledge bases; the answer as the API returns it.

    `api_key`: when given, every knowledge base must be granted to it (PermissionDenied otherwise);
    staff and in-process callers pass None. `kb_states`: the knowledge bases of `kb_slugs` as a
    staff caller already read them (`knowledge_base_states`), so that a search run in a thread of its
    own does not touch the database; no key is checked then. Raises ValidationError (bad input), NotFound (unknown
    knowledge base), ServiceUnavailable (search server down and nothing cached), SearchRefused.
    `took_ms` is this call's time; `search_ms` the search itself when it ran (or when cached, ran).
    """
    started = time.perf_counter()
    request = build_request(
        kb_slugs=list(kb_slugs), query=query, mode=mode, sources=list(sources), tags=list(tags),
        date_from=date_from, date_to=date_to, page=page, size=size, highlight=highlight,
        collapse=collapse, weights=weights,
    )
    kbs = kb_states if kb_states is not None else knowledge_base_states(request.kbs, api_key=api_key)
    # From here on the request names knowledge bases by id, as the index does: a slug can be
    # reused after a delete, an id never is (and so neither is a cache key built from ids).
    request.kbs = [str(kb.id) for kb in kbs]
    request.languages = {str(kb.id): kb.language for kb in kbs}
    embedder = _embedder_of(kbs) if mode != "keyword" else ""
    # vars(), not asdict(): the fields are plain values and lists, and asdict deep-copies them all.
    request_fingerprint = cache.fingerprint({**vars(request), "embedder": embedder})
    fresh_key, good_key = cache.result_keys(request_fingerprint, [kb.generation for kb in kbs])
    # One round trip for both: on a miss the query's cached embedding is already at hand.
    cached, vector = cache.lookup(fresh_key if use_cache else None, embedder, request.query)
    if cached is not None:
        return {**cached, "took_ms": _elapsed_ms(started), "cache": "hit"}

    breaker = search_breaker()
    try:
        if embedder and vector is None:
            # Embedding can take milliseconds (MiniLM): do not spend them when the search cannot run.
            state = breaker.state()
            if state["state"] == OPEN:
                raise CircuitOpen(breaker.name, state["retry_after"])
            vector = embed_query(embedder, request.query)
        result = breaker.call(search, request, vector)
    except CircuitOpen as exc:
        return _fallback(fresh_key, good_key, started=started, retry_after=exc.retry_after, reason="circuit open")
    except SearchUnavailable:
        return _fallback(fresh_key, good_key, started=started, retry_after=RETRY_AFTER_SECONDS,
                         reason="search server failing")
    except SearchError as exc:
        raise SearchRefused(str(exc)[:300])
    body = _result_body(result, started=started, slugs={str(kb.id): kb.slug for kb in kbs})
    if use_cache:
        cache.store_result(fresh_key, good_key, body)
    return body
