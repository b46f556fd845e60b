"""`GET|POST /api/v1/search`: hybrid search over the knowledge bases the caller may read.

The view validates its input once (`SearchInput`), applies the rate limits and answers with
`search_response`: a body from the result cache, or the search service's answer shaped by
`SearchOutput` and cached as it is sent, so that a cache hit serialises nothing. While the search
server cannot answer, the last good body of the same request is served with `degraded: true`.
Rate limits (django-ratelimit, fixed windows counted in the Redis cache): an API key at its own
`rate`, a staff session at KB_DEFAULT_KEY_RATE, and anything unauthenticated - no key or a bad
one - per client IP at KB_ANON_RATE, counted before the 401 so guessing keys is limited too.
"""

import logging

from django.conf import settings
from django.http import QueryDict
from django_ratelimit.core import get_usage
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.response import Response
from rest_framework.views import APIView

from kbportal.metrics import observe_search, record_rate_limited
from kbportal.redis_gate import CACHE_ERRORS, log_cache_error
from kbportal.validation import validated
from knowledge.models import ApiKey
from knowledge.permissions import HasScope, is_staff, request_api_key
from search import cache
from search.errors import SearchDown
from search.query import MAX_DEPTH, MAX_QUERY_CHARS, MAX_SIZE, MODES
from search.selectors import searchable_kb_slugs
from search.services import plan_search, run_search

logger = logging.getLogger(__name__)

LIST_PARAMS = ("kb", "sources", "tags")


def enforce_rate_limit(request, *, counter: str = "search") -> None:
    """Count this request against its caller's limit; Throttled (429 + Retry-After) when over it.

    `counter` names the budget: each API (search, ask) counts separately at the same rates.
    """
    try:
        user = request.user  # authenticates; a bad key raises here
    except AuthenticationFailed:
        _count(request, group=f"{counter}:anon", key="ip", rate=settings.KB_ANON_RATE)
        raise
    api_key = request_api_key(request)
    if api_key is not None:
        _count(request, group=f"{counter}:key", key=lambda _group, _request: str(api_key.pk), rate=api_key.rate)
    elif user.is_authenticated:
        _count(request, group=f"{counter}:user", key="user", rate=settings.KB_DEFAULT_KEY_RATE)
    else:
        _count(request, group=f"{counter}:anon", key="ip", rate=settings.KB_ANON_RATE)


def _count(request, *, group: str, key, rate: str) -> None:
    """Count the request in django-ratelimit's window for (group, key); Throttled once over `rate`."""
    try:
        usage = get_usage(request, group=group, key=key, rate=rate, increment=True)
    except CACHE_ERRORS as exc:
        # Redis down: searches can still be answered (the breaker and caches degrade too); fail open.
        log_cache_error(logger, "rate limit not applied, counter unavailable", exc)
        return
    if usage is not None and usage["should_limit"]:  # None: not counted (RATELIMIT_FAIL_OPEN)
        record_rate_limited(group.split(":", 1)[0])
        # django-ratelimit's window still counts at its last second, `time_left` from now.
        raise Throttled(wait=usage["time_left"] + 1)


def input_data(data) -> dict:
    """Request parameters as plain data: list parameters may repeat or be comma-separated."""
    if not isinstance(data, dict):  # a JSON body that is a list, string, number or null
        raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object of search parameters."]})
    if isinstance(data, QueryDict):
        plain = {name: data.get(name) for name in data if name not in LIST_PARAMS}
        lists = {name: data.getlist(name) for name in LIST_PARAMS if name in data}
    else:
        plain = {name: value for name, value in data.items() if name not in LIST_PARAMS}
        lists = {name: data[name] if isinstance(data[name], list) else [data[name]] for name in LIST_PARAMS
                 if name in data}
    for name, values in lists.items():
        plain[name] = [part.strip() for value in values for part in str(value).split(",") if part.strip()]
    return plain


