"""The circuit breaker's shared state: in Redis, with per-process memory as the fallback.

State lives in Redis under `kb:breaker:<name>:` so every process sees the same breaker:

- `window`  hash of per-second buckets (`c:<second>` calls, `f:<second>` failures)
- `open`    opened_at, with a TTL of `open_seconds`: while it exists the breaker fails fast
- `tripped` opened_at, no TTL: the breaker tripped and waits for a successful probe; once `open`
            has expired the breaker is half-open
- `probe`   the half-open probe slot, taken with SET NX by exactly one caller in any process
- `failing` hash of the current failing period: `since` (its first failure) and `reason` (the
            latest failure in words). A recorded success deletes it; while the breaker is closed
            it expires `window_seconds` after its last failure; while tripped it stays until a
            probe succeeds

Each step is one Lua script, so admitting a call and recording its outcome are one round trip
each and atomic across processes. Time comes from Redis (TIME) so process clocks do not matter.
`MemoryStore` does the same on per-process state, for while Redis cannot be reached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

KEY_PREFIX = "kb:breaker:"
#: Redis must answer a breaker within this, or the breaker goes on without it.
REDIS_TIMEOUT = 0.25

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


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


@dataclass(frozen=True)
class Failure:
    """The current failing period: the latest failure in words, and since when calls have failed."""

    reason: str
    since: float  # epoch seconds of the period's first failure
    seconds: float  # how long the period has lasted


# --- Redis storage -------------------------------------------------------------------------------

# KEYS: open, tripped, probe, failing   ARGV: probe_ms   -> {verdict, retry_after_ms, failing (1/0)}
ADMIT = """
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return {'open', left, 1} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'closed', 0, redis.call('EXISTS', KEYS[4])} end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[1]) then return {'probe', 0, 1} end
return {'open', redis.call('PTTL', KEYS[3]), 1}
"""

# KEYS: window, open, tripped, failing   ARGV: calls, failed, window_s, min_calls, ratio, open_ms, reason
#   -> 1 if tripped now
# `calls` outcomes, the last of which failed (for `reason`) when `failed` is 1.
RECORD = """
-- A call admitted before the trip finishing now says nothing the probe will not say.
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1])
local stamp = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
local window = tonumber(ARGV[3])
if ARGV[2] == '1' then
  redis.call('HSETNX', KEYS[4], 'since', stamp)
  redis.call('HSET', KEYS[4], 'reason', ARGV[7])
  redis.call('EXPIRE', KEYS[4], window)
else
  redis.call('DEL', KEYS[4])
end
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
  redis.call('SET', KEYS[2], stamp, 'PX', ARGV[6])
  redis.call('SET', KEYS[3], stamp)
  redis.call('PERSIST', KEYS[4])
  return 1
end
return 0
"""

# KEYS: window, open, tripped, probe, failing   ARGV: failed, open_ms, reason   -> 1 if the verdict was applied
PROBE_DONE = """
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
if ARGV[1] == '1' then
  local t = redis.call('TIME')
  local opened_at = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', KEYS[2], opened_at, 'PX', ARGV[2])
  redis.call('SET', KEYS[3], opened_at)
  redis.call('HSETNX', KEYS[5], 'since', opened_at)
  redis.call('HSET', KEYS[5], 'reason', ARGV[3])
  redis.call('PERSIST', KEYS[5])
else
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
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

