"""Login throttling for the dashboard (/accounts/login/) and the admin (/admin/login/).

Failed sign-ins are counted per client IP (KB_LOGIN_RATE_IP) and per user name
(KB_LOGIN_RATE_USER, case-insensitive) in django-ratelimit's fixed windows in Redis. Once
either count reaches its limit, further sign-in POSTs are answered 429 with a Retry-After header
and are not checked at all - even a correct password waits for the window to end, so guessing
gains nothing. GETs (showing the form) and successful sign-ins are not counted.
Redis down: the throttle fails open (logged), like the API rate limits; sign-in keeps working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage

from kbportal import metrics
from kbportal.redis_gate import CACHE_ERRORS, log_cache_error

logger = logging.getLogger(__name__)


def _username(request: HttpRequest) -> str:
    return (request.POST.get("username") or "").strip().lower()


def _budgets(request: HttpRequest) -> list[tuple[str, str | Callable[..., str], str]]:
    """(group, django-ratelimit key, rate) of each failure counter this POST belongs to."""
    budgets: list[tuple[str, str | Callable[..., str], str]] = [("login:ip", "ip", settings.KB_LOGIN_RATE_IP)]
    username = _username(request)
    if username:
        budgets.append(("login:user", lambda _group, _request: username, settings.KB_LOGIN_RATE_USER))
    return budgets


def seconds_blocked(request: HttpRequest) -> int:
    """0 when this sign-in may be tried, else the seconds until the failure window ends."""
    wait = 0
    for group, key, rate in _budgets(request):
        usage = get_usage(request, group=group, key=key, rate=rate)  # None: not counted (fail open)
        if usage is not None and usage["count"] >= usage["limit"]:
            wait = max(wait, usage["time_left"] + 1)  # the window still counts at its last second
    return wait


def count_failure(request: HttpRequest) -> None:
    for group, key, rate in _budgets(request):
        get_usage(request, group=group, key=key, rate=rate, increment=True)


def throttle_login(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a login view: refuse POSTs over the failure budget, count the POSTs that fail."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        try:
            wait = seconds_blocked(request)
        except CACHE_ERRORS as exc:
            log_cache_error(logger, "login throttle not applied, counter unavailable", exc)
            return view(request, *args, **kwargs)
        if wait:
            metrics.record_rate_limited("login")
            response = render(request, "429.html", {"minutes": max(1, round(wait / 60))}, status=429)
            response["Retry-After"] = str(wait)
            return response
        response = view(request, *args, **kwargs)
        if response.status_code == 200:  # the form came back: the credentials were refused
            try:
                count_failure(request)
            except CACHE_ERRORS as exc:
                log_cache_error(logger, "login failure not counted, counter unavailable", exc)
        return response

    return wrapper
