"""The circuit breaker every call to a backing service (search server, object store, LLM) goes through.

Unlike pybreaker, no lock is held while the wrapped call runs, so concurrent calls in a threaded
or async server stay concurrent. State lives in Redis (kbportal/breaker_storage.py), so every
process sees the same breaker, and each step is one atomic round trip. A closed breaker does not
ask Redis on every call:

- a "closed" verdict is reused by the process for ADMIT_REUSE_SECONDS; a trip by another process
  takes effect here within that time (a trip this process records takes effect at once);
- successes are counted in the process and recorded together, at most every
  SUCCESS_RECORD_SECONDS, and with every failure: the failure that decides whether to trip is
  always weighed against every success this process saw before it.

If Redis is unreachable the breaker falls back to per-process in-memory state (with a warning)
and tries Redis again after a few seconds: a Redis outage must not take the service down.

Usage:

    search_breaker = CircuitBreaker("search", failure_exceptions=(httpx.TransportError,))
    hits = search_breaker.call(client.search, body)
    with search_breaker.guard():      # for async code or a block that is not one call
        response = await client.post(...)

Only `failure_exceptions` count as failures; any other exception (a 400 for bad input) passes
through and counts as a success, since the service answered. Each failure is also described in
words (`describe_failure`) and kept with the start of the failing period, for readiness and the
dashboard (`failure()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from django.conf import settings

from kbportal import metrics
from kbportal.breaker_storage import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Failure,
    MemoryStore,
    Policy,
    RedisStore,
    redis_client,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: After a Redis error, use in-memory state this long before trying Redis again.
REDIS_RETRY_SECONDS = 5.0
#: How long a process reuses a "closed" verdict before asking again (one round trip less per call).
ADMIT_REUSE_SECONDS = 0.25
#: How long a process may hold its successes before recording them (one round trip less per call).
SUCCESS_RECORD_SECONDS = 1.0
#: A failure's description is cut to this many characters before it is stored.
REASON_CHARS = 200


class CircuitOpen(Exception):
    """The breaker is open (or half-open with its probe taken): the call was not made."""

    def __init__(self, name: str, retry_after: float):
        super().__init__(f"circuit {name!r} is open; retry after {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after



# --- The breaker ---------------------------------------------------------------------------------

_known: dict[str, CircuitBreaker] = {}


def known_breakers() -> list[CircuitBreaker]:
    """Breakers created in this process (one per name)."""
    return list(_known.values())


def error_in_words(error: BaseException) -> str:
    """The default `describe_failure`: the exception's type and message."""
    return f"{type(error).__name__}: {error}"


