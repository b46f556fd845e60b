import pytest
from django.core.exceptions import ValidationError

from knowledge.services import knowledge_base_create

pytestmark = pytest.mark.django_db


def test_knowledge_base_create_defaults_embedder_from_settings(settings):
    settings.KB_EMBEDDER = "hashing"
    kb = knowledge_base_create(slug="faq", name="FAQ")
    assert (kb.embedder, kb.dimensions, kb.generation) == ("hashing", 384, 0)


def test_knowledge_base_create_rejects_duplicate_slug(kb):
    with pytest.raises(ValidationError) as excinfo:
        knowledge_base_create(slug="docs", name="Again")
    assert "slug" in excinfo.value.message_dict


def test_knowledge_base_create_rejects_invalid_slug():
    with pytest.raises(ValidationError) as excinfo:
        knowledge_base_create(slug="not a slug", name="X")
    assert "slug" in excinfo.value.message_dict


def test_knowledge_base_create_refuses_an_unknown_embedder():
    with pytest.raises(ValidationError) as excinfo:
        knowledge_base_create(slug="faq", name="FAQ", embedder="no-such-embedder")
    assert "embedder" in excinfo.value.message_dict
