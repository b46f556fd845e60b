"""Object storage for the raw bytes of every document, content-addressed by sha256.

Two stores behind one small interface: `MinioStore` (S3 protocol, used when KB_S3_ENDPOINT is set)
and `FilesystemStore` (files under KB_STORAGE_DIR, for development and single-host setups).

Errors: `StorageError` means the store could not answer (unreachable, timeout, 5xx) and the
caller may retry later; `ObjectNotFound` (a subclass, so catch it first) means the store answered
and the object is not there, which retrying will not change.
"""

import abc
import contextlib
import functools
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import certifi
import urllib3
from django.conf import settings
from minio import Minio
from minio.error import MinioException, S3Error

KEY_RE = re.compile(r"^sha256/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}$")
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "ResourceNotFound"}


class StorageError(Exception):
    """The object store did not answer properly (unreachable, timed out, server error)."""


class ObjectNotFound(StorageError):
    """No object is stored under the key (or the key is not a content address)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_key_for(sha: str) -> str:
    """The key under which content with this sha256 hex digest is stored: sha256/ab/cd/abcd…"""
    return f"sha256/{sha[:2]}/{sha[2:4]}/{sha}"


def _checked(key: str) -> str:
    # Keys may come from user-supplied source config; anything that is not a content address
    # cannot name a stored object (and must never become a path outside the store).
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise ObjectNotFound(f"Not an object key: {key!r}")
    return key


class ObjectStore(abc.ABC):
    """Content-addressed bytes: `put` returns the key derived from the content's sha256."""

    @abc.abstractmethod
    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store `data` (a no-op when it is already stored) and return its key."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error."""

    @abc.abstractmethod
    def ping(self) -> dict:
        """Details for the health check; raises StorageError when the store is unusable."""

    @abc.abstractmethod
    def stored(self) -> Iterator[tuple[str, datetime]]:
        """Every stored object's key with the time it was last written."""


class FilesystemStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        key = object_key_for(sha256_hex(data))
        path = self._path(key)
        if path.exists():
            return key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename: readers never see a partial object, and two
            # writers of the same content simply replace identical bytes.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise StorageError(f"Cannot write {key}: {exc}") from exc
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageError(f"Cannot read {key}: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except ObjectNotFound:
            return False

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except ObjectNotFound:
            return
        except OSError as exc:
            raise StorageError(f"Cannot delete {key}: {exc}") from exc

    def ping(self) -> dict:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"Storage directory unusable: {exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"Storage directory not writable: {self.root}")
        return {"backend": "filesystem"}

    def stored(self) -> Iterator[tuple[str, datetime]]:
        try:
            for path in (self.root / "sha256").glob("*/*/*"):
                key = path.relative_to(self.root).as_posix()
                if KEY_RE.match(key):
                    yield key, datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError as exc:
            raise StorageError(f"Cannot list {self.root}: {exc}") from exc


@contextlib.contextmanager
def _translated(key: str = "") -> Iterator[None]:
    """Turn minio/urllib3 failures into StorageError / ObjectNotFound."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING_CODES:
            raise ObjectNotFound(key or exc.code) from exc
        raise StorageError(f"S3 error {exc.code}: {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageError(f"Object store unavailable: {type(exc).__name__}: {exc}") from exc


class MinioStore(ObjectStore):
    """An S3 bucket through the `minio` client, with short timeouts so an outage fails fast."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        region: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        retries: int = 1,
    ):
        # minio's own default is 5 minutes per timeout and 5 retries: far too long for a worker
        # or a health check waiting on a store that is down.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(total=retries, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504]),
        )
        self.bucket = bucket
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region or None,
            http_client=http,
        )
        self._bucket_ready = False
        self._lock = threading.Lock()

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock, _translated():
            if self._bucket_ready:
                return
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    # Another process created it between our check and our create.
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    def put(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        key = object_key_for(sha256_hex(data))
        if self.exists(key):
            return key
        try:
            self._put_object(key, data, content_type)
        except ObjectNotFound:
            # The bucket vanished since we last saw it (deleted by an operator): recreate it once.
            self._bucket_ready = False
            self._ensure_bucket()
            self._put_object(key, data, content_type)
        return key

    def _put_object(self, key: str, data: bytes, content_type: str) -> None:
        with _translated(key):
            self.client.put_object(self.bucket, key, BytesIO(data), len(data), content_type=content_type)

    def get(self, key: str) -> bytes:
        _checked(key)
        self._ensure_bucket()
        with _translated(key):
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        try:
            _checked(key)
            self._ensure_bucket()
            with _translated(key):
                self.client.stat_object(self.bucket, key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            _checked(key)
        except ObjectNotFound:
            return
        self._ensure_bucket()
        with _translated(key):
            self.client.remove_object(self.bucket, key)

    def ping(self) -> dict:
        with _translated():
            present = self.client.bucket_exists(self.bucket)
        if not present:
            self._bucket_ready = False
            self._ensure_bucket()
        return {"backend": "minio", "bucket": self.bucket}

    def stored(self) -> Iterator[tuple[str, datetime]]:
        self._ensure_bucket()
        with _translated():
            for item in self.client.list_objects(self.bucket, prefix="sha256/", recursive=True):
                if KEY_RE.match(item.object_name):
                    yield item.object_name, item.last_modified


@functools.cache
def get_object_store() -> ObjectStore:
    """The process-wide store chosen from settings. Tests call `get_object_store.cache_clear()`."""
    if settings.KB_S3_ENDPOINT:
        return MinioStore(
            endpoint=settings.KB_S3_ENDPOINT,
            access_key=settings.KB_S3_ACCESS_KEY,
            secret_key=settings.KB_S3_SECRET_KEY,
            bucket=settings.KB_S3_BUCKET,
            secure=settings.KB_S3_SECURE,
            region=settings.KB_S3_REGION,
        )
    return FilesystemStore(settings.KB_STORAGE_DIR)
