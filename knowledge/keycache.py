"""API keys kept by each process between requests, checked against a Redis epoch on every request.

Authenticating a request needs the key, its grants and each granted knowledge base's generation.
Each process keeps the keys it loaded together with the epoch it read before loading them; a
request reads the epoch (one Redis GET, cheaper than the query and no load on PostgreSQL) and
reloads the key when the epoch moved on.

Every write that authentication reads moves the epoch on: keys, grants and knowledge bases, a
generation bump included (a search must never key its result cache on an old generation). The
models' signals and their querysets' `update` call `bump_epoch`, which forgets this process's keys
and sets a new epoch at once and again after the transaction commits (a process that reloaded in
between read the old rows). What Redis did not hear (it was down, or the row was changed by hand in
SQL) is picked up within KB_KEY_CACHE_SECONDS; while Redis cannot be read, keys are not reused.
"""

import logging
import secrets
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from kbportal.redis_gate import CACHE_ERRORS, log_cache_error


class Key(Protocol):
    """What the cache needs of a key (knowledge.models.ApiKey)."""

    def matches(self, secret: str) -> bool: ...


K = TypeVar("K", bound=Key)
logger = logging.getLogger(__name__)

EPOCH_NAME = "auth-epoch"
#: Beyond this many cached keys the cache starts over (a bound, not a working size).
MAX_KEYS = 10_000

#: prefix -> (epoch it was loaded under, monotonic load time, the key with its grants)
_keys: dict[str, tuple[bytes, float, Key]] = {}


def current_epoch() -> bytes | None:
    """The epoch; a new one when Redis has none (flushed or restarted); None when Redis fails."""
    name = cache.make_key(EPOCH_NAME)
    try:
        client = cache.client.get_client(write=True)
        epoch = client.get(name)
        if epoch is None:
            client.set(name, secrets.token_hex(8), nx=True)
            epoch = client.get(name)
    except CACHE_ERRORS as exc:
        log_cache_error(logger, "API key cache bypassed, its epoch is unreadable", exc)
        return None
    return epoch


def cached_key(prefix: str, secret: str, load: Callable[[str], K | None]) -> K | None:
    """The key with this prefix: this process's copy while the epoch holds, else `load(prefix)`.

    The copy serves only the right secret: a wrong one is looked up like an unknown prefix, so
    the time of a refusal does not tell which prefixes exist (or were used lately).
    """
    max_age = settings.KB_KEY_CACHE_SECONDS
    epoch = current_epoch() if max_age > 0 else None
    if epoch is None:
        return load(prefix)
    now = time.monotonic()
    entry = _keys.get(prefix)
    if entry is not None and entry[0] == epoch and now - entry[1] < max_age and entry[2].matches(secret):
        return entry[2]
    key = load(prefix)
    if key is None:
        _keys.pop(prefix, None)
        return None
    if len(_keys) >= MAX_KEYS:
        _keys.clear()
    _keys[prefix] = (epoch, now, key)
    return key


def bump_epoch() -> None:
    """Make every process reload its keys: now, and once more after the current transaction commits."""
    _new_epoch()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(_new_epoch, robust=True)


def _new_epoch() -> None:
    _keys.clear()
    try:
        cache.client.get_client(write=True).set(cache.make_key(EPOCH_NAME), secrets.token_hex(8))
    except CACHE_ERRORS as exc:
        logger.warning("API key cache epoch not moved on (other processes catch up within %ss): %s",
                       settings.KB_KEY_CACHE_SECONDS, exc)
