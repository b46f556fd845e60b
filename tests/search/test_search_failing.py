"""/health/ready and the dashboard Overview while searches fail, through the real "search" breaker.

The test search server is reached through a TCP proxy: closing the proxy refuses connections, as
a stopped node does. A socket that accepts connections and never answers stands for a node that
hangs, so searches time out. In both cases the proxy is opened again before readiness is asked:
the server then answers health checks while the breaker, which saw the searches fail, stays open.
"""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from search.client import reset_client
from search.errors import SearchDown
from search.services import SearchAnswer, search_breaker, search_knowledge
from tests.search.search_kbs import make_kb
from tests.support import TcpProxy

pytestmark = pytest.mark.django_db

OPEN_SECONDS = 2


@pytest.fixture
def proxy(settings, search_index):
    """The test search server behind a proxy of this test's own; a breaker that trips after 2 calls."""
    proxy = TcpProxy(urlsplit(settings.KB_ES_URL).port)
    proxy.start()
    settings.KB_ES_URL = f"http://127.0.0.1:{proxy.port}"
    settings.KB_ES_TIMEOUT = 1.0
    settings.KB_BREAKER_MIN_CALLS = 2
    settings.KB_BREAKER_FAILURE_RATIO = 0.5
    settings.KB_BREAKER_OPEN_SECONDS = OPEN_SECONDS
    reset_client()
    try:
        yield proxy
    finally:
        proxy.stop()
        reset_client()


@pytest.fixture
def hanging_server():
    """Accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


class Answers503(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "overloaded", "status": 503}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def overloaded_server():
    """An HTTP server that answers every search with 503, as an overloaded cluster or its proxy does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers503)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def kb(db):
    return make_kb("f")


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True))
    return client


def search(kb, query: str) -> SearchAnswer:
    return search_knowledge(kb_slugs=[kb.slug], query=query, mode="keyword")


def fail_searches_until_the_breaker_opens(kb) -> None:
    for n in range(10):
        with pytest.raises(SearchDown):
            search(kb, f"failing query {n}")
        if search_breaker().state()["state"] == "open":
            return
    raise AssertionError("the breaker never opened")


def ready_search(client) -> tuple[int, dict]:
    response = client.get("/health/ready")
    return response.status_code, response.json()


def test_ready_is_503_with_connection_refused_while_the_breaker_is_open_though_the_server_answers(
    client, proxy, kb
):
    proxy.stop()
    fail_searches_until_the_breaker_opens(kb)
    proxy.start()
    status, body = ready_search(client)
    assert (status, body["status"], body["down"]) == (503, "down", ["search"])
    search_check = body["components"]["search"]
    assert search_check["status"] == "down"
    assert search_check["reason"] == "connection refused"
    assert search_check["breaker"]["state"] == "open"
    assert search_check["failing_for"].endswith(" s") and 0 <= search_check["failing_seconds"] < 30
    assert search_check["failing_since"].endswith("+00:00")
    assert search_check["error"].startswith("failing: connection refused, for ")
    assert body["components"]["database"]["status"] == "up"


def test_ready_names_the_timeout_of_searches_that_hang(client, proxy, kb, settings, hanging_server):
    settings.KB_ES_URL = hanging_server
    reset_client()
    fail_searches_until_the_breaker_opens(kb)
    settings.KB_ES_URL = f"http://127.0.0.1:{proxy.port}"
    reset_client()
    status, body = ready_search(client)
    assert status == 503
    assert body["components"]["search"]["reason"] == "timed out after 1 s"


def test_ready_names_a_search_server_answering_503(client, proxy, kb, settings, overloaded_server):
    settings.KB_ES_URL = overloaded_server
    reset_client()
    fail_searches_until_the_breaker_opens(kb)
    status, body = ready_search(client)
    assert status == 503
    assert body["components"]["search"]["reason"] == "search server answered 503"


def test_one_failed_search_makes_search_failing_until_a_search_succeeds(client, proxy, kb):
    proxy.stop()
    with pytest.raises(SearchDown):
        search(kb, "lighthouse")
    proxy.start()
    status, body = ready_search(client)
    assert status == 503
    assert body["components"]["search"]["reason"] == "connection refused"
    assert body["components"]["search"]["breaker"]["state"] == "closed"
    assert search(kb, "lighthouse").hits == []  # answered (the knowledge base is empty)
    status, body = ready_search(client)
    assert (status, body["components"]["search"]["status"]) == (200, "up")
    assert "reason" not in body["components"]["search"]


def test_ready_without_failed_searches_still_names_an_unreachable_server(client, proxy):
    proxy.stop()
    status, body = ready_search(client)
    assert status == 503
    assert body["components"]["search"]["reason"] == "connection refused"
    assert "failing_for" not in body["components"]["search"]


def test_overview_shows_search_failing_with_its_reason_then_up_after_recovery(staff_client, proxy, kb):
    proxy.stop()
    fail_searches_until_the_breaker_opens(kb)
    proxy.start()
    page = staff_client.get(reverse("dashboard:overview")).content.decode()
    assert "search failing: connection refused" in page
    assert 'data-component="search"><span class="badge badge-down">down</span>' in page

    time.sleep(search_breaker().state()["retry_after"] + 0.1)
    assert search(kb, "lighthouse").hits == []  # the half-open probe succeeds (the knowledge base is empty)
    assert search_breaker().state()["state"] == "closed"
    page = staff_client.get(reverse("dashboard:overview")).content.decode()
    assert "search failing" not in page
    assert 'data-component="search"><span class="badge badge-up">up</span>' in page
