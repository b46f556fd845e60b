"""Fixed-window rate limits counted in Redis: one round trip per counted request.

Used by the API (per key, per staff user, per client IP) and the login throttle. Rates read
"50/s", "600/m", "10000/h", "5/d", or with a count of units, "10/15m". Each counter's window is
offset by a hash of its name, so the windows of many callers do not all end at the same second.

This replaces django-ratelimit, whose counting (`cache.add`, then django-redis's `incr`, a Lua
script) took two round trips and was a sixth of a cached search's CPU. Here a request is one
`INCR` of a key named after its window; the first request of a window also sets its expiry. A
process that dies between the two leaves one key without expiry: it is never read again (the
next window has another name), so it costs a few bytes and never blocks anybody.
"""

from __future__ import annotations

import ipaddress
import re
import time
import zlib
from dataclasses import dataclass

from django.core.cache import cache
from django.http import HttpRequest

RATE_PATTERN = r"^(\d+)/(\d*)([smhd])$"
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_rate = re.compile(RATE_PATTERN)


@dataclass(frozen=True)
class Usage:
    count: int
    limit: int
    #: Seconds until this window ends (at least 1).
    seconds_left: int

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit


def parse_rate(rate: str) -> tuple[int, int]:
    """(requests, period in seconds) of a rate such as "50/s"; ValueError otherwise."""
    match = _rate.match(rate or "")
    if match is None:
        raise ValueError(f"Not a rate: {rate!r} (use e.g. 50/s, 600/m, 10000/h or 10/15m).")
    requests, units, unit = match.groups()
    return int(requests), int(units or 1) * PERIOD_SECONDS[unit]


def client_ip(request: HttpRequest) -> str:
    """The client address for per-IP counters; IPv6 clients count per /64 (one host's range)."""
    address = request.META.get("REMOTE_ADDR") or "unknown"
    if ":" in address:
        try:
            return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address)
        except ValueError:
            return address
    return address


def _window(name: str, period: int) -> tuple[str, int]:
    """The cache key of `name`'s current window and the seconds left in it."""
    now = int(time.time())
    offset = zlib.crc32(name.encode()) % period
    end = now - (now - offset) % period + period
    return cache.make_key(f"rl:{name}:{period}:{end}"), end - now


def hit(group: str, value: str, rate: str) -> Usage:
    """Count one request against `value`'s budget in `group`; Redis errors propagate."""
    limit, period = parse_rate(rate)
    key, seconds_left = _window(f"{group}:{value}", period)
    client = cache.client.get_client(write=True)
    count = client.incr(key)
    if count == 1:
        client.expire(key, seconds_left + 1)
    return Usage(count, limit, max(1, seconds_left))


def peek(group: str, value: str, rate: str) -> Usage:
    """The current count, without counting; Redis errors propagate."""
    limit, period = parse_rate(rate)
    key, seconds_left = _window(f"{group}:{value}", period)
    count = cache.client.get_client(write=False).get(key)
    return Usage(int(count or 0), limit, max(1, seconds_left))
