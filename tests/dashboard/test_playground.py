"""The search playground runs its three modes at once, each reporting its own failure, against the
real search server (and a socket that never answers, for a hanging one)."""

import socket
import time

import pytest
from django.urls import reverse

from search import cache
from search.client import reset_client
from tests.search.search_kbs import ingest

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = {f"Vacation rule {n}": f"Vacation rule number {n}: ask your manager before booking leave." for n in range(7)}


@pytest.fixture
def indexed_kb(kb, search_index):
    ingest(kb, DOCS)
    return kb


def playground(client, **params):
    response = client.get(reverse("dashboard:playground"), params)
    assert response.status_code == 200
    return response


def test_a_link_without_size_searches_with_the_default_size(staff_client, indexed_kb):
    response = playground(staff_client, kb=indexed_kb.slug, q="vacation rule")
    assert response.context["form"].errors == {}
    results = {result.mode: result for result in response.context["results"]}
    assert list(results) == ["hybrid", "keyword", "semantic"]
    assert all(result.error == "" and len(result.hits) == 5 for result in results.values())


def test_a_mode_the_search_server_refuses_does_not_stop_the_others(staff_client, indexed_kb):
    # A cached query vector of the wrong size: the search server refuses the kNN half of the search.
    cache.store_embedding("hashing", "vacation rule", [1.0, 0.0, 0.0])
    results = {result.mode: result for result in playground(staff_client, kb=indexed_kb.slug, q="vacation rule",
                                                            size=3).context["results"]}
    assert all(results[mode].error.startswith("search failed (400)") for mode in ("semantic", "hybrid"))
    assert results["keyword"].error == ""
    assert len(results["keyword"].hits) == 3
    assert all("Vacation rule" in hit.title for hit in results["keyword"].hits)


@pytest.fixture
def hanging_search_server(settings):
    """The search server accepts connections and never answers; each search times out after 1 s."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    settings.KB_ES_URL = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings.KB_ES_TIMEOUT = 1.0
    reset_client()
    yield
    sock.close()
    reset_client()


def test_the_three_modes_wait_for_a_hanging_server_together(staff_client, kb, hanging_search_server):
    started = time.perf_counter()
    results = playground(staff_client, kb=kb.slug, q="vacation").context["results"]
    elapsed = time.perf_counter() - started
    assert [result.mode for result in results] == ["hybrid", "keyword", "semantic"]
    assert all("unavailable" in result.error for result in results)
    assert all(result.wall_ms >= 1000 for result in results)
    # One after another, three 1 s timeouts would take 3 s.
    assert elapsed < 2.5
