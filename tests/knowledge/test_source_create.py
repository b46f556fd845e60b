import pytest
from django.core.exceptions import ValidationError

from knowledge.models import Source
from knowledge.services import source_create

pytestmark = pytest.mark.django_db


def test_source_create_normalises_url_config(kb):
    source = source_create(kb=kb, kind="url", name="site", config={"url": "https://example.com/docs/"})
    source.refresh_from_db()
    assert source.config["start_urls"] == ["https://example.com/docs/"]
    assert source.config["allowed_domains"] == ["example.com"]
    assert source.config["max_depth"] == 3


def test_source_create_drops_unknown_text_config_keys(kb):
    source = source_create(kb=kb, kind="text", name="note", config={"text": "hello", "extra": 1})
    assert source.config == {"text": "hello"}


def test_source_create_fills_file_defaults(kb):
    config = {"files": [{"object_key": "sha256/ab/cd/abcd", "filename": "a.bin"}]}
    source = source_create(kb=kb, kind="file", name="upload", config=config)
    assert source.config["files"][0]["content_type"] == "application/octet-stream"
    assert source.config["files"][0]["size"] == 0


def test_source_create_rejects_duplicate_file_names(kb):
    files = [
        {"object_key": "sha256/ab/cd/1", "filename": "a.txt"},
        {"object_key": "sha256/ab/cd/2", "filename": "a.txt"},
    ]
    with pytest.raises(ValidationError) as excinfo:
        source_create(kb=kb, kind="file", name="upload", config={"files": files})
    assert "unique" in " ".join(excinfo.value.message_dict["config"])


def test_source_create_rejects_bad_config_with_field_error(kb):
    with pytest.raises(ValidationError) as excinfo:
        source_create(kb=kb, kind="url", name="site", config={"start_urls": ["not a url"]})
    assert excinfo.value.message_dict["config"] == ["start_urls: Not an http(s) URL: not a url"]
    assert not Source.objects.exists()


def test_source_create_requires_a_name(kb):
    with pytest.raises(ValidationError) as excinfo:
        source_create(kb=kb, kind="text", name="", config={"text": "hello"})
    assert "name" in excinfo.value.message_dict


def test_source_create_rejects_unknown_kind(kb):
    with pytest.raises(ValidationError) as excinfo:
        source_create(kb=kb, kind="ftp", name="x", config={})
    assert "kind" in excinfo.value.message_dict
