"""The circuit breaker every call to a backing service (search server, object store, LLM) goes through.

Unlike pybreaker, no lock is held while the wrapped call runs, so concurrent calls in a threaded
or async server stay concurrent. State lives in Redis under `kb:breaker:<name>:` so every process
sees the same breaker:

- `window`  hash of per-second buckets (`c:<second>` calls, `f:<second>` failures)
- `open`    opened_at, with a TTL of `open_seconds`: while it exists the breaker fails fast
- `tripped` opened_at, no TTL: the breaker tripped and waits for a successful probe; once `open`
            has expired the breaker is half-open
- `probe`   the half-open probe slot, taken with SET NX by exactly one caller in any process

Each step is one Lua script, so admitting a call and recording its outcome are one round trip
each and atomic across processes. Time comes from Redis (TIME) so process clocks do not matter.
A closed breaker does not ask Redis on every call:

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
through and counts as a success, since the service answered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from kbportal import metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "kb:breaker:"
#: Redis must answer a breaker within this, or the breaker goes on without it.
REDIS_TIMEOUT = 0.25
#: After a Redis error, use in-memory state this long before trying Redis again.
REDIS_RETRY_SECONDS = 5.0
#: How long a process reuses a "closed" verdict before asking again (one round trip less per call).
ADMIT_REUSE_SECONDS = 0.25
#: How long a process may hold its successes before recording them (one round trip less per call).
SUCCESS_RECORD_SECONDS = 1.0

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitOpen(Exception):
    """The breaker is open (or half-open with its probe taken): the call was not made."""

    def __init__(self, name: str, retry_after: float):
        super().__init__(f"circuit {name!r} is open; retry after {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


@dataclass(frozen=True)
class Policy:
    failure_ratio: float
    min_calls: int
    window_seconds: int
    open_seconds: float
    #: How long the half-open probe slot is held; keep it above the wrapped call's own timeout,
    #: or a second probe may start while the first is still running.
    probe_seconds: float


@dataclass(frozen=True)
class Snapshot:
    open_left: float  # seconds the breaker stays open; 0 when not open
    opened_at: float | None  # epoch seconds of the last trip, None when closed
    calls: int
    failures: int


# --- Redis storage -------------------------------------------------------------------------------

# KEYS: open, tripped, probe   ARGV: probe_ms   -> {verdict, retry_after_ms}
ADMIT = """
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {'open', left} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'closed', 0} end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return {'probe', 0} end
return {'open', redis.call('PTTL', KEYS[3])}
"""

# KEYS: window, open, tripped   ARGV: calls, failed, window_s, min_calls, ratio, open_ms   -> 1 if tripped now
# `calls` outcomes, the last of which failed when `failed` is 1.
RECORD = """
-- A call admitted before the trip finishing now says nothing the probe will not say.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1])
local window = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[1], 'c:' .. now, tonumber(ARGV[1]))
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'f:' .. now, 1) end
redis.call('EXPIRE', KEYS[1], window + 1)
local calls, failures = 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if tonumber(string.sub(fields[i], 3)) <= now - window then
    redis.call('HDEL', KEYS[1], fields[i])
  elseif string.sub(fields[i], 1, 1) == 'c' then
    calls = calls + tonumber(fields[i + 1])
  else
    failures = failures + tonumber(fields[i + 1])
  end
end
if ARGV[2] == '1' and calls >= tonumber(ARGV[4]) and failures >= tonumber(ARGV[5]) * calls then
  local opened_at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[2], opened_at, 'PX', ARGV[6])
  redis.call('SET', KEYS[3], opened_at)
  return 1
end
return 0
"""

# KEYS: window, open, tripped, probe   ARGV: failed, open_ms   -> 1 if the verdict was applied
PROBE_DONE = """
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if ARGV[1] == '1' then
  local t = redis.call('TIME')
  local opened_at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[2], opened_at, 'PX', ARGV[2])
  redis.call('SET', KEYS[3], opened_at)
