"""API keys kept between requests (knowledge.keycache): no PostgreSQL query while nothing changed,
and every change that authentication reads seen on the next request, in this process and others."""

import time

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.exceptions import AuthenticationFailed

from knowledge.authentication import authenticate_key
from knowledge.keycache import current_epoch
from knowledge.models import ApiKey, KnowledgeBase
from knowledge.services import api_key_create, api_key_revoke, knowledge_base_create
from tests.support import WebServer, worker_env


def queries_of(raw: str) -> tuple[ApiKey, int]:
    with CaptureQueriesContext(connection) as captured:
        key = authenticate_key(raw)
    return key, len(captured.captured_queries)


@pytest.fixture
def key_and_raw(kb):
    return api_key_create(name="cached", kb_slugs=[kb.slug], scopes=["search"])


def test_second_request_makes_no_query(key_and_raw):
    _, raw = key_and_raw
    assert queries_of(raw)[1] >= 1  # the load (and the first touch)
    key, count = queries_of(raw)
    assert count == 0
    assert key.prefix == key_and_raw[0].prefix


@pytest.mark.parametrize("change", ["queryset update", "service", "save"])
def test_revocation_is_seen_on_the_next_request(key_and_raw, change):
    key, raw = key_and_raw
    authenticate_key(raw)
    if change == "queryset update":
        ApiKey.objects.filter(pk=key.pk).update(revoked=True)
    elif change == "service":
        api_key_revoke(key=key)
    else:
        stored = ApiKey.objects.get(pk=key.pk)
        stored.revoked = True
        stored.save()
    with pytest.raises(AuthenticationFailed):
        authenticate_key(raw)


def test_grants_and_generations_are_current(key_and_raw, kb):
    key, raw = key_and_raw
    assert authenticate_key(raw).granted[kb.slug].generation == kb.generation
    kb.bump_generation()
    assert authenticate_key(raw).granted[kb.slug].generation == kb.generation + 1
    other = knowledge_base_create(slug="later", name="Later", embedder="hashing")
    key.knowledge_bases.add(other)
    assert set(authenticate_key(raw).granted) == {kb.slug, "later"}
    key.knowledge_bases.remove(kb)
    assert set(authenticate_key(raw).granted) == {"later"}
    KnowledgeBase.objects.filter(pk=other.pk).delete()
    assert authenticate_key(raw).granted == {}


def test_last_used_stamp_keeps_the_cached_key(key_and_raw):
    key, raw = key_and_raw
    authenticate_key(raw)
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=None)  # a field authentication does not read
    assert queries_of(raw)[1] == 0


def test_a_change_nobody_announced_is_seen_within_the_max_age(key_and_raw):
    """A row changed in plain SQL (no signal, no epoch) is reloaded once the max age passes."""
    key, raw = key_and_raw
    with override_settings(KB_KEY_CACHE_SECONDS=0.3):
        authenticate_key(raw)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {ApiKey._meta.db_table} SET revoked = true WHERE id = %s", [key.pk])
        assert authenticate_key(raw).revoked is False  # still the cached copy
        time.sleep(0.35)
        with pytest.raises(AuthenticationFailed):
            authenticate_key(raw)


def test_a_new_epoch_after_redis_loses_it(key_and_raw, clean_redis):
    _, raw = key_and_raw
    authenticate_key(raw)
    before = current_epoch()
    clean_redis.flushdb()  # Redis restarted empty: whatever changed meanwhile, nothing is reused
    assert queries_of(raw)[1] >= 1
    assert current_epoch() not in (None, before)


def test_without_redis_every_request_reads_the_key(key_and_raw):
    """Redis unreachable (nothing listens on the port): authentication still works, uncached."""
    _, raw = key_and_raw
    dead = {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2}}
    with override_settings(CACHES={"default": dead}):
        assert current_epoch() is None
        assert queries_of(raw)[1] >= 1
        assert queries_of(raw)[1] >= 1


@pytest.mark.django_db(transaction=True)
def test_another_process_sees_revocation_and_grant_changes_at_once(search_index):
    kb = knowledge_base_create(slug="live", name="Live", embedder="hashing")
    other = knowledge_base_create(slug="live-other", name="Other", embedder="hashing")
    key, raw = api_key_create(name="live", kb_slugs=[kb.slug, other.slug], scopes=["search"])
    server = WebServer(worker_env())
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {raw}"}, timeout=10) as client:

            def search(slug: str) -> int:  # the search service trusts the grants read with the key
                return client.get("/api/v1/search", params={"q": "anything", "kb": slug}).status_code

            for _ in range(3):  # loaded once, then served from the server's cache
                assert search(other.slug) == 200
            key.knowledge_bases.remove(other)
            assert search(other.slug) == 403
            assert search(kb.slug) == 200
            api_key_revoke(key=key)
            assert search(kb.slug) == 401
    finally:
        server.stop()


def test_a_wrong_secret_is_looked_up_like_an_unknown_prefix(key_and_raw):
    """Served from the cache, a known prefix would be refused faster than an unknown one."""
    key, raw = key_and_raw
    authenticate_key(raw)
    for wrong in (f"kb_{key.prefix}_not-the-secret", "kb_0badc0de_not-the-secret"):
        with CaptureQueriesContext(connection) as captured, pytest.raises(AuthenticationFailed):
            authenticate_key(wrong)
        assert len(captured.captured_queries) == 1
