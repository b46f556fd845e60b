"""Hybrid search: BM25 and kNN in one `_msearch` round trip, fused by reciprocal rank fusion.

The caller computes the query vector (so the API can cache embeddings) and passes it in. Modes:
`hybrid` sends both bodies and fuses them; `keyword` sends only BM25; `semantic` sends only kNN.
Both bodies carry the same filters (knowledge bases always, sources, tags, created date range), so
a kNN hit can never come from outside what the BM25 side may see. The bodies are built with the
Elasticsearch DSL (`Search`, `Q`, `MultiSearch`).

Keyword search matches terms the application made (`search.analysis`, per knowledge-base
language) against the `*_terms` fields; the query text is analysed the same way here. Snippets
are made in the application from the same terms (`search.snippets`).

How deep each side looks: a page needs `page * size` results; one document has several chunks and
collapsing keeps one per document, so each side fetches `window = min(max(3 * page * size, 20), 1000)`
chunks. kNN uses `k = window` and `num_candidates = min(max(2 * k, 100), 10000)` (more candidates
per shard buy recall at a linear cost; 10,000 is Elasticsearch's limit; the factor 2 is
`KB_KNN_CANDIDATES_FACTOR`). The int8 candidates are re-ranked by their float vectors
(`KB_KNN_RESCORE_OVERSAMPLE`, default 3); both measured against exact search by
`manage.py bench_scale`. `page * size` is capped at `MAX_DEPTH`; deeper pages are refused rather
than silently short.

Scoring parameters, tuned with `manage.py evaluate` on CISI with all-MiniLM-L6-v2 (76 judged
queries):

- BM25 is a `cross_fields` multi_match over `title_terms` and `content_terms`: the two fields
  score as one, so a query word counts once whether the title, the text or both have it (stored
  documents usually repeat their title in the text). Against `best_fields` (a chunk scores by its
  better field) it raised keyword nDCG@10 from 0.378 to 0.383 and hybrid from 0.443 to 0.447;
  `most_fields` (the fields' scores added) lowered them to 0.372 and 0.422. The title is not
  boosted (`TITLE_BOOST = 1`): a boost counts title words twice (keyword nDCG@10 0.348 at 1.5).
- Fusion is RRF with k = 60 and default weights keyword 0.5, semantic 1.0 (`DEFAULT_WEIGHTS`): the
  dense ranking is the more reliable one on verbose natural-language queries. Keyword weights of
  0.4-0.7 and k of 40-80 move hybrid nDCG@10 by at most 0.004. A request's `weights` override
  these per ranking.
"""

import math
import time
from dataclasses import dataclass, field
from datetime import date

from django.conf import settings
from elasticsearch import ApiError
from elasticsearch_dsl import MultiSearch, Q, Search
from elasticsearch_dsl.query import Query

from search.analysis import DEFAULT_LANGUAGE, analyze
from search.client import SearchError, SearchUnavailable, get_client, unavailable_on_failure
from search.fusion import rrf
from search.index import alias_name
from search.snippets import snippet

MODES = ("hybrid", "keyword", "semantic")
MAX_QUERY_CHARS = 1000
MAX_SIZE = 100
MAX_DEPTH = 500
MAX_WINDOW = 1000
MAX_CANDIDATES = 10000
MIN_CANDIDATES = 100
TITLE_BOOST = 1
MULTI_MATCH_TYPE = "cross_fields"
RRF_K = 60
DEFAULT_WEIGHTS = {"keyword": 0.5, "semantic": 1.0}
#: What a search reads of a chunk: neither its vector nor its terms.
SOURCE_EXCLUDES = ["embedding", "title_terms", "content_terms"]


@dataclass
class SearchRequest:
    """What to search, as valid values: `mode` one of MODES, at least one knowledge base, `size` at
    most MAX_SIZE and `page * size` at most MAX_DEPTH (`search.api.SearchInput` checks a request)."""

    query: str
    #: The knowledge bases' ids as the index files their chunks (`search.services` maps slugs to them).
    kbs: list[str]
    mode: str = "hybrid"
    sources: list[int | str] = field(default_factory=list)
    #: A chunk matches when it carries any of these tags.
    tags: list[str] = field(default_factory=list)
    date_from: date | str | None = None
    date_to: date | str | None = None
    page: int = 1
    size: int = 10
    highlight: bool = True
    #: One hit per document (its best chunk) instead of one per chunk.
    collapse: bool = True
    #: Weights of the "keyword" and "semantic" rankings in the fusion (defaults: `DEFAULT_WEIGHTS`).
    weights: dict[str, float] | None = None
    #: Language of each knowledge base's text by id (`search.analysis`); unnamed ones are English.
    languages: dict[str, str] = field(default_factory=dict)

    @property
    def window(self) -> int:
        return min(max(3 * self.page * self.size, 20), MAX_WINDOW)

    def language_of(self, kb: str) -> str:
        return self.languages.get(kb, DEFAULT_LANGUAGE)


