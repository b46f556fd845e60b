import socket
import time
import uuid

import pytest
from minio import Minio

from kbportal import health
from knowledge.storage import (
    FilesystemStore,
    MinioStore,
    ObjectNotFound,
    StorageError,
    get_object_store,
    object_key_for,
    sha256_hex,
)

DATA = b"The quick brown fox jumps over the lazy dog"
DATA_SHA = "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"


def minio_store(endpoint: str, bucket: str | None = None, **kwargs) -> MinioStore:
    return MinioStore(
        endpoint=endpoint,
        access_key="test",
        secret_key="test",
        bucket=bucket or f"kb-{uuid.uuid4().hex[:12]}",
        secure=False,
        region="us-east-1",
        **kwargs,
    )


@pytest.fixture(params=["filesystem", "minio"])
def store(request, tmp_path):
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "objects")
    return minio_store(request.getfixturevalue("s3_server"))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_object_key_is_sharded_sha256():
    assert sha256_hex(DATA) == DATA_SHA
    assert object_key_for(DATA_SHA) == f"sha256/d7/a8/{DATA_SHA}"


def test_put_returns_content_address_and_get_returns_bytes(store):
    key = store.put(DATA, "text/plain")
    assert key == object_key_for(DATA_SHA)
    assert store.get(key) == DATA


def test_put_of_same_content_is_idempotent(store):
    first = store.put(DATA, "text/plain")
    second = store.put(DATA, "text/plain")
    assert first == second
    assert store.get(first) == DATA


def test_different_content_gets_different_keys(store):
    assert store.put(b"one") != store.put(b"two")


def test_exists_and_delete(store):
    key = store.put(DATA)
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting a missing object is not an error


def test_get_of_missing_key_raises_object_not_found(store):
    with pytest.raises(ObjectNotFound):
        store.get(object_key_for(sha256_hex(b"never stored")))


def test_malformed_key_is_never_found(store):
    with pytest.raises(ObjectNotFound):
        store.get("../../etc/passwd")
    assert not store.exists("sha256/../../x")


def test_empty_content_round_trips(store):
    key = store.put(b"")
    assert store.get(key) == b""


def test_ping_reports_backend(store):
    assert store.ping()["backend"] in {"filesystem", "minio"}


def test_filesystem_put_leaves_no_temporary_files(tmp_path):
    store = FilesystemStore(tmp_path)
    key = store.put(DATA)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / key]


def test_minio_creates_missing_bucket_on_first_put(s3_server):
    bucket = f"kb-new-{uuid.uuid4().hex[:8]}"
    client = Minio(s3_server, access_key="test", secret_key="test", secure=False)
    assert not client.bucket_exists(bucket)
    minio_store(s3_server, bucket).put(DATA)
    assert client.bucket_exists(bucket)


def test_minio_recreates_bucket_deleted_while_in_use(s3_server):
    store = minio_store(s3_server)
    store.put(b"first")
    store.client.remove_object(store.bucket, object_key_for(sha256_hex(b"first")))
    store.client.remove_bucket(store.bucket)
    key = store.put(b"second")
    assert store.get(key) == b"second"


def test_minio_unreachable_endpoint_raises_storage_error_fast():
    store = minio_store(f"127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(StorageError) as excinfo:
        store.put(DATA)
    assert not isinstance(excinfo.value, ObjectNotFound)
    with pytest.raises(StorageError):
        store.ping()
    assert time.monotonic() - started < 10


def test_factory_uses_filesystem_without_s3_endpoint(settings, tmp_path):
    settings.KB_S3_ENDPOINT = ""
    settings.KB_STORAGE_DIR = tmp_path
    get_object_store.cache_clear()
    try:
        store = get_object_store()
        assert isinstance(store, FilesystemStore)
        assert store is get_object_store()
    finally:
        get_object_store.cache_clear()


def test_factory_uses_minio_when_s3_endpoint_is_set(settings, s3_server):
    settings.KB_S3_ENDPOINT = s3_server
    settings.KB_S3_ACCESS_KEY = "test"
    settings.KB_S3_SECRET_KEY = "test"
    settings.KB_S3_BUCKET = f"kb-factory-{uuid.uuid4().hex[:8]}"
    get_object_store.cache_clear()
    try:
        store = get_object_store()
        assert isinstance(store, MinioStore)
        assert store.get(store.put(DATA)) == DATA
    finally:
        get_object_store.cache_clear()


def test_health_check_reports_object_store_down(settings):
    settings.KB_S3_ENDPOINT = f"127.0.0.1:{closed_port()}"
    get_object_store.cache_clear()
    try:
        result = health.run_checks(timeout=8)["object_store"]
    finally:
        get_object_store.cache_clear()
    assert result["status"] == "down"
    assert "StorageError" in result["error"]


def test_health_check_reports_object_store_up(settings, tmp_path):
    settings.KB_S3_ENDPOINT = ""
    settings.KB_STORAGE_DIR = tmp_path
    get_object_store.cache_clear()
    try:
        assert health.run_checks()["object_store"]["status"] == "up"
    finally:
        get_object_store.cache_clear()
