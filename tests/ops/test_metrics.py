"""`/metrics`: access control, and each metric family moving when the thing it measures happens.

Worker-side metrics are proved with a real worker process writing to the shared multiprocess
directory and this process serving them.
"""

import os
import subprocess
import sys

import django_rq
import pytest
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.urls import path
from rq import Queue

from bench.processes import wait_until
from ingestion.services import source_add
from kbportal import metrics
from kbportal.breaker import CircuitBreaker
from kbportal.claiming import JobStatus
from tests.ops.conftest import bearer, scrape, value
from tests.search.search_kbs import ingest
from tests.support import ROOT, start_worker, worker_env

LATENCY = "kb_http_request_duration_seconds_count"


def test_metrics_answer_loopback_with_route_pattern_latency(client, db):
    client.get("/health/live")
    samples = scrape(client)
    assert value(samples, LATENCY, route="health/live", method="GET", status="200") >= 1


def test_metrics_label_routes_by_pattern_not_raw_path(client, kb):
    client.get(f"/api/v1/kbs/{kb.slug}/", **bearer([kb]))
    samples = scrape(client)
    assert value(samples, LATENCY, route="api/v1/kbs/<slug:slug>/", method="GET", status="200") >= 1
    assert not [labels for name, labels in samples if name == LATENCY and ("route", f"api/v1/kbs/{kb.slug}/") in labels]


@override_settings(KB_METRICS_ALLOW=["10.0.0.0/8"])
def test_metrics_refused_outside_allowed_networks(client, db):
    response = client.get("/metrics")
    assert response.status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200


@override_settings(KB_METRICS_ALLOW=[], KB_METRICS_TOKEN="s3cret-scrape-token")
def test_metrics_token_admits_any_network(client, db):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert response.status_code == 200
    assert b"kb_http_request_duration_seconds" in response.content


@pytest.mark.django_db(transaction=True)  # the pipeline indexes from its own thread and connection
def test_search_latency_by_mode_and_cache_outcome(client, kb, search_index):
    ingest(kb, {"Passwords": "Reset your password from the settings page."})
    before = scrape(client)
    headers = bearer([kb])
    for _ in range(2):  # a miss, then the same query from the cache
        assert client.get("/api/v1/search", {"q": "reset password", "mode": "keyword"}, **headers).status_code == 200
    after = scrape(client)
    for outcome in ("miss", "hit"):
        latency = {"mode": "keyword", "cache": outcome}
        name = "kb_search_duration_seconds_count"
        assert value(after, name, **latency) == value(before, name, **latency) + 1
        name = "kb_search_cache_total"
        assert value(after, name, outcome=outcome) == value(before, name, outcome=outcome) + 1


def test_rate_limit_rejections_are_counted(client, kb):
    before = value(scrape(client), "kb_rate_limited_total", limit="search")
    headers = bearer([kb], rate="1/m")
    client.get("/api/v1/search", {"q": "x", "mode": "keyword", "kb": "nope"}, **headers)
    assert client.get("/api/v1/search", {"q": "x"}, **headers).status_code == 429
    assert value(scrape(client), "kb_rate_limited_total", limit="search") == before + 1


def test_breaker_state_and_transitions(client, db):
    breaker = CircuitBreaker("metrics-test", failure_exceptions=(ValueError,), min_calls=2, failure_ratio=0.5)
    breaker.reset()

    def failing():
        raise ValueError("down")

    for _ in range(2):
        with pytest.raises(ValueError):
            breaker.call(failing)
    samples = scrape(client)
    assert value(samples, "kb_breaker_state", breaker="metrics-test", state="open") == 1
    assert value(samples, "kb_breaker_state", breaker="metrics-test", state="closed") == 0
    assert value(samples, "kb_breaker_transitions_total", breaker="metrics-test", transition="closed->open") >= 1


def test_queue_depths_and_jobs_by_status_are_read_at_scrape(client, kb):
    # A plain rq queue: django-rq's would defer the enqueue to the (never committed) test transaction.
    Queue("low", connection=django_rq.get_connection("low")).enqueue("builtins.len", "abc")
    source_add(kb=kb, kind="text", name="t", config={"text": "hello"})  # a queued job row
    samples = scrape(client)
    assert value(samples, "kb_queue_depth", queue="low") == 1
    assert value(samples, "kb_jobs", kind="ingestion.ingestionjob", status=JobStatus.QUEUED) >= 1
    assert value(samples, "kb_workers") == 0
    assert value(samples, "kb_metrics_collect_error", part="queues") == 0