def location_text(location: dict) -> str:
    """A chunk's location as a person reads it: "page 3", "slide 5", "sheet Budget, rows 10-19"."""
    parts = []
    for name in ("page", "slide", "sheet"):
        if location.get(name) not in (None, ""):
            parts.append(f"{name} {location[name]}")
    rows = location.get("rows")
    if rows and len(rows) == 2:
        parts.append(f"row {rows[0]}" if rows[0] == rows[1] else f"rows {rows[0]}-{rows[1]}")
    return ", ".join(parts)


@dataclass
class SearchHit:
    chunk_id: str
    document_id: int | str
    source_id: int | str
    kb: str
    title: str
    url: str
    key: str
    position: int
    #: Where the chunk is in its document: {"page": 3}, {"slide": 5}, {"sheet": "Budget", "rows": [10, 19]}, or {}.
    location: dict
    #: The heading path the chunk sits under, "" when none.
    section: str
    score: float
    #: HTML-safe text: escaped content with <mark> around matched terms.
    snippet: str
    tags: list[str]
    #: Rank (1-based) of this chunk in each ranking that returned it, for explanations and evaluation.
    ranks: dict[str, int]

    @property
    def where(self) -> str:
        return location_text(self.location)


@dataclass
class SearchResult:
    hits: list[SearchHit]
    #: Hits available to page through (documents when collapsed, else chunks), within the window.
    total: int
    #: "eq" when every matching chunk was seen; "gte" when a ranking filled its window.
    total_relation: str
    took_ms: float
    mode: str
    page: int
    size: int


