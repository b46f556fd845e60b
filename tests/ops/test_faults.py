"""Fault tests: a real web server and real workers while a backing service goes away and comes back.

Each service that fails is our own, on its own port (an Elasticsearch node, a redis-server, a
PostgreSQL cluster, a proxy in front of the S3 server), so stopping it disturbs nobody. In every
case an upload the API accepted (202) ends indexed once the service is back: nothing is lost.
"""

import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import redis
import rq
from django.conf import settings

from bench.processes import start_worker_process, wait_until
from knowledge.services import api_key_create
from search.client import reset_client
from search.index import ensure_index
from search.indexer import forget_ensured
from tests.search.search_kbs import make_kb
from tests.support import (
    ROOT,
    ElasticsearchNode,
    PostgresCluster,
    RedisServer,
    TcpProxy,
    WebServer,
    stop_worker,
    worker_env,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

#: Fast retries and enough attempts to outlast an outage of a test's length.
FAULT_ENV = {
    "KB_JOB_RETRY_BASE_SECONDS": "0.5",
    "KB_JOB_RETRY_MAX_SECONDS": "2",
    "KB_JOB_MAX_ATTEMPTS": "30",
    "KB_SWEEP_INTERVAL": "2",
    "KB_PRELOAD": "",
}


class Stack:
    """A web server, a worker and (optionally) the cron scheduler, all on one environment."""

    def __init__(self, **env: str):
        self.env = worker_env(**{**FAULT_ENV, **env})
        self.web = WebServer(self.env)
        self.processes: list[subprocess.Popen] = []

    def start(self, *, worker: bool = True, scheduler: bool = False) -> "Stack":
        self.web.start()
        if worker:
            self.start_worker()
        if scheduler:
            self.processes.append(subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "scheduler", "ingestion/cron.py"], cwd=ROOT, env=self.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        return self

    def start_worker(self) -> subprocess.Popen:
        process = start_worker_process(settings.KB_INGESTION_QUEUES, self.env)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        self.web.stop()
        for process in self.processes:
            stop_worker(process, timeout=15)


@pytest.fixture
def stacks():
    started: list[Stack] = []

    def make(**env: str) -> Stack:
        stack = Stack(**env)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.stop()


def api(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.web.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def upload(client: httpx.Client, slug: str, title: str, body: str) -> httpx.Response:
    files = {"file": (f"{title.lower().replace(' ', '-')}.md", f"# {title}\n\n{body}".encode(), "text/markdown")}
    return client.post(f"/api/v1/kbs/{slug}/uploads/", files=files)


def job_status(client: httpx.Client, job_id: int) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}/").json()


def wait_indexed(client: httpx.Client, job_id: int, timeout: float = 40) -> dict:
    def finished():
        try:
            state = job_status(client, job_id)
        except (httpx.HTTPError, ValueError):
            return None
        return state if state.get("status") in ("succeeded", "failed", "canceled") else None

    state = wait_until(finished, timeout=timeout, interval=0.3, message=f"job {job_id} to finish")
    assert (state["status"], state["done"], state["failed"]) == ("succeeded", 1, 0), state
    return state


def timed(call):
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def kb_and_key() -> tuple[str, str]:
    kb = make_kb("fault")
    _, raw = api_key_create(name="faults", kb_slugs=[kb.slug], scopes=["search", "ingest"], rate="1000/s")
    return kb.slug, raw


# --- the search server ------------------------------------------------------------------------------


@pytest.fixture
def own_search_server(settings):
    """A real Elasticsearch node of our own, which the test stops and starts again (same port, same data)."""
    server = ElasticsearchNode()
    try:
        server.start()
        settings.KB_ES_URL = server.url  # our worker and web processes inherit it (process_environment)
        timeout, settings.KB_ES_TIMEOUT = settings.KB_ES_TIMEOUT, 30.0  # a first index on a new node can take seconds
        reset_client()
        forget_ensured()
        ensure_index(dims=384)
        settings.KB_ES_TIMEOUT = timeout
        reset_client()
        yield server
    finally:
        server.destroy()
        reset_client()
        forget_ensured()


def test_search_server_down_opens_the_breaker_answers_fast_and_recovers_with_nothing_lost(stacks, own_search_server):
    slug, key = kb_and_key()
    stack = stacks(KB_ES_TIMEOUT="1", KB_BREAKER_MIN_CALLS="4", KB_BREAKER_OPEN_SECONDS="3").start()
    client = api(stack, key)
    first = upload(client, slug, "Lighthouse keeping", "The keeper trims the lamp wick.")
    wait_indexed(client, first.json()["job"]["id"])
    assert client.get("/api/v1/search", params={"q": "lighthouse wick", "kb": slug}).status_code == 200

    own_search_server.stop()
    accepted = upload(client, slug, "Tide tables", "Spring tides follow the new moon.")
    assert accepted.status_code == 202  # bytes and row stored; indexing waits for the search server
    statuses = [client.get("/api/v1/search", params={"q": f"uncached {n}", "kb": slug}) for n in range(6)]
    assert {response.status_code for response in statuses} == {503}
    refused, seconds = timed(lambda: client.get("/api/v1/search", params={"q": "never asked", "kb": slug}))
    assert refused.status_code == 503 and "circuit open" in refused.json()["detail"]
    assert refused.json()["error"] == "service_unavailable" and refused.headers["Retry-After"]
    assert seconds < 0.2  # the breaker answers without waiting for the dead server
    cached = client.get("/api/v1/search", params={"q": "lighthouse wick", "kb": slug})
    assert cached.status_code == 200 and cached.json()["hits"]

    own_search_server.start()  # same port, same data
    recovered = wait_until(
        lambda: (r := client.get("/api/v1/search", params={"q": "spring tides", "kb": slug})).status_code == 200 and r,
        timeout=30, interval=0.5, message="the breaker to close by itself",
    )
    wait_indexed(client, accepted.json()["job"]["id"])
    assert recovered.json()["degraded"] is False
    found = client.get("/api/v1/search", params={"q": "spring tides new moon", "kb": slug, "mode": "keyword"}).json()
    assert [hit["title"] for hit in found["hits"]][:1] == ["Tide tables"]


# --- Redis ----------------------------------------------------------------------------------------


def test_redis_down_search_and_uploads_still_answer_and_queued_work_resumes_when_it_returns(stacks, search_index):
    redis_server = RedisServer()
    redis_server.start()
    try:
        slug, key = kb_and_key()
        stack = stacks(KB_REDIS_URL=redis_server.url, KB_REDIS_TIMEOUT="0.5").start(scheduler=True)
        client = api(stack, key)
        wait_indexed(client, upload(client, slug, "Beekeeping", "Smoke calms the hive.").json()["job"]["id"])

        redis_server.stop()
        search, seconds = timed(lambda: client.get("/api/v1/search", params={"q": "hive smoke", "kb": slug}))
        assert search.status_code == 200 and search.json()["hits"][0]["title"] == "Beekeeping"
        assert seconds < 3
        accepted, seconds = timed(lambda: upload(client, slug, "Orchards", "Grafting joins scion and rootstock."))
        assert accepted.status_code == 202 and seconds < 3  # committed; the sweeper enqueues it later
        job_id = accepted.json()["job"]["id"]
        assert job_status(client, job_id)["status"] == "queued"
        ready = httpx.get(f"{stack.web.url}/health/ready", timeout=10)
        assert ready.status_code == 503 and "redis" in ready.json()["down"]

        redis_server.start()  # empty: the queue entry for the new job is gone, PostgreSQL has the row
        wait_indexed(client, job_id, timeout=60)
        assert all(process.poll() is None for process in stack.processes)  # worker and cron rode it out
    finally:
        redis_server.stop()


def test_worker_takes_work_again_within_seconds_after_a_long_redis_outage(stacks, search_index):
    """rq's own reconnect backoff doubles up to 60 s: after 17 s down its next try would come 14 s
    after Redis is back. Ours tries at least every 5 s."""
    redis_server = RedisServer()
    redis_server.start()
    try:
        slug, key = kb_and_key()
        stack = stacks(KB_REDIS_URL=redis_server.url, KB_REDIS_TIMEOUT="0.5").start()
        client = api(stack, key)
        wait_indexed(client, upload(client, slug, "Beekeeping", "Smoke calms the hive.").json()["job"]["id"])

        redis_server.stop()
        time.sleep(17)
        redis_server.start()
        accepted = upload(client, slug, "Orchards", "Grafting joins scion and rootstock.")
        assert accepted.status_code == 202
        wait_indexed(client, accepted.json()["job"]["id"], timeout=9)
    finally:
        redis_server.stop()


def test_worker_whose_job_ends_while_redis_is_down_keeps_working_when_it_returns(tmp_path):
    """rq quits its loop when a job's bookkeeping meets a Redis error; ours starts it again."""
    redis_server = RedisServer()
    redis_server.start()
    worker = start_worker_process(("default",), worker_env(KB_REDIS_URL=redis_server.url, KB_PRELOAD=""))
    try:
        queue = rq.Queue("default", connection=redis.Redis.from_url(redis_server.url))
        queue.enqueue(time.sleep, 3)
        wait_until(lambda: queue.count == 0, timeout=30, message="the worker to take the job")
        redis_server.stop()  # the job ends while Redis is down: rq's loop quits on saving its result
        time.sleep(4)
        redis_server.start()  # empty
        marker = tmp_path / "done"
        rq.Queue("default", connection=redis.Redis.from_url(redis_server.url)).enqueue(os.mkdir, str(marker))
        wait_until(marker.exists, timeout=30, message="a job queued after the outage to run")
        assert worker.poll() is None
    finally:
        stop_worker(worker, timeout=15)
        redis_server.stop()
    assert worker.returncode == 0  # SIGTERM still stops it


def test_scheduler_rides_out_a_redis_outage_and_enqueues_again_when_it_returns():
    redis_server = RedisServer()
    redis_server.start()
    scheduler = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "scheduler", "ingestion/cron.py"], cwd=ROOT,
        env=worker_env(KB_REDIS_URL=redis_server.url, KB_ANSWER_PURGE_INTERVAL="1", KB_PRELOAD=""),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def purges_queued() -> int:
            return redis.Redis.from_url(redis_server.url).llen("rq:queue:low")

        wait_until(purges_queued, timeout=30, message="the first answer purge to be enqueued")
        redis_server.stop()
        time.sleep(3)  # purges fall due while Redis is down
        assert scheduler.poll() is None
        redis_server.start()  # empty
        wait_until(purges_queued, timeout=30, message="a purge to be enqueued after the outage")
        assert scheduler.poll() is None
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=15)
        redis_server.stop()
    assert scheduler.returncode == 0


