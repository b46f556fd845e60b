"""The search circuit breaker against a real search server that the tests stop and restart.

The tests share one Elasticsearch node of their own, reached through a TCP proxy: "stopping the
server" closes the proxy (connections refused, as from a stopped node) and starting it opens the
proxy again at once, where a real restart takes 11-30 s (tests/ops/test_faults.py restarts a real
node). "Freezing" stops the node's process itself, so calls hang. Each test has its own alias.
"""

import threading
import time
import uuid

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from search.client import reset_client
from search.index import ensure_index
from search.indexer import forget_ensured
from search.services import search_breaker
from tests.search.search_kbs import SEARCH_URL, bearer, ingest, make_kb
from tests.support import ElasticsearchNode, TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)

OPEN_SECONDS = 4
DOCS = {"Lighthouse keeping": "The keeper trims the lamp wick and winds the clockwork every night."}


@pytest.fixture(scope="module")
def es_node():
    node = ElasticsearchNode()
    try:
        node.start()
        yield node
    finally:
        node.destroy()


class ProxiedNode:
    """The module's node as a test sees it: stop/start close and open the proxy, freeze/thaw the node."""

    def __init__(self, node: ElasticsearchNode):
        self.node = node
        self.proxy = TcpProxy(node.port)
        self.url = f"http://127.0.0.1:{self.proxy.port}"

    def start(self) -> None:
        self.proxy.start()

    def stop(self) -> None:
        self.proxy.stop()

    def freeze(self) -> None:
        self.node.freeze()

    def thaw(self) -> None:
        self.node.thaw()


@pytest.fixture
def server(es_node, settings):
    """The module's node behind a proxy of this test's own, with an index alias of its own."""
    server = ProxiedNode(es_node)
    server.start()
    settings.KB_ES_URL = server.url
    settings.KB_ES_INDEX = f"test_breaker_{uuid.uuid4().hex[:12]}"
    settings.KB_ES_TIMEOUT = 1.0
    reset_client()
    forget_ensured()
    ensure_index(dims=384)
    settings.KB_BREAKER_MIN_CALLS = 4
    settings.KB_BREAKER_FAILURE_RATIO = 0.5
    settings.KB_BREAKER_OPEN_SECONDS = OPEN_SECONDS
    reset_client()
    try:
        yield server
    finally:
        server.thaw()
        server.stop()
        reset_client()
        forget_ensured()


@pytest.fixture
def kb(server):
    kb = make_kb("b")
    ingest(kb, DOCS)
    return kb


def get(client, headers, kb, q: str):
    started = time.perf_counter()
    response = client.get(SEARCH_URL, {"q": q, "kb": kb.slug}, **headers)
    return response, (time.perf_counter() - started) * 1000


def open_the_breaker(client, headers, kb) -> None:
    """Uncached queries against the stopped (or hung) server until the breaker trips."""
    for n in range(20):
        response, _ = get(client, headers, kb, f"failing query {n}")
        assert response.status_code == 503
        if search_breaker().state()["state"] == "open":
            return
    raise AssertionError("the breaker never opened")


def test_breaker_opens_after_failures_and_a_cached_query_answers_degraded(client, server, kb, settings):
    settings.KB_SEARCH_CACHE_SECONDS = 1  # the fresh entry expires; the last good copy stays
    headers = bearer([kb.slug])
    cached, _ = get(client, headers, kb, "lighthouse lamp")
    assert (cached.status_code, cached.json()["cache"]) == (200, "miss")
    server.stop()
    open_the_breaker(client, headers, kb)
    time.sleep(1.1)
    response, _ = get(client, headers, kb, "lighthouse lamp")
    assert response.status_code == 200
    body = response.json()
    assert (body["degraded"], body["cache"]) == (True, "hit")
    assert body["hits"] == cached.json()["hits"]


def test_uncached_query_through_the_open_breaker_gets_503_with_retry_after_fast(client, server, kb):
    headers = bearer([kb.slug])
    server.stop()
    open_the_breaker(client, headers, kb)
    response, elapsed_ms = get(client, headers, kb, "never asked before")
    assert response.status_code == 503
    assert "circuit open" in response.json()["detail"]
    assert 1 <= int(response["Retry-After"]) <= OPEN_SECONDS
    assert elapsed_ms < 50


def test_fresh_cache_hit_while_open_is_exact_not_degraded(client, server, kb):
    headers = bearer([kb.slug])
    get(client, headers, kb, "keeper clockwork")
    server.stop()
    open_the_breaker(client, headers, kb)
    response, _ = get(client, headers, kb, "keeper clockwork")
    assert (response.status_code, response.json()["degraded"], response.json()["cache"]) == (200, False, "hit")


def test_32_concurrent_requests_through_the_open_breaker_are_all_answered_fast(client, server, kb):
    """The server hangs (frozen, port open): each call that reached it would wait the 1 s timeout."""
    headers = bearer([kb.slug], rate="10000/s")
    cached_queries = [f"lighthouse keeper {n}" for n in range(4)]
    for q in cached_queries:
        get(client, headers, kb, q)
    server.freeze()
    open_the_breaker(client, headers, kb)
    # drop the fresh entries: the cached queries must now come from the last good copies
    cache.delete_pattern("search:res:*")
    queries = [cached_queries[n // 2 % 4] if n % 2 else f"uncached {uuid.uuid4().hex}" for n in range(32)]
    barrier = threading.Barrier(32)
    results: list[tuple[int, float, dict]] = []
    lock = threading.Lock()

    def one(q: str) -> None:
        try:
            thread_client = Client()
            # warm up this thread's database and Redis connections, as a server thread has them
            get(thread_client, headers, kb, f"warm-up {uuid.uuid4().hex}")
            barrier.wait()
            response, elapsed_ms = get(thread_client, headers, kb, q)
            with lock:
                results.append((response.status_code, elapsed_ms, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(q,)) for q in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 32
    degraded = [body for status, _, body in results if status == 200]
    refused = [body for status, _, body in results if status == 503]
    assert len(degraded) == 16 and all(body["degraded"] for body in degraded)
    assert len(refused) == 16 and all("circuit open" in body["detail"] for body in refused)
    latencies = sorted(elapsed for _, elapsed, _ in results)
    # All 32 start together in one interpreter, so each waits for the others' CPU time (~80 ms in all
    # here); none waits for the hung server (1 s) and none queues behind another's call.
    assert latencies[-1] < 500, latencies


def test_breaker_closes_again_once_the_server_is_back_after_the_open_period(client, server, kb):
    headers = bearer([kb.slug])
    server.stop()
    open_the_breaker(client, headers, kb)
    server.start()  # same port, same data directory
    response, _ = get(client, headers, kb, "lighthouse wick")
    assert response.status_code == 503  # still open: no call goes to the server yet
    time.sleep(search_breaker().state()["retry_after"] + 0.1)
    response, _ = get(client, headers, kb, "lighthouse wick")  # the half-open probe
    assert response.status_code == 200
    assert response.json()["degraded"] is False
    assert search_breaker().state()["state"] == "closed"
    assert [hit["title"] for hit in response.json()["hits"]] == ["Lighthouse keeping"]


def test_health_ready_reports_the_breaker_state(client, server, kb):
    components = client.get("/health/ready").json()["components"]
    assert components["search"]["breaker"]["state"] == "closed"
    server.stop()
    open_the_breaker(client, bearer([kb.slug]), kb)
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert "breaker open" in response.json()["components"]["search"]["error"]