def _as_int(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _iso(value: date | str) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def build_filters(request: SearchRequest) -> list[Query]:
    filters = [Q("terms", kb=list(request.kbs))]
    if request.sources:
        filters.append(Q("terms", source=[str(source) for source in request.sources]))
    if request.tags:
        filters.append(Q("terms", tags=list(request.tags)))
    if request.date_from or request.date_to:
        bounds = {}
        if request.date_from:
            bounds["gte"] = _iso(request.date_from)
        if request.date_to:
            bounds["lte"] = _iso(request.date_to)
        filters.append(Q("range", created=bounds))
    return filters


def _text_match(request: SearchRequest) -> Query:
    """BM25 over the query's terms, analysed in each searched knowledge base's language."""
    by_language: dict[str, list[str]] = {}
    for kb in request.kbs:
        by_language.setdefault(request.language_of(kb), []).append(kb)
    matches = {
        language: Q("multi_match", query=analyze(request.query, language=language), type=MULTI_MATCH_TYPE,
                    fields=[f"title_terms^{TITLE_BOOST}", "content_terms"])
        for language in by_language
    }
    if len(matches) == 1:
        return next(iter(matches.values()))
    # Knowledge bases in different languages: each matches the query as analysed in its own.
    return Q("bool", minimum_should_match=1, should=[
        Q("bool", must=[matches[language]], filter=[Q("terms", kb=kbs)]) for language, kbs in by_language.items()
    ])


def keyword_search(request: SearchRequest, filters: list[Query]) -> Search:
    return (
        Search()
        .query(Q("bool", must=[_text_match(request)], filter=filters))
        .extra(size=request.window, track_total_hits=False)
        .source(excludes=SOURCE_EXCLUDES)
    )


def knn_candidates(k: int) -> int:
    return min(max(math.ceil(settings.KB_KNN_CANDIDATES_FACTOR * k), MIN_CANDIDATES, k), MAX_CANDIDATES)


def knn_clause(*, k: int, query_vector: list[float], filters: list[Query]) -> dict:
    """The `knn` section. Vectors are indexed as int8 (`int8_hnsw`): `rescore_vector` re-ranks
    `oversample * k` candidates by their float vectors, which the quantised graph alone ranks
    less exactly (`manage.py bench_scale` measures both). Written as a dict because the DSL's
    `Search.knn()` has no word for `rescore_vector` (Elasticsearch 8.18+)."""
    clause = {
        "field": "embedding",
        "query_vector": query_vector,
        "k": k,
        "num_candidates": knn_candidates(k),
        "filter": Q("bool", filter=filters).to_dict(),
    }
    if settings.KB_KNN_RESCORE_OVERSAMPLE:
        clause["rescore_vector"] = {"oversample": settings.KB_KNN_RESCORE_OVERSAMPLE}
    return clause


def semantic_search(request: SearchRequest, filters: list[Query], query_vector: list[float]) -> Search:
    k = request.window
    return (
        Search()
        .extra(knn=knn_clause(k=k, query_vector=query_vector, filters=filters), size=k, track_total_hits=False)
        .source(excludes=SOURCE_EXCLUDES)
    )


def search_bodies(request: SearchRequest, query_vector: list[float] | None) -> dict[str, Search]:
    """The searches of a request by ranking name (keyword: BM25, semantic: kNN)."""
    filters = build_filters(request)
    searches: dict[str, Search] = {}
    if request.mode in ("hybrid", "keyword"):
        searches["keyword"] = keyword_search(request, filters)
    if request.mode in ("hybrid", "semantic"):
        searches["semantic"] = semantic_search(request, filters, query_vector)
    return searches


def msearch_body(searches: dict[str, Search]) -> list[dict]:
    multi = MultiSearch()
    for one in searches.values():
        multi = multi.add(one)
    return multi.to_dict()


def _hits_of(response: dict) -> list[dict]:
    """The hits of one msearch response; a missing index means nothing has been indexed yet."""
    error = response.get("error")
    if error is None:
        return response["hits"]["hits"]
    status = response.get("status", 500)
    kind = error.get("type", "") if isinstance(error, dict) else ""
    if status == 404 and kind == "index_not_found_exception":
        return []
    message = f"search failed ({status}): {error}"[:1000]
    if status == 429 or status >= 500:
        raise SearchUnavailable(message, status=status)
    raise SearchError(message)


def _to_hit(hit: dict, score: float, ranks: dict[str, int], snippet_text: str) -> SearchHit:
    source = hit["_source"]
    return SearchHit(
        chunk_id=hit["_id"],
        document_id=_as_int(source["document"]),
        source_id=_as_int(source["source"]),
        kb=source["kb"],
        title=source.get("title", ""),
        url=source.get("url", ""),
        key=source.get("key", ""),
        position=source.get("position", 0),
        location=source.get("location") or {},
        section=source.get("section", ""),
        score=score,
        snippet=snippet_text,
        tags=source.get("tags", []),
        ranks=ranks,
    )


def _snippet_of(request: SearchRequest, source: dict, query_terms: dict[str, set[str]]) -> str:
    language = request.language_of(source["kb"])
    if request.highlight and language not in query_terms:
        query_terms[language] = set(analyze(request.query, language=language).split())
    terms = query_terms.get(language, set()) if request.highlight else set()
    return snippet(source.get("content", ""), query_terms=terms, language=language)


def search(request: SearchRequest, query_vector: list[float] | None = None) -> SearchResult:
    """Run the request in one `_msearch` round trip; raise SearchUnavailable when Elasticsearch can't answer."""
    if request.mode != "keyword" and not query_vector:
        raise ValueError(f"{request.mode} search needs a query vector")
    started = time.perf_counter()
    bodies = search_bodies(request, query_vector)
    with unavailable_on_failure("search"):
        try:
            # The client's msearch, not MultiSearch.execute(): execute() drops each response's
            # status, which tells an overloaded shard (retry) from a refused query.
            responses = get_client().msearch(index=alias_name(), searches=msearch_body(bodies))["responses"]
        except ApiError as error:
            if error.meta.status == 404:
                responses = [{"hits": {"hits": []}}] * len(bodies)
            else:
                raise

    rankings: dict[str, list[str]] = {}
    chunks: dict[str, dict] = {}
    ranks: dict[str, dict[str, int]] = {}
    saturated = False
    for name, response in zip(bodies, responses, strict=True):
        hits = _hits_of(response)
        saturated = saturated or len(hits) >= request.window
        rankings[name] = [hit["_id"] for hit in hits]
        for rank, hit in enumerate(hits, start=1):
            ranks.setdefault(hit["_id"], {})[name] = rank
            chunks.setdefault(hit["_id"], hit)

    if len(bodies) == 1:
        # One ranking: keep the engine's own score (BM25 or cosine), which means more than an RRF value.
        fused = [(hit_id, chunks[hit_id]["_score"]) for hit_id in next(iter(rankings.values()))]
    else:
        fused = rrf(rankings, k=RRF_K, weights={**DEFAULT_WEIGHTS, **(request.weights or {})})

    ordered: list[tuple[str, float]] = []
    seen_documents: set[str] = set()
    for hit_id, score in fused:
        document = chunks[hit_id]["_source"]["document"]
        if request.collapse:
            if document in seen_documents:
                continue  # fused lists are best first, so the first chunk seen is the document's best
            seen_documents.add(document)
        ordered.append((hit_id, score))

    start = (request.page - 1) * request.size
    query_terms: dict[str, set[str]] = {}
    page = [
        _to_hit(chunks[hit_id], score, ranks[hit_id], _snippet_of(request, chunks[hit_id]["_source"], query_terms))
        for hit_id, score in ordered[start : start + request.size]
    ]
    return SearchResult(
        hits=page,
        total=len(ordered),
        total_relation="gte" if saturated else "eq",
        took_ms=round((time.perf_counter() - started) * 1000, 1),
        mode=request.mode,
        page=request.page,
        size=request.size,
    )
