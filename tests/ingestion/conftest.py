import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from ingestion.services import kb_create


@pytest.fixture
def counting_embedder(settings):
    settings.KB_EMBEDDERS = {**settings.KB_EMBEDDERS, "counting": "tests.support.CountingEmbedder"}
    return "counting"


@pytest.fixture
def make_kb(search_index, counting_embedder):
    def make(embedder: str = "counting"):
        slug = f"t-{uuid.uuid4().hex[:10]}"
        return kb_create(slug=slug, name=slug, embedder=embedder)

    return make


@pytest.fixture
def kb(make_kb):
    return make_kb()


@pytest.fixture
def staff_api(db):
    """An API client signed in as staff."""
    user = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    return client
