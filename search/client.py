"""The process-wide Elasticsearch client and the errors the search app raises.

The client never retries on its own (`max_retries=0`): a search that waits for retries holds a web
worker, so retrying is the caller's choice (the circuit breaker for searches, rq's backoff for
ingestion). Every call site translates transport failures into `SearchUnavailable` through
`unavailable_on_failure`, so callers catch one exception whatever went wrong on the wire.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from elasticsearch import ApiError, Elasticsearch, TransportError


class SearchUnavailable(Exception):
    """Elasticsearch cannot answer now (unreachable, timed out, overloaded or failing): retry later."""


class SearchError(Exception):
    """Elasticsearch answered but refused the request (bad input, mapping conflict): retrying won't help."""


_client: Elasticsearch | None = None
_lock = threading.Lock()


def get_client() -> Elasticsearch:
    """The client shared by every thread of this process (it is thread-safe and pools connections)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = Elasticsearch(
                    settings.KB_ES_URL,
                    api_key=settings.KB_ES_API_KEY or None,
                    request_timeout=settings.KB_ES_TIMEOUT,
                    max_retries=0,
                    retry_on_timeout=False,
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


@contextmanager
def unavailable_on_failure(action: str) -> Iterator[None]:
    """Turn transport failures, 429 and 5xx into `SearchUnavailable`; other API errors into `SearchError`."""
    try:
        yield
    except (ApiError, TransportError) as error:
        if is_unavailable(error):
            raise SearchUnavailable(f"{action}: {type(error).__name__}: {error}"[:500]) from error
        raise SearchError(f"{action}: {error}"[:1000]) from error
