"""Redis connections that fail fast while their server does not answer.

What the web processes keep in Redis they can go on without: the result and embedding caches,
rate-limit counters, the API-key epoch, job doorbells (the sweeper rings them again). Every caller
catches the error (`CACHE_ERRORS`, logged by `log_cache_error`) and goes on. When Redis refuses
connections that costs nothing, but when it hangs instead (stopped, swapping, a network
partition) each command waits for the socket timeout: a search touches Redis five times, so with
a 1 s timeout every search would take 5 s.

Connections from `GatedConnectionPool` share one gate per server address in the process. A
timeout, or a connection that cannot be opened, closes the gate for SKIP_SECONDS: commands to
that server then fail at once with `RedisSkipped` (a `redis.ConnectionError`, which callers
already catch), and the outage is logged once. When the time is up, one thread tries Redis again
while the others go on skipping; the first answer opens the gate for everyone.

A connection that breaks while Redis answers (a restart left a stale pooled socket) does not
close the gate: redis-py's retry reconnects, and only if that fails is Redis taken to be down.
The circuit breaker (`kbportal.breaker`) has its own Redis client and in-memory fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache, cached_property

import redis
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

#: How long commands to a server that timed out or refused a connection fail without trying.
SKIP_SECONDS = 5.0


class RedisSkipped(RedisConnectionError):
    """Not sent: this server failed moments ago and is being skipped (see the module docstring)."""


#: What a Redis failure looks like through the cache (callers that can go on without it catch these).
CACHE_ERRORS = (redis.RedisError, ConnectionInterrupted, OSError)


def log_cache_error(log: logging.Logger, message: str, error: BaseException) -> None:
    """Log a Redis failure the caller goes on without: `message: error`.

    A warning, except while Redis is being skipped, which logged the outage once: then debug, so
    an outage does not log a line per request and call site.
    """
    skipped = isinstance(error, RedisSkipped) or isinstance(error.__cause__, RedisSkipped)
    log.log(logging.DEBUG if skipped else logging.WARNING, "%s: %s", message, error, stacklevel=2)


class Gate:
    """Whether commands to one Redis server are tried; shared by the process's connections to it."""

    def __init__(self, address: str):
        self.address = address
        self.down = False  # read without the lock on every command: the common case costs nothing
        self._lock = threading.Lock()
        self._retry_at = 0.0  # monotonic
        self._prober: int | None = None  # the thread trying Redis again
        self._error = ""

    def check(self) -> None:
        """Raise RedisSkipped while the server is being skipped (the probing thread passes)."""
        if not self.down:
            return
        with self._lock:
            if not self.down or self._prober == threading.get_ident():
                return
            now = time.monotonic()
            if now < self._retry_at:
                raise RedisSkipped(
                    f"Redis at {self.address} skipped for {self._retry_at - now:.1f}s more after: {self._error}"
                )
            self._prober = threading.get_ident()
            self._retry_at = now + SKIP_SECONDS  # the others keep skipping while this one tries

    def failed(self, error: Exception) -> None:
        with self._lock:
            was_down, self.down = self.down, True
            self._retry_at = time.monotonic() + SKIP_SECONDS
            self._prober, self._error = None, str(error)
        if not was_down:
            logger.warning("Redis at %s is not answering (%s): skipped for %gs at a time until it answers",
                           self.address, error, SKIP_SECONDS)

    def answered(self) -> None:
        if not self.down:
            return
        with self._lock:
            was_down, self.down, self._prober = self.down, False, None
        if was_down:
            logger.warning("Redis at %s answers again", self.address)


_gates: dict[str, Gate] = {}
_gates_lock = threading.Lock()


def gate_for(address: str) -> Gate:
    with _gates_lock:
        return _gates.setdefault(address, Gate(address))


class GatedConnectionMixin:
    """Put before a redis-py connection class: its commands go through the server's `Gate`."""

    @cached_property
    def gate(self) -> Gate:
        address = getattr(self, "path", None) or f"{self.host}:{self.port}"
        return gate_for(address)

    def connect_check_health(self, *args, **kwargs):
        if self._sock:
            return None
        self.gate.check()
        try:
            return super().connect_check_health(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.gate.failed(exc)
            raise

    def send_packed_command(self, *args, **kwargs):
        self.gate.check()
        try:
            return super().send_packed_command(*args, **kwargs)
        except RedisTimeoutError as exc:
            self.gate.failed(exc)
            raise

    def read_response(self, *args, **kwargs):
        try:
            response = super().read_response(*args, **kwargs)
        except RedisTimeoutError as exc:
            self.gate.failed(exc)
            raise
        self.gate.answered()
        return response


@cache
def gated(connection_class: type) -> type:
    """`connection_class` with its commands gated (one class per original, made once)."""
    return type(f"Gated{connection_class.__name__}", (GatedConnectionMixin, connection_class), {})


class GatedConnectionPool(redis.ConnectionPool):
    """A redis-py pool of gated connections, whatever the URL's scheme (TCP, TLS, Unix socket).

    django-redis takes it as CONNECTION_POOL_CLASS; elsewhere `GatedConnectionPool.from_url(...)`.
    """

    def __init__(self, connection_class: type = redis.Connection, **kwargs):
        super().__init__(connection_class=gated(connection_class), **kwargs)