class SearchInput(serializers.Serializer):
    q = serializers.CharField(max_length=MAX_QUERY_CHARS, help_text="The query text.",
                              error_messages={"blank": "The query must not be empty."})
    kb = serializers.ListField(
        child=serializers.SlugField(max_length=64), required=False, max_length=50,
        help_text="Knowledge base slugs (repeat the parameter or separate with commas). "
                  "Default: every knowledge base the caller may read.",
    )
    mode = serializers.ChoiceField(choices=MODES, default="hybrid",
                                   help_text="hybrid (BM25 + kNN fused by RRF), keyword (BM25) or semantic (kNN).")
    sources = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=100,
                                    help_text="Only chunks of these source ids.")
    tags = serializers.ListField(child=serializers.CharField(max_length=200), required=False, max_length=50,
                                 help_text="Only chunks carrying any of these tags.")
    date_from = serializers.DateField(required=False, help_text="Documents indexed on or after this day.")
    date_to = serializers.DateField(required=False, help_text="Documents indexed on or before this day.")
    page = serializers.IntegerField(min_value=1, default=1)
    size = serializers.IntegerField(min_value=1, max_value=MAX_SIZE, default=10,
                                    help_text=f"Hits per page, at most {MAX_SIZE}; page * size at most {MAX_DEPTH}.")
    highlight = serializers.BooleanField(default=True, help_text="Mark matched words in snippets with <mark>.")
    chunks = serializers.BooleanField(default=False,
                                      help_text="Return every matching chunk instead of one hit per document.")

    def validate(self, data):
        if data["page"] * data["size"] > MAX_DEPTH:
            raise serializers.ValidationError({"page": f"page * size may be at most {MAX_DEPTH}."})
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise serializers.ValidationError({"date_to": "date_to must not be before date_from."})
        return data


def validated_search_input(data: dict) -> dict:
    """SearchInput's validated data; `q` changes with every query (see kbportal.validation)."""
    return validated(SearchInput, data, changing="q")


class SearchHitOutput(serializers.Serializer):
    document_id = serializers.IntegerField()
    title = serializers.CharField()
    source_id = serializers.IntegerField()
    kb = serializers.CharField()
    score = serializers.FloatField(help_text="RRF score in hybrid mode; BM25 or cosine score otherwise.")
    snippet = serializers.CharField(help_text="HTML-escaped text; matched words wrapped in <mark>.")
    position = serializers.IntegerField(help_text="Position of the chunk within its document (0-based).")
    chunk_id = serializers.CharField()
    url = serializers.CharField(help_text="The document's URL or file name.")
    location = serializers.DictField(
        help_text='Where the chunk is in its document: {"page": 3}, {"slide": 5}, '
                  '{"sheet": "Budget", "rows": [10, 19]}; {} for a text without pages.')
    where = serializers.CharField(help_text='The location in words: "page 3", "sheet Budget, rows 10-19"; "" for none.')
    section = serializers.CharField(help_text='The heading path the chunk sits under ("Results > Costs"); "" for none.')
    tags = serializers.ListField(child=serializers.CharField())
    ranks = serializers.DictField(child=serializers.IntegerField(),
                                  help_text="Rank of the chunk in the keyword and semantic rankings.")


class SearchOutput(serializers.Serializer):
    """The body of a `search.services.SearchAnswer`. A search just run is neither degraded nor
    served from the cache; `search_response` marks cached bodies as it serves them."""

    hits = SearchHitOutput(many=True)
    total = serializers.IntegerField(help_text="Hits available to page through.")
    total_relation = serializers.ChoiceField(choices=["eq", "gte"])
    mode = serializers.ChoiceField(choices=MODES)
    page = serializers.IntegerField()
    size = serializers.IntegerField()
    took_ms = serializers.FloatField(help_text="Time this request spent in the search service.")
    search_ms = serializers.FloatField(help_text="Time of the search-server round trip that produced the hits.")
    degraded = serializers.BooleanField(read_only=True, default=False,
                                        help_text="True when served from the last good cached result "
                                                  "because the search server is unavailable.")
    cache = serializers.ChoiceField(choices=["hit", "miss"], read_only=True, default="miss")


