"""The API's rate limits (django-ratelimit in the Redis cache), driven through the search and ask APIs.

Every request below is counted before it is validated: a search without `q` answers 400 once it
was counted, 429 once over the limit, so no search server is needed.
"""

import threading
import uuid
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import connections
from django.test import Client

from bench.processes import free_port
from knowledge.services import api_key_create, knowledge_base_create

pytestmark = pytest.mark.django_db(transaction=True)

SEARCH_URL = "/api/v1/search"
ASK_URL = "/api/v1/ask"


@pytest.fixture
def kb():
    slug = f"rl-{uuid.uuid4().hex[:10]}"
    return knowledge_base_create(slug=slug, name=slug)


def key_headers(kb, rate: str, scopes=("search",)) -> dict:
    _, raw = api_key_create(name="rl", kb_slugs=[kb.slug], scopes=list(scopes), rate=rate)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


@pytest.fixture
def clock():
    """django-ratelimit's clock, stopped at a fixed second (advance it by setting `.now`)."""
    with mock.patch("django_ratelimit.core.time") as fake:
        fake.now = 1_000_000.0
        fake.time.side_effect = lambda: fake.now
        yield fake


def test_a_key_is_limited_at_its_own_rate_and_starts_afresh_in_the_next_window(client, kb, clock):
    headers = key_headers(kb, "3/m", scopes=("search", "ask"))
    statuses = [client.get(SEARCH_URL, {"kb": kb.slug}, **headers).status_code for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    refused = client.get(SEARCH_URL, {"kb": kb.slug}, **headers)
    assert refused.json() == {
        "error": "throttled", "detail": refused.json()["detail"], "request_id": refused["X-Request-ID"],
    }
    assert refused.json()["detail"].startswith("Request was throttled.")
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= 60
    # Another key, and the same key on another API, have budgets of their own.
    assert client.get(SEARCH_URL, {"kb": kb.slug}, **key_headers(kb, "3/m")).status_code == 400
    assert client.post(ASK_URL, {}, content_type="application/json", **headers).status_code == 400
    clock.now += retry_after
    assert client.get(SEARCH_URL, {"kb": kb.slug}, **headers).status_code == 400


def test_a_one_second_window_asks_to_retry_after_one_second(client, kb, clock):
    headers = key_headers(kb, "1/s")
    assert client.get(SEARCH_URL, {"kb": kb.slug}, **headers).status_code == 400
    refused = client.get(SEARCH_URL, {"kb": kb.slug}, **headers)
    assert (refused.status_code, refused["Retry-After"]) == (429, "1")


def test_the_counter_expires_with_its_window(client, kb):
    client.get(SEARCH_URL, {"kb": kb.slug}, **key_headers(kb, "5/h"))
    [counter] = cache.keys("rl:*")
    assert 0 < cache.ttl(counter) <= 3600 + 5


def test_windows_of_different_keys_end_at_different_times(client, kb, clock):
    waits = set()
    for _ in range(20):
        headers = key_headers(kb, "1/h")
        client.get(SEARCH_URL, {"kb": kb.slug}, **headers)
        waits.add(client.get(SEARCH_URL, {"kb": kb.slug}, **headers)["Retry-After"])
    assert len(waits) > 10


def test_concurrent_requests_are_each_counted_once(kb):
    headers = key_headers(kb, "200/h")
    statuses = []
    lock = threading.Lock()

    def hammer():
        own = Client()
        try:
            for _ in range(30):
                status = own.get(SEARCH_URL, {"kb": kb.slug}, **headers).status_code
                with lock:
                    statuses.append(status)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (statuses.count(400), statuses.count(429)) == (200, 40)


def test_anonymous_callers_count_per_ipv4_address_and_per_ipv6_64(client, settings, clock):
    settings.KB_ANON_RATE = "1/15m"

    def status(address):
        return client.get(SEARCH_URL, {"q": "x"}, REMOTE_ADDR=address).status_code

    assert [status("2001:db8::1"), status("2001:db8::ffff:1"), status("2001:db8:0:1::1")] == [401, 429, 401]
    assert [status("192.0.2.7"), status("192.0.2.8"), status("192.0.2.7")] == [401, 401, 429]
    assert 1 <= int(client.get(SEARCH_URL, {"q": "x"}, REMOTE_ADDR="192.0.2.7")["Retry-After"]) <= 15 * 60


def test_limits_fail_open_while_redis_is_unreachable(client, kb, settings):
    headers = key_headers(kb, "1/m")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    assert [client.get(SEARCH_URL, {"kb": kb.slug}, **headers).status_code for _ in range(3)] == [400, 400, 400]
