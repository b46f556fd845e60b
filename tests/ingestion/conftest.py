import uuid

import pytest

from knowledge.services import knowledge_base_create


@pytest.fixture
def counting_embedder(settings):
    settings.KB_EMBEDDERS = {**settings.KB_EMBEDDERS, "counting": "tests.support.CountingEmbedder"}
    return "counting"


@pytest.fixture
def make_kb(search_index, counting_embedder):
    def make(embedder: str = "counting"):
        slug = f"t-{uuid.uuid4().hex[:10]}"
        return knowledge_base_create(slug=slug, name=slug, embedder=embedder)

    return make


@pytest.fixture
def kb(make_kb):
    return make_kb()