@observe_search
def search_response(values: dict, *, api_key: ApiKey | None) -> dict:
    """The API's body for SearchInput's validated `values`, searched with `api_key`'s grants (None:
    staff, every knowledge base); without `kb`, the knowledge bases the caller may search.

    Raises the search service's errors; SearchDown when the search server cannot answer and the
    request has no cached body.
    """
    plan = plan_search(
        kb_slugs=values.get("kb") or searchable_kb_slugs(api_key=api_key),
        query=values["q"],
        mode=values["mode"],
        sources=values.get("sources", ()),
        tags=values.get("tags", ()),
        date_from=values.get("date_from"),
        date_to=values.get("date_to"),
        page=values["page"],
        size=values["size"],
        highlight=values["highlight"],
        collapse=not values["chunks"],
        api_key=api_key,
    )
    fresh_key, good_key = cache.result_keys(plan.fingerprint, plan.generations)
    # One round trip for both: on a miss the query's cached embedding is already at hand.
    cached, vector = cache.lookup(fresh_key, plan.embedder, plan.request.query)
    if cached is not None:
        return {**cached, "took_ms": plan.elapsed_ms(), "cache": "hit"}
    try:
        answer = run_search(plan, vector=vector)
    except SearchDown as down:
        stale = cache.get_result(fresh_key) or cache.get_result(good_key)
        if stale is None:
            raise SearchDown(down.reason, retry_after=down.retry_after, detail=(
                f"Search is unavailable ({down.reason}) and this query has no cached answer; retry shortly."
            )) from down
        return {**stale, "took_ms": plan.elapsed_ms(), "degraded": True, "cache": "hit"}
    body = SearchOutput(answer).data
    cache.store_result(fresh_key, good_key, body)
    return body


HIT_EXAMPLE = {
    "hits": [
        {
            "document_id": 412, "title": "Resetting a password", "source_id": 7, "kb": "support",
            "score": 0.0325, "snippet": "To <mark>reset</mark> your <mark>password</mark>, open Settings …",
            "position": 0, "chunk_id": "412-0", "url": "password-guide.pdf",
            "location": {"page": 3}, "where": "page 3", "section": "Accounts > Passwords",
            "tags": ["account"], "ranks": {"keyword": 1, "semantic": 2},
        }
    ],
    "total": 1, "total_relation": "eq", "mode": "hybrid", "page": 1, "size": 10,
    "took_ms": 1.2, "search_ms": 18.4, "degraded": False, "cache": "hit",
}
ERROR_EXAMPLES = [
    OpenApiExample("Invalid fields", status_codes=["400"], response_only=True, value={
        "error": "invalid", "detail": "The request has invalid fields.",
        "fields": {"size": ["Ensure this value is less than or equal to 100."]},
    }),
    OpenApiExample("Rate limited", status_codes=["429"], response_only=True, value={
        "error": "throttled", "detail": "Request was throttled. Expected available in 1 second.",
    }),
    OpenApiExample("Search unavailable", status_codes=["503"], response_only=True, value={
        "error": "service_unavailable",
        "detail": "Search is unavailable (circuit open) and this query has no cached answer; retry shortly.",
    }),
]
RESPONSES = {
    200: SearchOutput,
    400: OpenApiResponse(description="Invalid parameters (field errors)."),
    401: OpenApiResponse(description="No API key, or a bad or revoked one."),
    403: OpenApiResponse(description="The key lacks the search scope or a named knowledge base."),
    404: OpenApiResponse(description="Unknown knowledge base."),
    429: OpenApiResponse(description="Rate limit reached; see the Retry-After header."),
    503: OpenApiResponse(description="Search server unavailable and nothing cached; see Retry-After."),
}
RETRY_AFTER = OpenApiParameter("Retry-After", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[429, 503])


class SearchApi(APIView):
    """Hybrid search. Authenticate with `Authorization: Bearer <key>` (scope `search`) or a staff session."""

    permission_classes = [HasScope]
    required_scope = "search"

    def initial(self, request, *args, **kwargs):
        enforce_rate_limit(request)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="search",
        summary="Search knowledge bases",
        parameters=[SearchInput],
        responses=RESPONSES,
        examples=[OpenApiExample("Hybrid search", value=HIT_EXAMPLE, response_only=True), *ERROR_EXAMPLES],
    )
    def get(self, request):
        return self.search(input_data(request.query_params))

    @extend_schema(
        operation_id="search_post",
        summary="Search knowledge bases (parameters in a JSON body)",
        request=SearchInput,
        responses=RESPONSES,
        examples=[
            OpenApiExample("Filtered search", request_only=True, value={
                "q": "reset password", "kb": ["support"], "mode": "hybrid", "tags": ["account"],
                "date_from": "2024-01-01", "size": 5,
            }),
            OpenApiExample("Hybrid search", value=HIT_EXAMPLE, response_only=True),
            *ERROR_EXAMPLES,
        ],
    )
    def post(self, request):
        return self.search(input_data(request.data))

    def search(self, data: dict) -> Response:
        values = validated_search_input(data)
        api_key = None if is_staff(self.request) else request_api_key(self.request)
        return Response(search_response(values, api_key=api_key))
