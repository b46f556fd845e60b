"""Prometheus metrics of every KB Portal process, served at `/metrics` (kbportal.metrics_view).

Why prometheus-client's multiprocess mode (and not a Redis-backed collector):

- Web servers and rq workers are separate processes. In multiprocess mode each process writes its
  counters and histograms to memory-mapped files in one directory (KB_METRICS_DIR, default
  var/metrics; settings export it as PROMETHEUS_MULTIPROC_DIR before prometheus-client is
  imported), and `/metrics` in any web process sums them. An observation is a write to a mapped
  page: no network round trip on the hot path (a Redis collector costs one per observation, or
  a batching thread per process).
- Metrics keep working while Redis is down - exactly when an operator needs them (the breaker
  and error counters of a Redis outage are still recorded and served).
- The cost: it is per host. Processes must share the directory and a pid namespace, so on a
  multi-host deployment Prometheus scrapes every host's web process (each exposes its own
  workers). Values read live from shared stores (queue depths, jobs by status, live workers,
  breaker state) are collected at scrape time instead, so every host reports the same cluster-wide
  figures for them; aggregate those with max(), not sum().

Files of processes that are gone: counters and histograms of a dead process are kept (so totals
never go backwards while any process runs); `live*` gauges (WebSocket clients) of dead
processes are removed at start-up and at every scrape. When a process starts and no other live
process has registered in the directory, the directory is wiped: a fresh start of the whole
system resets the counters, which Prometheus' rate() handles as a counter reset. Start-up
cleanup runs under an exclusive file lock and each process registers itself (`pid_<pid>.alive`)
under the same lock, so processes starting together never delete each other's files.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

METRICS_DIR = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.KB_METRICS_DIR)
METRICS_DIR.mkdir(parents=True, exist_ok=True)

from prometheus_client import (  # noqa: E402 - the directory must exist before metrics are created
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    values,
)

LIVE_GAUGE_PREFIX = "gauge_live"
ALIVE_SUFFIX = ".alive"

# --- process registration and stale files -------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _file_pid(path: Path) -> int | None:
    """The pid in `counter_123.db`, `gauge_livesum_123.db` or `pid_123.alive`."""
    tail = path.name.rsplit("_", 1)[-1].split(".", 1)[0]
    return int(tail) if tail.isdigit() else None


def prune_dead_live_gauges(directory: Path = METRICS_DIR) -> int:
    """Drop `live*` gauge files and registrations of processes that are gone; returns how many pids."""
    dead = {
        pid
        for path in [*directory.glob(f"{LIVE_GAUGE_PREFIX}*.db"), *directory.glob(f"pid_*{ALIVE_SUFFIX}")]
        if (pid := _file_pid(path)) is not None and not _pid_alive(pid)
    }
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
        with contextlib.suppress(FileNotFoundError):
            (directory / f"pid_{pid}{ALIVE_SUFFIX}").unlink()
    return len(dead)


def register_process(directory: Path = METRICS_DIR) -> None:
    """Start-up: under the directory lock, clean up after dead processes and register this one."""
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prune_dead_live_gauges(directory)
        others = [p for p in directory.glob(f"pid_*{ALIVE_SUFFIX}") if _file_pid(p) != os.getpid()]
        if not others:
            # No other live process: what is left belongs to a previous run of the system.
            for path in directory.glob("*.db"):
                path.unlink(missing_ok=True)
        (directory / f"pid_{os.getpid()}{ALIVE_SUFFIX}").touch()
    atexit.register(_unregister, os.getpid(), directory)


def _unregister(pid: int, directory: Path) -> None:
    if pid != os.getpid():  # a forked child inherited the atexit hook
        return
    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, str(directory))
        (directory / f"pid_{pid}{ALIVE_SUFFIX}").unlink(missing_ok=True)


MULTIPROCESS = values.ValueClass is not values.MutexValue
if MULTIPROCESS:
    register_process()
else:  # prometheus_client was imported before settings exported the directory
    logger.warning("prometheus-client is not in multiprocess mode: /metrics shows this process only")


# --- metrics written by processes -----------------------------------------------------------------

FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
JOBS = (0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)

HTTP_LATENCY = Histogram(
    "kb_http_request_duration_seconds",
    "HTTP requests by route pattern (not raw path), method and status.",
    ["route", "method", "status"],
    buckets=FAST,
)
SEARCH_LATENCY = Histogram(
    "kb_search_duration_seconds",
    "Searches by mode and cache outcome (hit, miss, degraded).",
    ["mode", "cache"],
    buckets=FAST,
)
SEARCH_CACHE = Counter(
    "kb_search_cache_total",
    "Search result cache outcomes; hit ratio = hit / (hit + miss).",
    ["outcome"],
)
BREAKER_TRANSITIONS = Counter(
    "kb_breaker_transitions_total",
    "Circuit breaker transitions this system caused.",
    ["breaker", "transition"],
)
RATE_LIMITED = Counter(
    "kb_rate_limited_total",
    "Requests refused by a rate limit (429), by budget (search, ask, login).",
    ["limit"],
)
JOB_DURATION = Histogram(
    "kb_job_duration_seconds",
    "Background job runs (one claimed attempt), by job kind and the status it ended in.",
    ["kind", "status"],
    buckets=JOBS,
)
STAGE_DURATION = Histogram(
    "kb_job_stage_duration_seconds",
    "Time spent in one step of a job (extract, chunk, embed, index, ...).",
    ["kind", "stage"],
    buckets=SLOW,
)
EMBEDDED_TEXTS = Counter(
    "kb_embedded_texts_total",
    "Texts embedded, by embedder and caller (ingestion, query); throughput = rate().",
    ["embedder", "caller"],
)
EMBED_DURATION = Histogram(
    "kb_embed_duration_seconds",
    "Calls to an embedder (one batch each).",
    ["embedder", "caller"],
    buckets=FAST,
)
WEBSOCKET_CLIENTS = Gauge(
    "kb_websocket_clients",
    "Open WebSocket connections, by endpoint.",
    ["endpoint"],
    multiprocess_mode="livesum",
)


def observe_search(search: Callable[..., dict]) -> Callable[..., dict]:
    """Decorator for the search service: latency by mode and cache outcome of each answer."""

    @functools.wraps(search)
    def timed(*args, **kwargs) -> dict:
        started = time.perf_counter()
        result = search(*args, **kwargs)
        outcome = "degraded" if result.get("degraded") else result.get("cache", "miss")
        SEARCH_LATENCY.labels(result.get("mode", ""), outcome).observe(time.perf_counter() - started)
        SEARCH_CACHE.labels(outcome).inc()
        return result

    return timed


@contextlib.contextmanager
def stage_timer(kind: str, stage: str) -> Iterator[None]:
    """Time one step of a job (observed only when the step completes)."""
    started = time.perf_counter()
    yield
    STAGE_DURATION.labels(kind, stage).observe(time.perf_counter() - started)


@contextlib.contextmanager
def embedding_timer(embedder: str, caller: str, count: int) -> Iterator[None]:
    """Time one embedder call of `count` texts (counted only when it succeeds)."""
    started = time.perf_counter()
    yield
    EMBED_DURATION.labels(embedder, caller).observe(time.perf_counter() - started)
    EMBEDDED_TEXTS.labels(embedder, caller).inc(count)


def record_breaker_transition(name: str, old: str, new: str) -> None:
    BREAKER_TRANSITIONS.labels(name, f"{old}->{new}").inc()


def record_rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def observe_job(kind: str, status: str | None, seconds: float) -> None:
    JOB_DURATION.labels(kind, status or "not_claimed").observe(seconds)


class WebSocketGauge:
    """ASGI middleware: counts accepted WebSocket connections until they close (every consumer)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        parts = [part for part in scope.get("path", "").split("/") if part]
        gauge = WEBSOCKET_CLIENTS.labels("/" + "/".join(parts[:2]) + "/")  # /ws/answers/<id>/ -> /ws/answers/
        counted = False

        async def counting_send(message):
            nonlocal counted
            if message["type"] == "websocket.accept" and not counted:
                counted = True
                gauge.inc()
            elif message["type"] == "websocket.close" and counted:
                counted = False
                gauge.dec()
            await send(message)

        try:
            return await self.app(scope, receive, counting_send)
        finally:
            if counted:
                gauge.dec()
