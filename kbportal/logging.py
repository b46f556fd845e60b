"""Log context (request id, job id) and the JSON-lines formatter used when KB_LOG_JSON=1.

The ids live in context variables: `RequestIdMiddleware` sets the request id for the duration of
a request (asgiref copies the context into the thread a sync view runs in), `JobRunner.execute`
sets the job id while a worker runs a job. `ContextFilter` (attached to the console handler in
settings) copies them onto every record, so a plain format string can use them too, and
`JsonFormatter` writes one JSON object per line:

    {"ts": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "search.api", "message": "...",
     "request_id": "9f0c...", "job_id": null, "process": 1234, "thread": "MainThread"}

plus `exc` (the formatted traceback) when there is one and any `extra={...}` fields given.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str | None] = ContextVar("kb_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("kb_job_id", default=None)

#: An incoming X-Request-ID is kept only when it looks like an id (no spaces, quotes or
#: newlines that could forge log lines or headers); otherwise a fresh one is generated.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")

#: Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def current_request_id() -> str | None:
    return request_id_var.get()


def request_id_from(header: str | None) -> str:
    """The incoming id when it is sane, else a new one (32 hex characters)."""
    if header and SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every record logged inside carries `job_id` (workers wrap each job in it)."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `job_id` (None when unset) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs a 4xx/5xx (`django.request`) after the middleware returned, with the request.
        request = getattr(record, "request", None)
        record.request_id = request_id_var.get() or getattr(request, "request_id", None)
        record.job_id = job_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on odd `extra` values (they are repr'd)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
            "job_id": getattr(record, "job_id", job_id_var.get()),
            "process": record.process,
            "thread": record.threadName,
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=repr, ensure_ascii=False)