else
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
return 1
"""

# KEYS: window, open, tripped   ARGV: window_s   -> {open_ms, opened_at or '', calls, failures}
SNAPSHOT = """
local now = tonumber(redis.call('TIME')[1])
local calls, failures = 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if tonumber(string.sub(fields[i], 3)) > now - tonumber(ARGV[1]) then
    if string.sub(fields[i], 1, 1) == 'c' then
      calls = calls + tonumber(fields[i + 1])
    else
      failures = failures + tonumber(fields[i + 1])
    end
  end
end
return {math.max(redis.call('PTTL', KEYS[2]), 0), redis.call('GET', KEYS[3]) or '', calls, failures}
"""

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_client(url: str) -> redis.Redis:
    """One client (connection pool) per URL, shared by every breaker in the process."""
    with _clients_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(
                url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                # One immediate retry survives a stale pooled connection; backoff would make a
                # Redis outage slow every call.
                retry=Retry(NoBackoff(), 1),
                decode_responses=True,
            )
        return _clients[url]


class RedisStore:
    def __init__(self, name: str, policy: Policy, client: redis.Redis):
        self.policy = policy
        self.client = client
        prefix = f"{KEY_PREFIX}{name}:"
        self.window, self.open, self.tripped, self.probe = (
            prefix + part for part in ("window", "open", "tripped", "probe")
        )
        self._admit = client.register_script(ADMIT)
        self._record = client.register_script(RECORD)
        self._probe_done = client.register_script(PROBE_DONE)
        self._snapshot = client.register_script(SNAPSHOT)

    def admit(self) -> tuple[str, float]:
        verdict, left_ms = self._admit(
            keys=[self.open, self.tripped, self.probe], args=[int(self.policy.probe_seconds * 1000)]
        )
        return verdict, left_ms / 1000

    def record(self, calls: int, failed: bool) -> bool:
        p = self.policy
        args = [calls, int(failed), p.window_seconds, p.min_calls, p.failure_ratio, int(p.open_seconds * 1000)]
        return bool(self._record(keys=[self.window, self.open, self.tripped], args=args))

    def probe_done(self, failed: bool) -> bool:
        keys = [self.window, self.open, self.tripped, self.probe]
        return bool(self._probe_done(keys=keys, args=[int(failed), int(self.policy.open_seconds * 1000)]))

    def release_probe(self) -> None:
        self.client.delete(self.probe)

    def snapshot(self) -> Snapshot:
        open_ms, opened_at, calls, failures = self._snapshot(
            keys=[self.window, self.open, self.tripped], args=[self.policy.window_seconds]
        )
        return Snapshot(open_ms / 1000, float(opened_at) if opened_at else None, calls, failures)

    def reset(self) -> None:
        self.client.delete(self.window, self.open, self.tripped, self.probe)


# --- In-memory fallback --------------------------------------------------------------------------


@dataclass
class MemoryState:
    """One breaker's state in this process; the lock is held only for these few field updates."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    buckets: dict[int, list[int]] = field(default_factory=dict)  # second -> [calls, failures]
    opened_at: float | None = None  # epoch seconds; set while tripped
    open_until: float = 0.0  # monotonic
    probe_until: float = 0.0  # monotonic


_memory: dict[str, MemoryState] = {}
_memory_lock = threading.Lock()


