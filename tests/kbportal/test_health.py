"""/health/live and /health/ready against real components, healthy, unreachable and hanging."""

import socket
import time

import pytest
from django.test import Client

from knowledge.storage import get_object_store
from search.client import reset_client

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def hanging_server():
    """Accepts TCP connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture(autouse=True)
def fresh_clients():
    reset_client()
    get_object_store.cache_clear()
    yield
    reset_client()
    get_object_store.cache_clear()


def ready():
    started = time.perf_counter()
    response = Client().get("/health/ready")
    return response, time.perf_counter() - started


def test_live_answers_without_touching_components():
    assert Client().get("/health/live").json() == {"status": "up"}


def test_ready_reports_every_component_up():
    response, _ = ready()
    assert response.status_code == 200
    body = response.json()
    assert set(body["components"]) >= {"database", "redis", "search", "object_store"}
    assert all(c["status"] == "up" for c in body["components"].values())


def test_unreachable_search_server_is_named_in_a_503(settings):
    settings.KB_ES_URL = f"http://127.0.0.1:{closed_port()}"
    response, seconds = ready()
    assert response.status_code == 503
    assert response.json()["down"] == ["search"]
    assert seconds < 2


def test_hanging_search_server_still_gets_an_answer_within_two_seconds(settings, hanging_server):
    settings.KB_ES_URL = f"http://127.0.0.1:{hanging_server}"
    settings.KB_ES_TIMEOUT = 30
    response, seconds = ready()
    assert response.status_code == 503
    assert "search" in response.json()["down"]
    assert seconds < 2


def test_unreachable_redis_is_named_in_a_503(settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"
    response, seconds = ready()
    assert response.status_code == 503
    assert "redis" in response.json()["down"]
    assert seconds < 2


def test_unreachable_object_store_is_named_in_a_503(settings):
    settings.KB_S3_ENDPOINT = f"127.0.0.1:{closed_port()}"
    settings.KB_S3_ACCESS_KEY = settings.KB_S3_SECRET_KEY = "test"
    response, seconds = ready()
    assert response.status_code == 503
    assert response.json()["down"] == ["object_store"]
    assert seconds < 2


def test_minio_object_store_reports_up_over_s3(settings, s3_server):
    settings.KB_S3_ENDPOINT = s3_server
    settings.KB_S3_ACCESS_KEY = settings.KB_S3_SECRET_KEY = "test"
    response, _ = ready()
    assert response.json()["components"]["object_store"]["status"] == "up"
