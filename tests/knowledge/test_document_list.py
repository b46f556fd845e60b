import pytest
from django.core.exceptions import ValidationError

from knowledge.models import Document
from knowledge.selectors import document_list, source_list
from knowledge.services import source_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def documents(kb, other_kb):
    site = source_create(kb=kb, kind="url", name="site", config={"url": "https://example.com/"})
    note = source_create(kb=kb, kind="text", name="note", config={"text": "hi"})
    elsewhere = source_create(kb=other_kb, kind="text", name="x", config={"text": "hi"})
    return {
        "install": Document.objects.create(source=site, key="https://example.com/install", title="Installing"),
        "faq": Document.objects.create(source=site, key="https://example.com/faq", title="FAQ", status="indexed"),
        "note": Document.objects.create(source=note, key="note", title="A note on installing", status="failed"),
        "other": Document.objects.create(source=elsewhere, key="install", title="Installing elsewhere"),
    }


def keys(queryset) -> set[str]:
    return set(queryset.values_list("key", flat=True))


def test_document_list_is_scoped_to_the_kb(kb, documents):
    assert keys(document_list(kb=kb, filters={})) == {"https://example.com/install", "https://example.com/faq", "note"}


def test_document_list_filters_by_status(kb, documents):
    assert keys(document_list(kb=kb, filters={"status": "indexed"})) == {"https://example.com/faq"}


def test_document_list_filters_by_source(kb, documents):
    source_id = documents["note"].source_id
    assert keys(document_list(kb=kb, filters={"source": str(source_id)})) == {"note"}


def test_document_list_q_matches_title_or_key(kb, documents):
    assert keys(document_list(kb=kb, filters={"q": "INSTALL"})) == {"https://example.com/install", "note"}
    assert keys(document_list(kb=kb, filters={"q": "/faq"})) == {"https://example.com/faq"}


def test_document_list_rejects_unknown_status(kb, documents):
    with pytest.raises(ValidationError):
        document_list(kb=kb, filters={"status": "lost"})


def test_document_list_rejects_non_numeric_source(kb, documents):
    with pytest.raises(ValidationError):
        document_list(kb=kb, filters={"source": "abc"})


def test_source_list_is_scoped_to_the_kb(kb, documents):
    assert [s.name for s in source_list(kb=kb)] == ["site", "note"]
