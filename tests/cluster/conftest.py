"""Fixtures of the multi-host run (`make cluster-test`): KB Portal on ten network-namespace hosts
(`bench.hosts.KbCluster`), its API through the proxy, a search load, an uploader, and the counts
each scenario compares: what was sent, what the API acknowledged, and what PostgreSQL and
Elasticsearch hold afterwards.

This process reaches every host from the machine's side of the bridge; it uses none of the test
services of `make test` (`scripts/cluster-test.sh` runs pytest without the suite's root conftest).
"""

import os
import random
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest

from bench.hosts import ROOT, KbCluster
from bench.processes import wait_until

#: Jobs handed over quickly: a dead worker's lease runs out in 5 s and the sweeper looks every 2 s;
#: retries come fast and outlast a fault of a scenario's length.
CLUSTER_ENV = {
    "KB_JOB_LEASE_SECONDS": "5",
    "KB_SWEEP_INTERVAL": "2",
    "KB_JOB_RETRY_BASE_SECONDS": "0.5",
    "KB_JOB_RETRY_MAX_SECONDS": "2",
    "KB_JOB_MAX_ATTEMPTS": "30",
    "KB_EXTRA_EMBEDDERS": "counting=tests.support.CountingEmbedder",
}
#: Workers embed slowly (the counting embedder sleeps per batch), so a job is mid-way long enough
#: for a scenario to cut its host off.
WORKER_ENV = {"KB_TEST_EMBED_DELAY": "0.5"}

WORDS = ["harbour", "lantern", "granite", "meadow", "copper", "falcon", "orchard", "glacier", "violin", "canyon",
         "ember", "willow", "quartz", "saddle", "beacon", "thistle", "marble", "harvest", "compass", "tundra"]


@pytest.fixture(scope="session")
def cluster():
    if os.geteuid() != 0 or not shutil.which("haproxy") or not shutil.which("iptables"):
        pytest.skip("the multi-host run needs root, haproxy and iptables: run it with `make cluster-test`")
    kb_cluster = KbCluster(env=CLUSTER_ENV, worker_env=WORKER_ENV, keep_logs=ROOT / "var" / "log" / "cluster")
    try:
        kb_cluster.start()
        print(f"\ncluster up in {kb_cluster.started_in:.0f}s: {len(kb_cluster.network.hosts)} hosts")
        yield kb_cluster
    finally:
        kb_cluster.stop()


@dataclass
class Kb:
    slug: str
    key: str
    cluster: KbCluster

    def api(self, timeout: float = 15) -> httpx.Client:
        return httpx.Client(base_url=self.cluster.proxy_url, headers={"Authorization": f"Bearer {self.key}"},
                            timeout=timeout)


@pytest.fixture
def make_kb(cluster):
    def make(slug: str, embedder: str = "counting") -> Kb:
        cluster.manage("createkb", slug, "--embedder", embedder)
        key = cluster.manage("createapikey", "--kb", slug, "--scopes", "search,ingest", "--rate", "1000/s")
        return Kb(slug, key.split()[-1], cluster)

    return make


def document_text(number: int) -> tuple[str, str]:
    """A Markdown document of 1-4 chunks: its file name and its body."""
    rng = random.Random(number)
    words = rng.randint(120, 900)
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"doc-{number:04d}.md", f"# Document {number}\n\nmarker d{number}x {body}\n"


@dataclass
class Uploads:
    """What an uploader sent through the proxy and what the API acknowledged (202, with its job)."""

    sent: list[str] = field(default_factory=list)
    acknowledged: dict[str, int] = field(default_factory=dict)  # file name -> job id
    refused: list[str] = field(default_factory=list)  # "name: why"


class Uploader(threading.Thread):
    """Uploads documents `first`..`first + count - 1` one at a time, `interval` seconds apart."""

    def __init__(self, kb: Kb, first: int, count: int, interval: float = 0.0):
        super().__init__(daemon=True, name=f"uploader-{kb.slug}")
        self.kb, self.numbers, self.interval = kb, range(first, first + count), interval
        self.uploads = Uploads()

    def run(self) -> None:
        with self.kb.api() as client:
            for number in self.numbers:
                name, body = document_text(number)
                self.uploads.sent.append(name)
                try:
                    response = client.post(f"/api/v1/kbs/{self.kb.slug}/uploads/",
                                           files={"file": (name, body.encode(), "text/markdown")})
                    if response.status_code == 202:
                        self.uploads.acknowledged[name] = response.json()["job"]["id"]
                    else:
                        self.uploads.refused.append(f"{name}: {response.status_code}")
                except httpx.HTTPError as error:
                    self.uploads.refused.append(f"{name}: {type(error).__name__}")
                time.sleep(self.interval)

    def finish(self, seconds: float = 120) -> Uploads:
        self.join(seconds)
        assert not self.is_alive(), "the uploader did not finish"
        return self.uploads


