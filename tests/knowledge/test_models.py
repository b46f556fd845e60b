import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from knowledge.models import ApiKey, Document, KnowledgeBase, Source, hash_secret

pytestmark = pytest.mark.django_db


def test_knowledge_base_slug_is_unique(kb):
    with pytest.raises(IntegrityError):
        KnowledgeBase.objects.create(slug="docs", name="Again")


def test_document_key_is_unique_per_source(kb):
    source = Source.objects.create(kb=kb, kind="text", name="a", config={"text": "x"})
    Document.objects.create(source=source, key="intro")
    with pytest.raises(IntegrityError):
        Document.objects.create(source=source, key="intro")


def test_same_document_key_is_allowed_in_another_source(kb):
    first = Source.objects.create(kb=kb, kind="text", name="a", config={"text": "x"})
    second = Source.objects.create(kb=kb, kind="text", name="b", config={"text": "y"})
    Document.objects.create(source=first, key="intro")
    Document.objects.create(source=second, key="intro")
    assert Document.objects.filter(key="intro").count() == 2


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("text", {}, "text"),
        ("text", {"text": "   "}, "text"),
        ("file", {}, "files"),
        ("file", {"files": [{"filename": "a.pdf"}]}, "object_key"),
        ("file", {"files": [{"object_key": "sha256/ab/cd/x"}]}, "filename"),
        ("url", {}, "start_urls"),
        ("url", {"start_urls": ["ftp://example.com/"]}, "start_urls"),
        ("url", {"start_urls": ["https://example.com/"], "max_depth": 99}, "max_depth"),
        ("url", {"start_urls": ["https://example.com/"], "delay": -1}, "delay"),
    ],
)
def test_source_clean_names_the_bad_config_field(kb, kind, config, field):
    with pytest.raises(ValidationError) as excinfo:
        Source(kb=kb, kind=kind, name="s", config=config).full_clean()
    assert field in " ".join(excinfo.value.message_dict["config"])


def test_source_clean_rejects_unknown_kind(kb):
    with pytest.raises(ValidationError) as excinfo:
        Source(kb=kb, kind="ftp", name="s", config={}).full_clean()
    assert "kind" in excinfo.value.message_dict


def test_api_key_matches_only_its_secret(kb):
    prefix, secret, full = ApiKey.generate()
    key = ApiKey.objects.create(name="k", prefix=prefix, secret_hash=hash_secret(secret), scopes=["search"])
    assert full == f"kb_{prefix}_{secret}"
    assert key.matches(secret)
    assert not key.matches(secret + "x")


def test_api_key_is_not_revoked_by_default(kb):
    prefix, secret, _ = ApiKey.generate()
    key = ApiKey.objects.create(name="k", prefix=prefix, secret_hash=hash_secret(secret), scopes=["search"])
    assert key.revoked is False
