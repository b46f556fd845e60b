"""The errors the search services raise to their callers.

Each is a `kbportal.errors.DomainError`: the API answers it with its status and the usual error
body; commands, the dashboard and workers read its message. The search server's own failures,
`SearchUnavailable` and `SearchError`, are raised by `search.client`; the search service turns them
into `SearchDown` and `SearchRefused`. An unknown or refused knowledge base is `knowledge.errors`'.
"""

import math

from kbportal.errors import DomainError


class MixedEmbedders(DomainError):
    """Knowledge bases searched together whose vectors come from different embedders."""

    code = "invalid"
    default_detail = "The request has invalid fields."

    def __init__(self):
        # Vectors of different models live in different spaces: one query vector cannot serve both.
        super().__init__(fields={"kb": ["These knowledge bases use different embedders; search them one at a time "
                                        "or use mode=keyword."]})


class SearchDown(DomainError):
    """The search server cannot answer now (`reason`: its breaker is open, or it is failing); retry
    after `retry_after` seconds."""

    status_code = 503
    code = "service_unavailable"

    def __init__(self, reason: str, *, retry_after: float, detail: str | None = None):
        super().__init__(detail or f"Search is unavailable ({reason}); retry shortly.",
                         retry_after=max(1, math.ceil(retry_after)))
        self.reason = reason


class SearchRefused(DomainError):
    """The search server rejected the query (a bug or an unsupported input, not an outage)."""

    status_code = 502
    code = "search_refused"
    default_detail = "The search server refused the query."
