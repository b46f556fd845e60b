"""The process-wide Elasticsearch client and the errors the search app raises.

`KB_ES_URL` names one node or, comma-separated, several nodes of one cluster. The client never
retries after a timeout or an error status: a search that waits for retries holds a web worker,
so retrying is the caller's choice (the circuit breaker for searches, rq's backoff for
ingestion). The one exception needs several nodes: a request whose connection failed (refused,
reset) is sent to the next node at once, at most once per other node, and the failed node is left
out of the rotation for a while. That costs milliseconds, and it keeps searches and indexing
going while one node of the cluster is down. Every call site translates transport failures into
`SearchUnavailable` through `unavailable_on_failure`, so callers catch one exception whatever went
wrong on the wire.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from elasticsearch import ApiError, ConnectionTimeout, Elasticsearch, NotFoundError, TransportError
from elasticsearch import ConnectionError as TransportConnectionError


class SearchUnavailable(Exception):
    """Elasticsearch cannot answer now (unreachable, timed out, overloaded or failing): retry later.

    `status` is the HTTP status it answered with, when it answered.
    """

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class SearchError(Exception):
    """Elasticsearch answered but refused the request (bad input, mapping conflict): retrying won't help."""


_client: Elasticsearch | None = None
_lock = threading.Lock()


def node_urls() -> list[str]:
    """The node URLs `KB_ES_URL` names (one, or several separated by commas)."""
    return [url.strip() for url in settings.KB_ES_URL.split(",") if url.strip()]


def get_client() -> Elasticsearch:
    """The client shared by every thread of this process (it is thread-safe and pools connections)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                urls = node_urls()
                _client = Elasticsearch(
                    urls,
                    api_key=settings.KB_ES_API_KEY or None,
                    request_timeout=settings.KB_ES_TIMEOUT,
                    max_retries=len(urls) - 1,  # connection failures only: see the module docstring
                    retry_on_timeout=False,
                    retry_on_status=(),
                )
    return _client


def reset_client() -> None:
    """Forget the shared client (tests that change KB_ES_URL; forked workers)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


def is_unavailable(error: Exception) -> bool:
    """True for failures worth retrying later: no answer, 429 (overloaded) or a 5xx."""
    if isinstance(error, ApiError):
        return error.meta.status == 429 or error.meta.status >= 500
    return isinstance(error, TransportError)


def failure_in_words(error: BaseException, *, timeout: float | None = None) -> str:
    """Why a call to the search server failed, in words: "timed out after 2 s", "connection refused",
    "search server answered 503". `timeout` is the call's own (KB_ES_TIMEOUT unless given)."""
    cause = error.__cause__ or error
    if isinstance(cause, ConnectionTimeout):
        return f"timed out after {settings.KB_ES_TIMEOUT if timeout is None else timeout:g} s"
    if isinstance(cause, ApiError):
        return f"search server answered {cause.meta.status}"
    if isinstance(cause, TransportConnectionError):
        return "connection refused" if "refused" in cause.message.lower() else f"connection failed: {cause.message}"
    if getattr(error, "status", None):
        return f"search server answered {error.status}"
    return str(error)


def is_missing_index(error: SearchError) -> bool:
    """Whether a failure raised through `unavailable_on_failure` means the index does not exist (yet)."""
    return isinstance(error.__cause__, NotFoundError)


@contextmanager
def unavailable_on_failure(action: str) -> Iterator[None]:
    """Turn transport failures, 429 and 5xx into `SearchUnavailable`; other API errors into `SearchError`."""
    try:
        yield
    except (ApiError, TransportError) as error:
        if is_unavailable(error):
            raise SearchUnavailable(f"{action}: {type(error).__name__}: {error}"[:500]) from error
        raise SearchError(f"{action}: {error}"[:1000]) from error
