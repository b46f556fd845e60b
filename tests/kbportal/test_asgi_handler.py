"""kbportal.asgi_handler: the middleware chain and the view run in one thread hop, on reused threads."""

import json
import subprocess
import sys
import threading

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.conf import settings

from bench.processes import process_environment
from kbportal import middleware
from kbportal.asgi_handler import RequestThreads, SyncChainASGIHandler


def get(handler, path: str) -> tuple[dict, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }

    async def exchange():
        app = ApplicationCommunicator(handler, scope)
        await app.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await app.receive_output(10)
        body = await app.receive_output(10)
        await app.wait(10)
        return start, body["body"]

    return async_to_sync(exchange)()


def test_the_chain_is_sync_and_one_thread_runs_the_middlewares_and_the_view(monkeypatch):
    threads = set()
    before = middleware.RequestIdMiddleware.before

    def noting_before(self, request):
        threads.add(threading.get_ident())
        return before(self, request)

    monkeypatch.setattr(middleware.RequestIdMiddleware, "before", noting_before)
    handler = SyncChainASGIHandler()
    assert not iscoroutinefunction(handler._middleware_chain)
    start, body = get(handler, "/health/live")
    headers = {name.lower(): value for name, value in start["headers"]}
    assert start["status"] == 200 and body
    # Ours (first in the chain) and Django's (last): the whole chain ran.
    assert headers[b"x-request-id"] and headers[b"x-frame-options"] == b"DENY"
    assert len(threads) == 1 and threading.get_ident() not in threads  # the request's own thread
    get(handler, "/health/live")
    assert len(threads) == 1  # the next request ran on the same thread, given back after the first


def test_a_thread_still_running_an_abandoned_request_is_not_given_to_the_next_one():
    threads = RequestThreads(keep=4)
    busy, idle = threads.take(), threads.take()
    release = threading.Event()
    busy.submit(release.wait)  # sync code Django stopped waiting for (the client went away)
    idle.submit(lambda: None).result()
    threads.give_back(busy)
    threads.give_back(idle)
    assert threads.take() is idle
    assert threads.take() not in (busy, idle)
    release.set()


@pytest.mark.django_db
def test_errors_keep_the_api_shape_through_the_sync_chain():
    start, body = get(SyncChainASGIHandler(), "/api/v1/no-such-endpoint")
    assert start["status"] == 404 and b'"error":"not_found"' in body.replace(b" ", b"")


def test_web_process_start_up_leaves_the_collector_only_what_requests_make():
    """What start-up loaded is frozen (kbportal.worker.run_preload_hooks): a full collection in a web
    process walks only objects made since, instead of pausing every request for the whole heap."""
    script = (
        "import gc, json, kbportal.asgi; gc.collect();"
        "print(json.dumps([gc.get_freeze_count(), len(gc.get_objects())]))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=settings.BASE_DIR, env=process_environment(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frozen, collectable = json.loads(result.stdout.splitlines()[-1])
    assert frozen > 100_000  # Django, DRF, Channels and the preloaded embedder
    assert collectable < frozen / 20
