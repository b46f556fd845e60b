import pytest

from knowledge.services import knowledge_base_create


@pytest.fixture
def kb(db):
    return knowledge_base_create(slug="docs", name="Docs", dimensions=16, embedder="hashing")


@pytest.fixture
def other_kb(db):
    return knowledge_base_create(slug="other", name="Other", dimensions=16, embedder="hashing")
