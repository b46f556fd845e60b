"""Redis caches of search: the service's query embeddings and the search API's response bodies.

All entries live in the django-redis `default` cache (so under KB_CACHE_PREFIX):

- `search:emb:<embedder>:<sha256 of the normalised query>`: the query vector as float32 bytes
  (Elasticsearch stores vectors as float32, so nothing is lost), KB_EMBED_CACHE_SECONDS.
- `search:res:<fingerprint>:<generations>`: a body, KB_SEARCH_CACHE_SECONDS. The generations of
  the searched knowledge bases are part of the key: an ingest or delete bumps its knowledge base's
  generation, so the next identical request misses instead of returning what the index no longer says.
- `search:good:<fingerprint>`: the last good body whatever the generations, KB_SEARCH_STALE_SECONDS;
  served with `degraded: true` only while the search server cannot answer.

A cache failure never fails a search: reads miss and writes are dropped, with a warning.
"""

import hashlib
import json
import logging
from array import array
from typing import Any

from django.conf import settings
from django.core.cache import cache

from kbportal.redis_gate import CACHE_ERRORS, log_cache_error

logger = logging.getLogger(__name__)


def normalise_query(text: str) -> str:
    """Whitespace collapsed and lower-cased.

    Lower-casing is safe for the result: the `english` analyzer lower-cases, the hashing embedder
    lower-cases and MiniLM's tokenizer is uncased. The service searches with this text, so two
    requests sharing a cache entry always produce the same answer.
    """
    return " ".join(text.split()).lower()


def fingerprint(params: dict[str, Any]) -> str:
    """A stable digest of a normalised request (JSON with sorted keys; dates as ISO strings)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def result_keys(request_fingerprint: str, generations: list[int]) -> tuple[str, str]:
    """(fresh key, last-good key) of one request; `generations` in the order of the sorted slugs."""
    tag = ".".join(str(generation) for generation in generations)
    return f"search:res:{request_fingerprint}:{tag}", f"search:good:{request_fingerprint}"


def get_result(key: str) -> dict | None:
    try:
        return cache.get(key)
    except CACHE_ERRORS as exc:
        log_cache_error(logger, "search cache read failed", exc)
        return None


def lookup(result_key: str | None, embedder: str, text: str) -> tuple[dict | None, list[float] | None]:
    """The cached result under `result_key` and the cached embedding of `text`, in one round trip.

    Either is skipped when not wanted (`result_key` None, `embedder` empty); a failure misses both.
    """
    embedding_key = _embedding_key(embedder, text) if embedder else None
    keys = [key for key in (result_key, embedding_key) if key]
    if not keys:
        return None, None
    try:
        found = cache.get_many(keys)
    except CACHE_ERRORS as exc:
        log_cache_error(logger, "search cache read failed", exc)
        return None, None
    packed = found.get(embedding_key) if embedding_key else None
    return found.get(result_key) if result_key else None, array("f", packed).tolist() if packed else None


def store_result(fresh_key: str, good_key: str, result: dict) -> None:
    """Both copies in one round trip, the result serialised once (django-redis's own encoding)."""
    try:
        client = cache.client
        value = client.encode(result)
        pipeline = client.get_client(write=True).pipeline(transaction=False)
        pipeline.set(client.make_key(fresh_key), value, ex=settings.KB_SEARCH_CACHE_SECONDS)
        pipeline.set(client.make_key(good_key), value, ex=settings.KB_SEARCH_STALE_SECONDS)
        pipeline.execute()
    except CACHE_ERRORS as exc:
        log_cache_error(logger, "search cache write failed", exc)


def _embedding_key(embedder: str, text: str) -> str:
    return f"search:emb:{embedder}:{hashlib.sha256(text.encode()).hexdigest()[:40]}"


def get_embedding(embedder: str, text: str) -> list[float] | None:
    try:
        packed = cache.get(_embedding_key(embedder, text))
    except CACHE_ERRORS as exc:
        log_cache_error(logger, "embedding cache read failed", exc)
        return None
    return array("f", packed).tolist() if packed else None


def store_embedding(embedder: str, text: str, vector: list[float]) -> None:
    try:
        cache.set(_embedding_key(embedder, text), array("f", vector).tobytes(), settings.KB_EMBED_CACHE_SECONDS)
    except CACHE_ERRORS as exc:
        log_cache_error(logger, "embedding cache write failed", exc)
