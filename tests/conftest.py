"""Shared fixtures: real PostgreSQL (pytest-django's test database), real Redis (its own
database number, flushed per test), the real Elasticsearch node `make test` starts (port 9201,
fresh data each run), and a real S3 server (moto's server mode) started here."""

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from bench.processes import free_port

ROOT = Path(__file__).resolve().parent.parent


def pytest_sessionstart(session):
    """Refuse to run against the services `make up` uses: tests flush Redis and write chunks."""
    from django.conf import settings as django_settings

    if django_settings.KB_ES_INDEX == "kb_chunks" or django_settings.REDIS_URL.rstrip("/").endswith(("/0", ":6379")):
        pytest.exit("Run the tests with `make test` (it points them at their own Redis db and index).", returncode=2)
    # A fresh index, also on a node that outlived an earlier run: the index files chunks under
    # database ids, and this run's new test database hands out the same ids again.
    from tests.search.chunk_index import drop_versions

    drop_versions(django_settings.KB_ES_INDEX)


@pytest.fixture(autouse=True)
def clean_redis():
    """Each test starts with an empty Redis database (queues, cache, breaker state)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server (moto in server mode) on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from tests.support import wait_for_http

        wait_for_http(f"http://127.0.0.1:{port}/")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def search_index(django_db_blocker):
    """The chunk index (alias over a versioned index) on the test search server."""
    from search.index import ensure_index

    ensure_index(dims=384)
    return settings.KB_ES_INDEX


@pytest.fixture
def staff_api(db):
    """An API client signed in as staff."""
    user = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    return client