class MemoryStore:
    """The same operations as RedisStore on per-process state (shared by same-named breakers)."""

    def __init__(self, name: str, policy: Policy):
        self.policy = policy
        with _memory_lock:
            self.state = _memory.setdefault(name, MemoryState())

    def admit(self) -> tuple[str, float]:
        s, now = self.state, time.monotonic()
        with s.lock:
            if s.open_until > now:
                return OPEN, s.open_until - now
            if s.opened_at is None:
                return CLOSED, 0.0
            if s.probe_until <= now:
                s.probe_until = now + self.policy.probe_seconds
                return "probe", 0.0
            return OPEN, s.probe_until - now

    def record(self, calls: int, failed: bool) -> bool:
        s, p = self.state, self.policy
        with s.lock:
            if s.opened_at is not None:
                return False
            second = int(time.time())
            bucket = s.buckets.setdefault(second, [0, 0])
            bucket[0] += calls
            bucket[1] += int(failed)
            for old in [sec for sec in s.buckets if sec <= second - p.window_seconds]:
                del s.buckets[old]
            if not failed:
                return False
            calls = sum(b[0] for b in s.buckets.values())
            failures = sum(b[1] for b in s.buckets.values())
            if calls >= p.min_calls and failures >= p.failure_ratio * calls:
                self._open()
                return True
            return False

    def probe_done(self, failed: bool) -> bool:
        s = self.state
        with s.lock:
            s.probe_until = 0.0
            if s.opened_at is None:
                return False
            if failed:
                self._open()
            else:
                s.buckets.clear()
                s.opened_at, s.open_until = None, 0.0
            return True

    def _open(self) -> None:
        self.state.opened_at = time.time()
        self.state.open_until = time.monotonic() + self.policy.open_seconds

    def release_probe(self) -> None:
        with self.state.lock:
            self.state.probe_until = 0.0

    def snapshot(self) -> Snapshot:
        s = self.state
        with s.lock:
            since = int(time.time()) - self.policy.window_seconds
            live = [b for sec, b in s.buckets.items() if sec > since]
            return Snapshot(
                max(s.open_until - time.monotonic(), 0.0),
                s.opened_at,
                sum(b[0] for b in live),
                sum(b[1] for b in live),
            )

    def reset(self) -> None:
        s = self.state
        with s.lock:
            s.buckets.clear()
            s.opened_at, s.open_until, s.probe_until = None, 0.0, 0.0


# --- The breaker ---------------------------------------------------------------------------------

_known: dict[str, CircuitBreaker] = {}


def known_breakers() -> list[CircuitBreaker]:
    """Breakers created in this process (one per name)."""
    return list(_known.values())



class CircuitBreaker:
    """A named breaker; every instance with the same name (in any process) shares one state.

    `transitions` counts the transitions this process caused ("closed->open", "open->half_open",
    "half_open->closed", "half_open->open"); `on_transition(name, old, new)` is called for each.
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
    ):
        self.name = name
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
        except self.failure_exceptions:
            self._finish(probe, failed=True)
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

    def record_failure(self) -> None:
        """Count a failure observed outside `call()`/`guard()`; may open the breaker."""
        self._finish(False, failed=True)

    def state(self) -> dict[str, Any]:
        """For /health/ready and the dashboard (with this process's held successes recorded first)."""
        held = self._take_successes(failed=False, now=True)
        if held:
            self._run("record", held, False)
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
        verdict, retry_after = self._run("admit")
        if verdict == OPEN:
            raise CircuitOpen(self.name, retry_after)
        if verdict == "probe":
            self._transition(OPEN, HALF_OPEN)
            return True
        self._closed_until = time.monotonic() + ADMIT_REUSE_SECONDS
        return False

    def _finish(self, probe: bool, *, failed: bool) -> None:
        if probe:
            if self._run("probe_done", failed):
                self._transition(HALF_OPEN, OPEN if failed else CLOSED)
            return
        calls = self._take_successes(failed=failed)
        if calls and self._run("record", calls, failed):
            self._transition(CLOSED, OPEN)

    def _take_successes(self, *, failed: bool, now: bool = False) -> int:
        """The outcomes to record now, this one included: 0 while successes are being held.

        A success is held until SUCCESS_RECORD_SECONDS have passed since the last record; a
        failure (or `now`) takes every held success with it.
        """
        with self._successes_lock:
            if not failed and not now:
                self._successes += 1
                if self._successes_due > time.monotonic():
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
    name: str, *, failure_exceptions: tuple[type[BaseException], ...], call_seconds: float
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
        breaker = CircuitBreaker(name, failure_exceptions=failure_exceptions, probe_seconds=probe_seconds)
        cached = _shared[name] = (policy, breaker)
    return cached[1]
