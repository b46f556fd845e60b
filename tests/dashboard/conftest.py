import uuid

import pytest
from django.contrib.auth import get_user_model

from ingestion.models import IngestionJob
from kbportal.claiming import JobStatus
from knowledge.services import knowledge_base_create, source_create


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)


@pytest.fixture
def plain_user(db):
    return get_user_model().objects.create_user("reader", password="pw-reader-1")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def kb(db):
    slug = f"d-{uuid.uuid4().hex[:8]}"
    return knowledge_base_create(slug=slug, name=f"Docs {slug}", embedder="hashing")


@pytest.fixture
def text_source(kb):
    return source_create(kb=kb, kind="text", name="Handbook", config={"text": "Vacation policy: 25 days."})


@pytest.fixture
def make_job(kb, text_source):
    def make(**fields) -> IngestionJob:
        values = {"kb": kb, "source": text_source, "status": JobStatus.RUNNING, "total": 100, **fields}
        return IngestionJob.objects.create(**values)

    return make
