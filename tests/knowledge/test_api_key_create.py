import pytest
from django.core.exceptions import ValidationError

from knowledge.authentication import authenticate_key
from knowledge.models import ApiKey
from knowledge.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def test_api_key_create_returns_a_key_that_authenticates(kb):
    key, full = api_key_create(name="bot", kb_slugs=["docs"], scopes=["search", "ask"], rate="10/s")
    assert authenticate_key(full) == key
    assert key.scopes == ["search", "ask"]
    assert key.rate == "10/s"
    assert list(key.knowledge_bases.all()) == [kb]


def test_api_key_create_stores_only_prefix_and_hash(kb):
    key, full = api_key_create(name="bot", kb_slugs=["docs"], scopes=["search"], rate="10/s")
    stored = ApiKey.objects.get(pk=key.pk)
    secret = full.split("_", 2)[2]
    assert full.startswith(f"kb_{stored.prefix}_")
    assert secret not in stored.secret_hash
    assert stored.matches(secret)


def test_api_key_create_covers_several_knowledge_bases(kb, other_kb):
    key, _ = api_key_create(name="bot", kb_slugs=["docs", "other", "docs"], scopes=["search"], rate="10/s")
    assert set(key.knowledge_bases.values_list("slug", flat=True)) == {"docs", "other"}


def test_api_key_create_defaults_rate_from_settings(kb, settings):
    settings.KB_DEFAULT_KEY_RATE = "7/m"
    key, _ = api_key_create(name="bot", kb_slugs=["docs"], scopes=["search"])
    assert key.rate == "7/m"


def test_api_key_create_rejects_unknown_knowledge_base(kb):
    with pytest.raises(ValidationError) as excinfo:
        api_key_create(name="bot", kb_slugs=["docs", "nope"], scopes=["search"], rate="10/s")
    assert "nope" in str(excinfo.value.message_dict["kb_slugs"])
    assert not ApiKey.objects.exists()


def test_api_key_create_rejects_unknown_scope(kb):
    with pytest.raises(ValidationError) as excinfo:
        api_key_create(name="bot", kb_slugs=["docs"], scopes=["search", "admin"], rate="10/s")
    assert "scopes" in excinfo.value.message_dict


def test_api_key_create_rejects_bad_rate(kb):
    with pytest.raises(ValidationError) as excinfo:
        api_key_create(name="bot", kb_slugs=["docs"], scopes=["search"], rate="fast")
    assert "rate" in excinfo.value.message_dict


def test_api_key_revoke_stops_authentication(kb):
    from rest_framework.exceptions import AuthenticationFailed

    key, full = api_key_create(name="bot", kb_slugs=["docs"], scopes=["search"], rate="10/s")
    api_key_revoke(key=key)
    assert ApiKey.objects.get(pk=key.pk).revoked
    with pytest.raises(AuthenticationFailed):
        authenticate_key(full)