class SearchLoad:
    """`concurrency` threads searching the knowledge base through the proxy until `stop()`, at most
    `max_seconds` and `max_requests` in all."""

    def __init__(self, kb: Kb, concurrency: int = 3, pause: float = 0.05, max_seconds: float = 300,
                 max_requests: int = 20000):
        self.kb, self.concurrency, self.pause = kb, concurrency, pause
        self.deadline = time.monotonic() + max_seconds
        self.budget = max_requests
        self.ok = 0
        self.failures: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(concurrency)]

    def start(self) -> "SearchLoad":
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with self.kb.api(timeout=30) as client:
            while not self.stopped.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    if self.budget <= 0:
                        return
                    self.budget -= 1
                query = " ".join(rng.sample(WORDS, 2))
                try:
                    response = client.get("/api/v1/search", params={"kb": self.kb.slug, "q": query})
                    outcome = "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                with self.lock:
                    if outcome == "ok":
                        self.ok += 1
                    else:
                        self.failures[outcome] += 1
                time.sleep(self.pause)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def stop(self) -> "SearchLoad":
        self.stopped.set()
        for thread in self.threads:
            thread.join(60)
        return self

    def summary(self) -> str:
        detail = f" ({', '.join(f'{n} {what}' for what, n in self.failures.items())})" if self.failures else ""
        return f"searches {self.ok} ok, {self.failed} failed{detail}"


def query(cluster: KbCluster, sql: str, *params) -> list[tuple]:
    with psycopg.connect(cluster.database_url, connect_timeout=5) as connection:
        return connection.execute(sql, params).fetchall()


def job_states(cluster: KbCluster, job_ids) -> dict[int, tuple[str, int]]:
    """Job id -> (status, attempts)."""
    rows = query(cluster, "SELECT id, status, attempts FROM ingestion_ingestionjob WHERE id = ANY(%s)", list(job_ids))
    return {pk: (status, attempts) for pk, status, attempts in rows}


def wait_jobs_finished(cluster: KbCluster, job_ids, seconds: float = 120) -> dict[int, tuple[str, int]]:
    def finished():
        states = job_states(cluster, job_ids)
        done = len(states) == len(set(job_ids)) and all(
            status in ("succeeded", "failed", "canceled") for status, _ in states.values())
        return done and states

    return wait_until(finished, timeout=seconds, message=f"{len(set(job_ids))} jobs to finish", interval=0.5)


@dataclass
class Found:
    """What PostgreSQL and Elasticsearch hold for one knowledge base."""

    documents: dict[str, tuple[int, str, int]]  # file name -> (document id, status, chunk_count)
    duplicates: list[str]  # file names held by more than one document
    chunks: dict[int, int]  # document id -> chunks in the index

    @property
    def indexed(self) -> list[str]:
        return [name for name, (pk, status, count) in self.documents.items()
                if status == "indexed" and count > 0 and self.chunks.get(pk) == count]


def found(cluster: KbCluster, slug: str) -> Found:
    rows = query(cluster, """
        SELECT d.key, d.id, d.status, d.chunk_count, kb.id FROM knowledge_document d
        JOIN knowledge_source s ON s.id = d.source_id JOIN knowledge_knowledgebase kb ON kb.id = s.kb_id
        WHERE kb.slug = %s""", slug)
    names = Counter(key for key, *_ in rows)
    documents = {key: (pk, status, count) for key, pk, status, count, _ in rows}
    chunks: dict[int, int] = {}
    if rows:
        es = cluster.es_url("es1")
        httpx.post(f"{es}/_refresh", timeout=30).raise_for_status()
        body = {"size": 0, "query": {"term": {"kb": str(rows[0][4])}},
                "aggs": {"documents": {"terms": {"field": "document", "size": 10000}}}}
        answer = httpx.post(f"{es}/kb_chunks/_search", json=body, timeout=30).json()
        chunks = {int(bucket["key"]): bucket["doc_count"] for bucket in answer["aggregations"]["documents"]["buckets"]}
    return Found(documents, [name for name, n in names.items() if n > 1], chunks)


def check_counts(label: str, cluster: KbCluster, kb: Kb, uploads: Uploads, *extra: str) -> Found:
    """Print the scenario's counts and assert nothing acknowledged was lost or indexed twice."""
    wait_jobs_finished(cluster, uploads.acknowledged.values())
    held = found(cluster, kb.slug)
    chunk_rows = sum(count for _, _, count in held.documents.values())
    print(f"\n{label}: sent {len(uploads.sent)}, acknowledged {len(uploads.acknowledged)}, "
          f"refused {len(uploads.refused)}; documents {len(held.documents)}, indexed {len(held.indexed)}; "
          f"chunks in the index {sum(held.chunks.values())}, in the rows {chunk_rows}"
          + "".join(f"; {item}" for item in extra))
    if uploads.refused:
        print(f"{label}: refused: {', '.join(uploads.refused)}")
    assert held.duplicates == []
    assert set(uploads.acknowledged) <= set(held.indexed), sorted(set(uploads.acknowledged) - set(held.indexed))
    # A refused upload may still have been stored (its answer was lost): then it is indexed too.
    assert set(held.documents) <= set(uploads.sent)
    assert set(held.indexed) == set(held.documents)
    ids = {pk for pk, _, _ in held.documents.values()}
    assert set(held.chunks) <= ids, "chunks of documents no row holds"
    assert sum(held.chunks.values()) == chunk_rows
    return held


@pytest.fixture
def logs_on_failure(cluster, request):
    """On a failed scenario, print the end of each process's log."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for log in sorted((cluster.dir / "logs").glob("*.log")):
            host, label = log.stem.split("-", 1)
            print(f"--- {log.name} ---\n{cluster.log_tail(host, label, 15)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report

