"""Fixtures of the operations tests: knowledge bases, keys, staff, and reading /metrics."""

import uuid

import pytest
from django.contrib.auth import get_user_model
from prometheus_client.parser import text_string_to_metric_families

from knowledge.services import api_key_create, knowledge_base_create


@pytest.fixture
def kb(db):
    slug = f"ops-{uuid.uuid4().hex[:8]}"
    return knowledge_base_create(slug=slug, name=slug, embedder="hashing")


@pytest.fixture
def other_kb(db):
    slug = f"other-{uuid.uuid4().hex[:8]}"
    return knowledge_base_create(slug=slug, name=slug, embedder="hashing")


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)


def bearer(kbs, scopes=("search", "ingest", "ask"), rate=None) -> dict:
    """Test-client headers carrying a new API key for these knowledge bases."""
    _, raw = api_key_create(name="ops", kb_slugs=[kb.slug for kb in kbs], scopes=list(scopes), rate=rate)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def scrape(client, **extra) -> dict[tuple[str, frozenset], float]:
    """GET /metrics and return {(sample name, labels): value}."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    """The sample's value, 0 when it is absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
