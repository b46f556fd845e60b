"""Liveness and readiness. Apps register their component checks in `AppConfig.ready()`.

Each check runs in its own thread with a deadline, so one hanging component cannot hold the
answer: /health/ready answers within KB_HEALTH_TIMEOUT (+ a little) whatever happens. A check
that raises `ComponentDown` says why in its own words and adds its details to the answer.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import redis
from django.conf import settings
from django.db import connections
from django.http import JsonResponse

#: name -> callable returning a dict of details, raising when the component is down.
CHECKS: dict[str, Callable[[], dict]] = {}
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="health")


class ComponentDown(Exception):
    """A check's verdict "down": the message is the answer's `error`, `details` are added beside it."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


def register(name: str, check: Callable[[], dict]) -> None:
    CHECKS[name] = check


def check_database() -> dict:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connections["default"].close()
    return {}


def check_redis() -> dict:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=settings.KB_HEALTH_TIMEOUT, socket_connect_timeout=settings.KB_HEALTH_TIMEOUT
    )
    try:
        client.ping()
    finally:
        client.close()
    return {}


register("database", check_database)
register("redis", check_redis)


def _timed(check: Callable[[], dict]) -> dict:
    started = time.perf_counter()
    details = check()
    return {"status": "up", "ms": round((time.perf_counter() - started) * 1000, 1), **details}


def run_checks(timeout: float | None = None) -> dict[str, dict]:
    timeout = timeout or settings.KB_HEALTH_TIMEOUT
    futures = {name: _pool.submit(_timed, check) for name, check in CHECKS.items()}
    wait(futures.values(), timeout=timeout)
    results = {}
    for name, future in futures.items():
        if not future.done():
            results[name] = {"status": "down", "error": f"no answer within {timeout}s"}
        elif isinstance(future.exception(), ComponentDown):
            results[name] = {"status": "down", "error": str(future.exception())[:300], **future.exception().details}
        elif future.exception() is not None:
            results[name] = {
                "status": "down",
                "error": f"{type(future.exception()).__name__}: {future.exception()}"[:300],
            }
        else:
            results[name] = future.result()
    return results


def live(request):
    return JsonResponse({"status": "up"})


def ready(request):
    components = run_checks()
    down = sorted(name for name, result in components.items() if result["status"] != "up")
    body = {"status": "down" if down else "up", "down": down, "components": components}
    return JsonResponse(body, status=503 if down else 200)