# --- PostgreSQL -------------------------------------------------------------------------------------


def manage(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True).stdout


def test_postgres_down_refuses_with_503_keeps_workers_alive_and_finishes_the_job_it_interrupted(stacks, search_index):
    cluster = PostgresCluster()
    cluster.init()
    try:
        slug = f"pg-{uuid.uuid4().hex[:8]}"
        stack = stacks(KB_DATABASE_URL=cluster.url, KB_JOB_LEASE_SECONDS="3", KB_TEST_EMBED_DELAY="3")
        manage(stack.env, "migrate", "--noinput", "-v", "0")
        manage(stack.env, "createkb", slug, "--embedder", "counting")
        key = manage(stack.env, "createapikey", "--kb", slug, "--scopes", "ingest").split()[-1]
        stack.start(scheduler=True)
        client = api(stack, key)
        job_id = upload(client, slug, "Weaving", "The shuttle carries the weft across.").json()["job"]["id"]
        wait_until(lambda: job_status(client, job_id)["status"] == "running", timeout=30, message="the job to start")

        cluster.stop()  # mid-embedding: the job's next write fails
        ready, seconds = timed(lambda: httpx.get(f"{stack.web.url}/health/ready", timeout=10))
        assert ready.status_code == 503 and "database" in ready.json()["down"] and seconds < 3
        refused = upload(client, slug, "Dyeing", "Madder root gives red.")
        assert refused.status_code == 503
        assert (refused.json()["error"], refused.json()["detail"]) == (
            "service_unavailable", "The database is unavailable; try again shortly.")
        latecomer = stack.start_worker()  # a worker starting while PostgreSQL is down
        time.sleep(5)
        assert all(process.poll() is None for process in stack.processes)  # no exit, no crash loop

        cluster.start()
        assert latecomer.poll() is None
        wait_indexed(client, job_id, timeout=60)
        wait_indexed(client, upload(client, slug, "Dyeing", "Madder root gives red.").json()["job"]["id"], timeout=60)
    finally:
        cluster.destroy()