class CircuitBreaker:
    """A named breaker; every instance with the same name (in any process) shares one state.

    `transitions` counts the transitions this process caused ("closed->open", "open->half_open",
    "half_open->closed", "half_open->open"); `on_transition(name, old, new)` is called for each.
    `describe_failure(exception)` says in words why a call failed ("timed out after 2 s").
    """

    def __init__(
        self,
        name: str,
        *,
        failure_exceptions: tuple[type[BaseException], ...],
        failure_ratio: float | None = None,
        min_calls: int | None = None,
        window_seconds: int | None = None,
        open_seconds: float | None = None,
        probe_seconds: float | None = None,
        redis_url: str | None = None,
        on_transition: Callable[[str, str, str], None] | None = None,
        describe_failure: Callable[[BaseException], str] = error_in_words,
    ):
        self.name = name
        self.describe_failure = describe_failure
        self.failure_exceptions = tuple(failure_exceptions)
        open_seconds = settings.KB_BREAKER_OPEN_SECONDS if open_seconds is None else open_seconds
        self.policy = Policy(
            failure_ratio=settings.KB_BREAKER_FAILURE_RATIO if failure_ratio is None else failure_ratio,
            min_calls=settings.KB_BREAKER_MIN_CALLS if min_calls is None else min_calls,
            window_seconds=settings.KB_BREAKER_WINDOW_SECONDS if window_seconds is None else window_seconds,
            open_seconds=open_seconds,
            probe_seconds=open_seconds if probe_seconds is None else probe_seconds,
        )
        self.on_transition = on_transition
        _known[name] = self  # the latest instance per name; /metrics reads their (shared) state
        self.transitions: Counter[str] = Counter()
        self._redis = RedisStore(name, self.policy, redis_client(redis_url or settings.REDIS_URL))
        self._memory = MemoryStore(name, self.policy)
        self._redis_retry_at = 0.0  # monotonic; Redis is skipped until then after an error
        self._closed_until = 0.0  # monotonic; admit without asking until then
        self._failing_known = False  # the last "closed" verdict said a failing period is on
        self._successes_lock = threading.Lock()
        self._successes = 0  # successes seen here and not yet recorded
        self._successes_due = 0.0  # monotonic; when the next success records those held

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r})"

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `fn(*args, **kwargs)` through the breaker; raises CircuitOpen without calling it."""
        with self.guard():
            return fn(*args, **kwargs)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block through the breaker (the way for async code: `with b.guard(): await ...`)."""
        probe = self._admit()
        try:
            yield
        except self.failure_exceptions as error:
            self._finish(probe, failed=True, reason=self.describe_failure(error))
            raise
        except Exception:
            self._finish(probe, failed=False)
            raise
        except BaseException:
            # Cancelled or interrupted: no verdict on the service, but free the probe slot.
            if probe:
                self._run("release_probe")
            raise
        self._finish(probe, failed=False)

    def record_success(self) -> None:
        """Count a success observed outside `call()`/`guard()` (counts only while closed)."""
        self._finish(False, failed=False)

    def record_failure(self, reason: str = "") -> None:
        """Count a failure observed outside `call()`/`guard()`; may open the breaker."""
        self._finish(False, failed=True, reason=reason)

    def state(self) -> dict[str, Any]:
        """For /health/ready and the dashboard (with this process's held successes recorded first)."""
        self._record_held()
        snap, storage = self._run("snapshot"), self._storage()
        if snap.open_left > 0:
            current = OPEN
        elif snap.opened_at is not None:
            current = HALF_OPEN
        else:
            current = CLOSED
        return {
            "name": self.name,
            "state": current,
            "failures": snap.failures,
            "calls": snap.calls,
            "opened_at": snap.opened_at,
            "retry_after": round(snap.open_left, 3),
            "storage": storage,
        }

    def failure(self) -> Failure | None:
        """The current failing period, or None while calls succeed (held successes recorded first).

        A period begins with a failure and ends with the next recorded success; while the breaker
        is closed it also ends `window_seconds` after its last failure. While the breaker is open
        or half-open it lasts until a probe succeeds.
        """
        self._record_held()
        return self._run("failure")

    def reset(self) -> None:
        """Close the breaker and forget the window, in Redis and in this process."""
        self._memory.reset()
        self._redis_retry_at = self._closed_until = 0.0
        with self._successes_lock:
            self._successes, self._successes_due = 0, 0.0
        self._run("reset")

    def _admit(self) -> bool:
        if self._closed_until > time.monotonic():
            return False
        verdict, retry_after, failing = self._run("admit")
        if verdict == OPEN:
            raise CircuitOpen(self.name, retry_after)
        if verdict == "probe":
            self._transition(OPEN, HALF_OPEN)
            return True
        self._closed_until = time.monotonic() + ADMIT_REUSE_SECONDS
        self._failing_known = failing
        return False

    def _finish(self, probe: bool, *, failed: bool, reason: str = "") -> None:
        reason = reason[:REASON_CHARS]
        if probe:
            if self._run("probe_done", failed, reason):
                self._transition(HALF_OPEN, OPEN if failed else CLOSED)
            return
        # A success that ends a failing period is recorded at once, not held: readiness and the
        # dashboard of every process then see the recovery without waiting for this process.
        calls = self._take_successes(failed=failed, hold=not self._failing_known)
        if not calls:
            return
        if not failed:
            self._failing_known = False
        if self._run("record", calls, failed, reason):
            self._transition(CLOSED, OPEN)

    def _record_held(self) -> None:
        held = self._take_successes(failed=False, now=True)
        if held:
            self._run("record", held, False)

    def _take_successes(self, *, failed: bool, now: bool = False, hold: bool = True) -> int:
        """The outcomes to record now, this one included: 0 while successes are being held.

        A success is held (when `hold`) until SUCCESS_RECORD_SECONDS have passed since the last
        record; a failure (or `now`) takes every held success with it.
        """
        with self._successes_lock:
            if not failed and not now:
                self._successes += 1
                if hold and self._successes_due > time.monotonic():
                    return 0
            calls, self._successes = self._successes + int(failed), 0
            if calls:
                self._successes_due = time.monotonic() + SUCCESS_RECORD_SECONDS
            return calls

    def _storage(self) -> str:
        return "memory" if self._redis_retry_at > time.monotonic() else "redis"

    def _run(self, operation: str, *args: Any) -> Any:
        """Run a store operation on Redis, or on in-memory state while Redis is failing."""
        if self._redis_retry_at <= time.monotonic():
            try:
                return getattr(self._redis, operation)(*args)
            except redis.RedisError as exc:
                logger.warning(
                    "breaker %s: Redis failed (%s); using in-memory state for %.0fs",
                    self.name,
                    exc,
                    REDIS_RETRY_SECONDS,
                )
                self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        return getattr(self._memory, operation)(*args)

    def _transition(self, old: str, new: str) -> None:
        self._closed_until = 0.0
        self.transitions[f"{old}->{new}"] += 1
        metrics.record_breaker_transition(self.name, old, new)
        log = logger.warning if new == OPEN else logger.info
        log("breaker %s: %s -> %s", self.name, old, new)
        if self.on_transition is not None:
            try:
                self.on_transition(self.name, old, new)
            except Exception:
                logger.exception("breaker %s: on_transition hook failed", self.name)


_shared: dict[str, tuple[tuple, CircuitBreaker]] = {}


def shared_breaker(
    name: str,
    *,
    failure_exceptions: tuple[type[BaseException], ...],
    call_seconds: float,
    describe_failure: Callable[[BaseException], str] = error_in_words,
) -> CircuitBreaker:
    """This process's breaker `name`, rebuilt when the breaker settings change (tests override them).

    Instances are cheap, and every instance of one name shares its state through Redis. The
    half-open probe slot must outlive one guarded call (`call_seconds`, the call's own timeout).
    """
    probe_seconds = max(settings.KB_BREAKER_OPEN_SECONDS, call_seconds + 1)
    policy = (
        settings.KB_BREAKER_FAILURE_RATIO,
        settings.KB_BREAKER_MIN_CALLS,
        settings.KB_BREAKER_WINDOW_SECONDS,
        settings.KB_BREAKER_OPEN_SECONDS,
        probe_seconds,
        settings.REDIS_URL,
    )
    cached = _shared.get(name)
    if cached is None or cached[0] != policy:
        breaker = CircuitBreaker(
            name, failure_exceptions=failure_exceptions, probe_seconds=probe_seconds, describe_failure=describe_failure
        )
        cached = _shared[name] = (policy, breaker)
    return cached[1]
