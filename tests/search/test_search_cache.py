"""The result and embedding caches behind search: hits, normalisation, invalidation by generation."""

import time

import pytest
from django.test import override_settings

from bench.processes import free_port, wait_until
from knowledge.embedders import get_embedder
from search import cache
from search.client import reset_client
from search.errors import SearchDown
from search.services import search_knowledge
from tests.search.search_kbs import SEARCH_URL, bearer, ingest, make_kb
from tests.support import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

DOCS = {
    "Telescope optics": "Refracting telescopes use lenses; reflecting telescopes use mirrors.",
    "Sourdough": "A sourdough starter ferments flour and water for days.",
}


@pytest.fixture
def kb(search_index):
    kb = make_kb("c")
    ingest(kb, DOCS)
    return kb


def test_identical_request_is_a_hit_after_a_miss(client, kb):
    headers = bearer([kb.slug])
    first = client.get(SEARCH_URL, {"q": "telescope mirrors", "kb": kb.slug}, **headers).json()
    second = client.get(SEARCH_URL, {"q": "telescope mirrors", "kb": kb.slug}, **headers).json()
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert second["hits"] == first["hits"]
    assert second["degraded"] is False


def test_case_and_spacing_of_the_query_share_one_entry(client, kb):
    headers = bearer([kb.slug])
    client.get(SEARCH_URL, {"q": "telescope mirrors", "kb": kb.slug}, **headers)
    again = client.get(SEARCH_URL, {"q": "  Telescope   MIRRORS ", "kb": kb.slug}, **headers).json()
    assert again["cache"] == "hit"


def test_different_parameters_are_different_entries(client, kb):
    headers = bearer([kb.slug])
    client.get(SEARCH_URL, {"q": "telescope mirrors", "kb": kb.slug}, **headers)
    for variant in ({"mode": "keyword"}, {"size": 3}, {"page": 2}, {"highlight": "false"}, {"chunks": "true"}):
        response = client.get(SEARCH_URL, {"q": "telescope mirrors", "kb": kb.slug, **variant}, **headers)
        assert response.json()["cache"] == "miss", variant


def test_ingest_bumps_the_generation_so_the_next_request_misses_and_sees_the_new_document(client, kb):
    headers = bearer([kb.slug])
    params = {"q": "telescope", "kb": kb.slug, "mode": "keyword"}
    before = client.get(SEARCH_URL, params, **headers).json()
    assert client.get(SEARCH_URL, params, **headers).json()["cache"] == "hit"
    ingest(kb, {"Radio telescope": "A radio telescope is a dish antenna."}, name="more")
    after = client.get(SEARCH_URL, params, **headers).json()
    assert after["cache"] == "miss"
    titles = [hit["title"] for hit in after["hits"]]
    assert "Radio telescope" in titles
    assert "Radio telescope" not in [hit["title"] for hit in before["hits"]]


def test_a_hit_never_touches_the_search_server(client, kb):
    headers = bearer([kb.slug])
    params = {"q": "sourdough starter", "kb": kb.slug}
    client.get(SEARCH_URL, params, **headers)
    with override_settings(KB_ES_URL=f"http://127.0.0.1:{free_port()}"):
        reset_client()
        try:
            response = client.get(SEARCH_URL, params, **headers)
        finally:
            reset_client()
    assert response.status_code == 200
    assert (response.json()["cache"], response.json()["degraded"]) == ("hit", False)


def test_query_embedding_is_cached_under_the_embedder_and_normalised_text(kb):
    search_knowledge(kb_slugs=[kb.slug], query="Ferments  FLOUR", mode="semantic")
    cached = cache.get_embedding("hashing", "ferments flour")
    expected = get_embedder("hashing").embed(["ferments flour"])[0]
    assert cached == pytest.approx(expected, abs=1e-6)
    assert cache.get_embedding("minilm", "ferments flour") is None


def test_the_service_itself_always_searches(client, kb):
    """The result cache is the API's: a request the API has cached still reaches the search server
    when an in-process caller runs it through the service."""
    client.get(SEARCH_URL, {"q": "sourdough", "kb": kb.slug}, **bearer([kb.slug]))
    with override_settings(KB_ES_URL=f"http://127.0.0.1:{free_port()}"):
        reset_client()
        try:
            with pytest.raises(SearchDown):
                search_knowledge(kb_slugs=[kb.slug], query="sourdough")
        finally:
            reset_client()


def test_search_still_answers_when_the_cache_redis_is_unreachable(client, kb, settings):
    headers = bearer([kb.slug])
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    for _ in range(2):  # rate limit fails open; nothing is cached, so both are misses
        response = client.get(SEARCH_URL, {"q": "sourdough", "kb": kb.slug}, **headers)
        assert response.status_code == 200
        assert (response.json()["cache"], response.json()["hits"][0]["title"]) == ("miss", "Sourdough")


def test_search_answers_fast_while_the_cache_redis_hangs(client, kb, settings):
    """A frozen Redis (the port open, nothing answering) costs one timeout, not one per Redis call
    per request (kbportal.redis_gate): the searches after it are answered at once."""
    headers = bearer([kb.slug])
    hanging = RedisServer()
    hanging.start()
    try:
        options = {**settings.CACHES["default"]["OPTIONS"], "SOCKET_TIMEOUT": 0.3, "SOCKET_CONNECT_TIMEOUT": 0.3}
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": hanging.url, "OPTIONS": options}}
        # Until Redis has answered (a hit): a slow first connection on a busy machine closes the gate too.
        wait_until(lambda: client.get(SEARCH_URL, {"q": "bread", "kb": kb.slug}, **headers).json()["cache"] == "hit",
                   timeout=30, message="the cache to answer")
        hanging.freeze()
        seconds = []
        for query in ["sourdough", "flour", "starter", "sourdough flour", "rye"] * 2:
            started = time.perf_counter()
            response = client.get(SEARCH_URL, {"q": query, "kb": kb.slug}, **headers)
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.json()["cache"] == "miss"
        assert seconds[0] >= 0.3  # the timeout that closed the gate
        assert max(seconds[1:]) < 0.25, seconds
    finally:
        hanging.stop()
