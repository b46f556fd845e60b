import pytest

from knowledge.services import knowledge_base_create


@pytest.fixture
def kb(db):
    return knowledge_base_create(slug="docs", name="Docs", embedder="hashing")


@pytest.fixture
def other_kb(db):
    return knowledge_base_create(slug="other", name="Other", embedder="hashing")