# KEYS: failing   -> {since or '', reason or '', now}
FAILURE = """
local t = redis.call('TIME')
local failing = redis.call('HMGET', KEYS[1], 'since', 'reason')
return {failing[1] or '', failing[2] or '', t[1] .. '.' .. string.format('%06d', tonumber(t[2]))}
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
        self.window, self.open, self.tripped, self.probe, self.failing = (
            prefix + part for part in ("window", "open", "tripped", "probe", "failing")
        )
        self._admit = client.register_script(ADMIT)
        self._record = client.register_script(RECORD)
        self._probe_done = client.register_script(PROBE_DONE)
        self._snapshot = client.register_script(SNAPSHOT)
        self._failure = client.register_script(FAILURE)

    def admit(self) -> tuple[str, float, bool]:
        verdict, left_ms, failing = self._admit(
            keys=[self.open, self.tripped, self.probe, self.failing], args=[int(self.policy.probe_seconds * 1000)]
        )
        return verdict, left_ms / 1000, bool(failing)

    def record(self, calls: int, failed: bool, reason: str = "") -> bool:
        p = self.policy
        args = [calls, int(failed), p.window_seconds, p.min_calls, p.failure_ratio, int(p.open_seconds * 1000), reason]
        return bool(self._record(keys=[self.window, self.open, self.tripped, self.failing], args=args))

    def probe_done(self, failed: bool, reason: str = "") -> bool:
        keys = [self.window, self.open, self.tripped, self.probe, self.failing]
        return bool(self._probe_done(keys=keys, args=[int(failed), int(self.policy.open_seconds * 1000), reason]))

    def release_probe(self) -> None:
        self.client.delete(self.probe)

    def snapshot(self) -> Snapshot:
        open_ms, opened_at, calls, failures = self._snapshot(
            keys=[self.window, self.open, self.tripped], args=[self.policy.window_seconds]
        )
        return Snapshot(open_ms / 1000, float(opened_at) if opened_at else None, calls, failures)

    def failure(self) -> Failure | None:
        since, reason, now = self._failure(keys=[self.failing])
        if not since:
            return None
        return Failure(reason, float(since), float(now) - float(since))

    def reset(self) -> None:
        self.client.delete(self.window, self.open, self.tripped, self.probe, self.failing)


# --- In-memory fallback --------------------------------------------------------------------------


@dataclass
class MemoryState:
    """One breaker's state in this process; the lock is held only for these few field updates."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    buckets: dict[int, list[int]] = field(default_factory=dict)  # second -> [calls, failures]
    opened_at: float | None = None  # epoch seconds; set while tripped
    open_until: float = 0.0  # monotonic
    probe_until: float = 0.0  # monotonic
    failing_since: float | None = None  # epoch seconds; the failing period's first failure
    failing_reason: str = ""
    failing_until: float = 0.0  # monotonic; while closed the period ends here without a new failure


_memory: dict[str, MemoryState] = {}
_memory_lock = threading.Lock()


class MemoryStore:
    """The same operations as RedisStore on per-process state (shared by same-named breakers)."""

    def __init__(self, name: str, policy: Policy):
        self.policy = policy
        with _memory_lock:
            self.state = _memory.setdefault(name, MemoryState())

    def admit(self) -> tuple[str, float, bool]:
        s, now = self.state, time.monotonic()
        with s.lock:
            if s.open_until > now:
                return OPEN, s.open_until - now, True
            if s.opened_at is None:
                return CLOSED, 0.0, self._failing()
            if s.probe_until <= now:
                s.probe_until = now + self.policy.probe_seconds
                return "probe", 0.0, True
            return OPEN, s.probe_until - now, True

    def record(self, calls: int, failed: bool, reason: str = "") -> bool:
        s, p = self.state, self.policy
        with s.lock:
            if s.opened_at is not None:
                return False
            if failed:
                self._fail(reason)
            else:
                s.failing_since = None
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

    def probe_done(self, failed: bool, reason: str = "") -> bool:
        s = self.state
        with s.lock:
            s.probe_until = 0.0
            if s.opened_at is None:
                return False
            if failed:
                self._fail(reason)
                self._open()
            else:
                s.buckets.clear()
                s.opened_at, s.open_until, s.failing_since = None, 0.0, None
            return True

    def _open(self) -> None:
        self.state.opened_at = time.time()
        self.state.open_until = time.monotonic() + self.policy.open_seconds

    def _failing(self) -> bool:
        s = self.state
        return s.failing_since is not None and (s.opened_at is not None or s.failing_until > time.monotonic())

    def _fail(self, reason: str) -> None:
        s = self.state
        if not self._failing():
            s.failing_since = time.time()
        s.failing_reason = reason
        s.failing_until = time.monotonic() + self.policy.window_seconds

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

    def failure(self) -> Failure | None:
        s = self.state
        with s.lock:
            if not self._failing():
                return None
            return Failure(s.failing_reason, s.failing_since, time.time() - s.failing_since)

    def reset(self) -> None:
        s = self.state
        with s.lock:
            s.buckets.clear()
            s.opened_at, s.open_until, s.probe_until, s.failing_since = None, 0.0, 0.0, None

