"""Embedders: hashing (deterministic), MiniLM (the real model), HTTP (a real local server), registry."""

import json
import math
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from knowledge import embedders
from knowledge.embedders import (
    LOADS_KEY,
    EmbeddingError,
    EmbeddingUnavailable,
    HashingEmbedder,
    HttpEmbedder,
    embedder_dimensions,
    get_embedder,
)
from tests.conftest import ROOT


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


# Hashing ---------------------------------------------------------------------------------------


def test_hashing_is_deterministic_across_instances():
    texts = ["Vector search with Elasticsearch", "chunk overlap"]
    assert HashingEmbedder().embed(texts) == HashingEmbedder().embed(texts)


def test_hashing_vectors_are_unit_length_even_for_empty_text():
    vectors = HashingEmbedder().embed(["some words here", "", "!!!"])
    assert [len(vector) for vector in vectors] == [384, 384, 384]
    assert all(norm(vector) == pytest.approx(1.0) for vector in vectors)


def test_hashing_puts_texts_sharing_words_closer():
    query, near, far = HashingEmbedder().embed(
        ["rotate the api keys every month", "how to rotate api keys", "bake sourdough bread at home"]
    )
    assert cosine(query, near) > cosine(query, far) + 0.2


# Registry --------------------------------------------------------------------------------------


@override_settings(KB_EMBEDDERS={"hashing-registry": "knowledge.embedders.HashingEmbedder"})
def test_get_embedder_creates_one_instance_per_name_and_records_the_load(clean_redis):
    first = get_embedder("hashing-registry")
    assert get_embedder("hashing-registry") is first
    assert embedders.LOAD_COUNT["hashing-registry"] == 1
    field = f"hashing-registry:{socket.gethostname()}:{os.getpid()}"
    assert clean_redis.hgetall(LOADS_KEY) == {field.encode(): b"1"}


@override_settings(
    KB_EMBEDDERS={"hashing-no-redis": "knowledge.embedders.HashingEmbedder"}, REDIS_URL="redis://127.0.0.1:1/0"
)
def test_get_embedder_loads_when_redis_is_down():
    assert isinstance(get_embedder("hashing-no-redis"), HashingEmbedder)
    assert embedders.LOAD_COUNT["hashing-no-redis"] == 1


def test_get_embedder_counts_one_load_per_process_in_redis(clean_redis):
    script = (
        "import django; django.setup()\n"
        "from knowledge.embedders import get_embedder\n"
        "assert get_embedder('hashing') is get_embedder('hashing')\n"
        "import os; print(os.getpid())\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "kbportal.settings"}
    pids = [
        subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, check=True, text=True
        ).stdout.strip()
        for _ in range(2)
    ]
    host = socket.gethostname()
    assert clean_redis.hgetall(LOADS_KEY) == {f"hashing:{host}:{pid}".encode(): b"1" for pid in pids}


def test_get_embedder_rejects_an_unknown_name_listing_known_ones():
    with pytest.raises(ValueError, match="known embedders: hashing, http, minilm"):
        get_embedder("nope")


@override_settings(KB_EMBEDDERS={"minilm-unloaded": "knowledge.embedders.MiniLMEmbedder"})
def test_embedder_dimensions_does_not_load_the_model():
    assert embedder_dimensions("minilm-unloaded") == 384
    assert embedders.LOAD_COUNT["minilm-unloaded"] == 0


@override_settings(KB_EMBED_HTTP_DIMS=768)
def test_embedder_dimensions_of_http_comes_from_settings():
    assert embedder_dimensions("http") == 768


# MiniLM (real model) ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return get_embedder("minilm")


def test_minilm_returns_384_unit_vectors(minilm):
    vectors = minilm.embed(["a cat sits on the mat", "stock market crash"])
    assert [len(vector) for vector in vectors] == [384, 384]
    assert all(norm(vector) == pytest.approx(1.0, abs=1e-5) for vector in vectors)


def test_minilm_puts_similar_meaning_closer(minilm):
    cat, kitten, stocks = minilm.embed(["a cat sits on the mat", "a kitten on a rug", "stock market crash"])
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2


def test_minilm_is_loaded_once_per_process(minilm):
    assert get_embedder("minilm") is minilm
    assert get_embedder("minilm") is minilm
    assert embedders.LOAD_COUNT["minilm"] == 1


# HTTP (a real local server) --------------------------------------------------------------------


class EmbeddingsServer(ThreadingHTTPServer):
    """OpenAI-shaped /v1/embeddings: vector i is [len(text), 1, 0, ...], returned in reverse order."""

    status = 200
    requests: list[dict]


class EmbeddingsHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        if self.server.status != 200:
            self.send_response(self.server.status)
            self.end_headers()
            return
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0] + [0.0] * 2}
            for i, text in enumerate(body["input"])
        ]
        payload = json.dumps({"object": "list", "data": data[::-1], "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def embeddings_server():
    server = EmbeddingsServer(("127.0.0.1", 0), EmbeddingsHandler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    with override_settings(
        KB_EMBED_HTTP_URL=base, KB_EMBED_HTTP_MODEL="test-model", KB_EMBED_HTTP_API_KEY="sk-test", KB_EMBED_HTTP_DIMS=4
    ):
        yield server
    server.shutdown()
    server.server_close()


def test_http_embedder_posts_openai_requests_and_orders_vectors(embeddings_server):
    vectors = HttpEmbedder().embed(["abc", "a"])
    assert vectors == [
        pytest.approx([3 / math.sqrt(10), 1 / math.sqrt(10), 0, 0]),
        pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2), 0, 0]),
    ]
    (request,) = embeddings_server.requests
    assert request == {"path": "/v1/embeddings", "auth": "Bearer sk-test", "model": "test-model", "input": ["abc", "a"]}


@override_settings(KB_EMBED_BATCH=2)
def test_http_embedder_sends_batches_of_the_configured_size(embeddings_server):
    assert len(HttpEmbedder().embed(["a", "b", "c", "d", "e"])) == 5
    assert [len(request["input"]) for request in embeddings_server.requests] == [2, 2, 1]


@pytest.mark.parametrize("status", [503, 429])
def test_http_embedder_raises_unavailable_on_overload(embeddings_server, status):
    embeddings_server.status = status
    with pytest.raises(EmbeddingUnavailable, match=str(status)):
        HttpEmbedder().embed(["text"])


def test_http_embedder_raises_error_on_a_refused_request(embeddings_server):
    embeddings_server.status = 401
    with pytest.raises(EmbeddingError, match="401"):
        HttpEmbedder().embed(["text"])


def test_http_embedder_raises_error_on_wrong_dimensions(embeddings_server):
    with override_settings(KB_EMBED_HTTP_DIMS=384), pytest.raises(EmbeddingError, match="384 dimensions"):
        HttpEmbedder().embed(["text"])


def test_http_embedder_raises_unavailable_when_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connection is refused
        with override_settings(KB_EMBED_HTTP_URL=f"http://127.0.0.1:{port}/v1"), pytest.raises(EmbeddingUnavailable):
            HttpEmbedder().embed(["text"])