@pytest.mark.django_db(transaction=True)
def test_worker_job_stage_and_embedding_metrics_reach_the_web_endpoint(client, kb, search_index):
    before = scrape(client)
    job_name = "kb_job_duration_seconds_count"
    job_labels = {"kind": "ingestion.ingestionjob", "status": JobStatus.SUCCEEDED}
    _, job = source_add(kb=kb, kind="text", name="doc", config={"text": "Metrics travel from workers to the web."})
    worker = start_worker("high", burst=True)
    worker.wait(timeout=120)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    after = scrape(client)
    assert value(after, job_name, **job_labels) == value(before, job_name, **job_labels) + 1
    for stage in ("extract", "chunk", "embed", "index"):
        name, labels = "kb_job_stage_duration_seconds_count", {"kind": "ingestion", "stage": stage}
        assert value(after, name, **labels) > value(before, name, **labels)
    texts = "kb_embedded_texts_total"
    assert value(after, texts, embedder="hashing", caller="ingestion") > value(
        before, texts, embedder="hashing", caller="ingestion")


def test_live_workers_are_counted(client, db):
    worker = start_worker("low")
    try:
        wait_until(lambda: value(scrape(client), "kb_workers") == 1, timeout=60, message="the worker to register")
    finally:
        worker.terminate()
        worker.wait(timeout=30)


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data)


def gauge_value(endpoint: str) -> float:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics.METRICS_DIR))
    return registry.get_sample_value("kb_websocket_clients", {"endpoint": endpoint}) or 0.0


@pytest.mark.anyio
async def test_websocket_clients_gauge_follows_open_sockets():
    app = metrics.WebSocketGauge(URLRouter([path("ws/echo/<int:n>/", Echo.as_asgi())]))
    sockets = [WebsocketCommunicator(app, f"/ws/echo/{n}/") for n in range(3)]
    for socket in sockets:
        connected, _ = await socket.connect()
        assert connected
    assert gauge_value("/ws/echo/") == 3
    for socket in sockets[:2]:
        await socket.disconnect()
    assert gauge_value("/ws/echo/") == 1
    await sockets[2].disconnect()
    assert gauge_value("/ws/echo/") == 0


CHILD = """
import os, sys, django
django.setup()
from kbportal import metrics
metrics.WEBSOCKET_CLIENTS.labels("/ws/child/").inc()
metrics.record_rate_limited("child-test")
print("ready", flush=True)
sys.stdin.readline()
os._exit(0)  # no atexit: like a killed process
"""


def test_dead_process_keeps_its_counters_and_loses_its_live_gauges(client, db):
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, env=worker_env(), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "ready"
        while_alive = scrape(client)
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert value(while_alive, "kb_websocket_clients", endpoint="/ws/child/") == 1
    after = scrape(client)
    assert value(after, "kb_websocket_clients", endpoint="/ws/child/") == 0
    assert value(after, "kb_rate_limited_total", limit="child-test") == value(
        while_alive, "kb_rate_limited_total", limit="child-test")
    assert value(after, "kb_rate_limited_total", limit="child-test") >= 1


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_first_process_of_a_fresh_start_wipes_the_previous_run(tmp_path):
    dead = dead_pid()
    for name in (f"counter_{dead}.db", f"histogram_{dead}.db", f"pid_{dead}.alive"):
        (tmp_path / name).write_bytes(b"")
    metrics.register_process(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name != ".lock") == [f"pid_{os.getpid()}.alive"]


def test_a_process_joining_live_peers_keeps_their_files_and_dead_counters(tmp_path):
    peer = subprocess.Popen(["sleep", "30"])
    dead = dead_pid()
    try:
        for name in (f"pid_{peer.pid}.alive", f"counter_{peer.pid}.db", f"counter_{dead}.db",
                     f"gauge_livesum_{dead}.db", f"pid_{dead}.alive"):
            (tmp_path / name).write_bytes(b"")
        metrics.register_process(tmp_path)
        left = sorted(path.name for path in tmp_path.iterdir() if path.name != ".lock")
    finally:
        peer.kill()
        peer.wait()
    assert left == sorted([f"counter_{dead}.db", f"counter_{peer.pid}.db", f"pid_{os.getpid()}.alive",
                           f"pid_{peer.pid}.alive"])
