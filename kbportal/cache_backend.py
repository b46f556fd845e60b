"""The django-redis cache backend with one client per process.

Django keeps a cache object per thread and per async context, so under ASGI every request got a
fresh `RedisCache`, which built a fresh django-redis client and `redis.Redis` on its first call
(about 0.25 ms of CPU, mostly redis-py copying its response-callback table). The connection pool
was already shared; now the client over it is too. redis-py clients are thread-safe, and the pool
reconnects after a fork or a Redis restart. Its connections skip a Redis that hangs
(`kbportal.redis_gate`, set as CONNECTION_POOL_CLASS in settings).
"""

import logging

import redis
from django_redis.cache import RedisCache as DjangoRedisCache
from django_redis.client import DefaultClient
from django_redis.exceptions import ConnectionInterrupted

from kbportal.redis_gate import RedisSkipped

#: What a Redis failure looks like through the cache (callers that can go on without it catch these).
CACHE_ERRORS = (redis.RedisError, ConnectionInterrupted, OSError)


def log_cache_error(log: logging.Logger, message: str, error: BaseException) -> None:
    """Log a Redis failure the caller goes on without: `message: error`.

    A warning, except while Redis is being skipped (`kbportal.redis_gate`), which logged the
    outage once: then debug, so an outage does not log a line per request and call site.
    """
    skipped = isinstance(error, RedisSkipped) or isinstance(error.__cause__, RedisSkipped)
    log.log(logging.DEBUG if skipped else logging.WARNING, "%s: %s", message, error, stacklevel=2)


_clients: dict[str, DefaultClient] = {}


class RedisCache(DjangoRedisCache):
    @property
    def client(self) -> DefaultClient:
        if self._client is None:
            key = repr((self._server, self._params))  # the same settings, the same client
            shared = _clients.get(key)
            if shared is None:
                shared = _clients.setdefault(key, self._client_cls(self._server, self._params, self))
            self._client = shared
        return self._client