# --- the object store -------------------------------------------------------------------------------


def test_object_store_down_refuses_new_uploads_and_accepted_jobs_retry_until_it_returns(stacks, search_index,
                                                                                          s3_server):
    proxy = TcpProxy(int(s3_server.rsplit(":", 1)[1]))
    proxy.start()
    try:
        slug, key = kb_and_key()
        stack = stacks(KB_S3_ENDPOINT=f"127.0.0.1:{proxy.port}", KB_S3_ACCESS_KEY="test", KB_S3_SECRET_KEY="test",
                       KB_S3_BUCKET=f"faults-{uuid.uuid4().hex[:8]}").start(worker=False)
        client = api(stack, key)
        accepted = upload(client, slug, "Pottery", "The kiln fires the glaze at night.")
        assert accepted.status_code == 202  # bytes are in the store
        job_id = accepted.json()["job"]["id"]

        proxy.stop()
        refused, seconds = timed(lambda: upload(client, slug, "Glass", "Blowing needs a hot furnace."))
        assert refused.status_code == 503 and refused.json()["error"] == "service_unavailable"
        assert "object store" in refused.json()["detail"] and seconds < 5
        ready = httpx.get(f"{stack.web.url}/health/ready", timeout=10)
        assert ready.status_code == 503 and "object_store" in ready.json()["down"]
        stack.start_worker()
        retried = wait_until(
            lambda: (state := job_status(client, job_id))["attempts"] >= 2 and state, timeout=30,
            message="the job to fail over to a retry",
        )
        assert retried["status"] in ("queued", "running") and "Storage" in retried["error"]

        proxy.start()
        wait_indexed(client, job_id)
    finally:
        proxy.stop()
