"""`manage.py bench_search`: the search API against the direct search-server call, same run.

The reference is the same `_msearch` the API sends (same bodies, same query vectors), sent
with the elasticsearch client straight to the search server. A "miss" is a result-cache miss
with the query embedding already cached (the embedding cache is warmed first), so the
difference to the direct call is what the API itself adds: auth, rate limit, cache lookups,
fusion, serialisation and the HTTP server. "cold" also computes the embedding. The empty
endpoint (GET /health/live) under the same client and server shows how much of that any request
costs here, before the API does anything.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from elasticsearch import Elasticsearch

from bench.measuring import percentile
from bench.processes import process_environment, production_mode, start_web_process, wait_live
from knowledge.models import Document, KnowledgeBase
from search.client import node_urls
from search.index import alias_name
from search.query import msearch_body, search_bodies
from search.services import plan_search, query_vector


@dataclass
class LoadResult:
    target: str
    cache: str
    concurrency: int
    latencies: list[float]
    seconds: float
    errors: int = 0
    error_sample: list[str] | None = None

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q) if self.latencies else 0.0

    def merged(self, other: LoadResult) -> LoadResult:
        """This run and `other` (same target and level, run one after the other) as one."""
        return LoadResult(
            self.target, self.cache, self.concurrency, self.latencies + other.latencies,
            self.seconds + other.seconds, self.errors + other.errors,
            (self.error_sample or []) + (other.error_sample or []) or None,
        )

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        return (
            f"{self.target:<18} {self.cache:<6} {self.concurrency:>4} {len(self.latencies):>6} "
            f"{self.percentile(0.5):9.1f} {self.percentile(0.95):9.1f} {self.percentile(0.99):9.1f} "
            f"{self.rps:9.1f} {self.errors:>6}"
            + (f"  first error: {self.error_sample[0]}" if self.error_sample else "")
        )


HEADER = "{:<18} {:<6} {:>4} {:>6} {:>9} {:>9} {:>9} {:>9} {:>6}".format(
    "target", "cache", "conc", "n", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors"
)


def sample_queries(kb: KnowledgeBase, count: int) -> list[str]:
    """Distinct document titles of the knowledge base: realistic, and each one matches something."""
    titles = Document.objects.filter(source__kb=kb, status="indexed").exclude(title="")
    return list(dict.fromkeys(titles.order_by("id").values_list("title", flat=True)[: count * 2]))[:count]


def run_load(call: Callable[[int], None], total: int, concurrency: int) -> tuple[list[float], float, list[str]]:
    """Call `call(i)` for i in range(total) from `concurrency` threads; latencies in ms, errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            call(i)
        except Exception as exc:
            with lock:
                errors.append(str(exc)[:200])
            return
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    return latencies, time.perf_counter() - started, errors


def direct_searches(kb: KnowledgeBase, queries: list[str], mode: str) -> list[list[dict]]:
    searches = []
    for query in queries:
        plan = plan_search(kb_slugs=[kb.slug], query=query, mode=mode)
        vector = query_vector(plan.embedder, plan.request.query) if plan.embedder else None
        searches.append(msearch_body(search_bodies(plan.request, vector)))
    return searches


def bench_direct(searches: list[list[dict]], total: int, concurrency: int) -> LoadResult:
    client = Elasticsearch(node_urls(), request_timeout=60, connections_per_node=max(concurrency, 10))
    alias = alias_name()

    def call(i: int) -> None:
        client.msearch(index=alias, searches=searches[i % len(searches)])

    latencies, seconds, errors = run_load(call, total, concurrency)
    client.close()
    return LoadResult("direct (es client)", "-", concurrency, latencies, seconds, len(errors), errors[:1])


def start_server(kind: str, port: int, processes: int = 1) -> subprocess.Popen:
    """A server of `kind` (uvicorn or daphne) serving the ASGI app on `port`, once it answers;
    uvicorn may run several worker `processes` (as `make up` does), daphne always one."""
    # The local search server is slow by design: a production timeout would turn queueing into errors.
    env = process_environment(KB_ES_TIMEOUT="120", **production_mode())
    process = start_web_process(port, env, server=kind, workers=processes)
    try:
        wait_live(f"http://127.0.0.1:{port}", process, seconds=120)
    except RuntimeError:
        process.kill()
        raise
    return process


def bench_api(
    base_url: str, key: str, kb: KnowledgeBase, queries: list[str], mode: str, total: int, concurrency: int, cache: str
) -> LoadResult:
    with api_client(base_url, key, concurrency) as client:

        def call(i: int) -> None:
            response = client.get(
                "/api/v1/search", params={"kb": kb.slug, "q": queries[i % len(queries)], "mode": mode, "size": 10}
            )
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

        latencies, seconds, errors = run_load(call, total, concurrency)
    return LoadResult("api", cache, concurrency, latencies, seconds, len(errors), errors[:1])


def bench_floor(base_url: str, key: str, total: int, concurrency: int) -> LoadResult:
    """The same client and server on an empty endpoint (GET /health/live: no database, no Redis):
    what any request costs here before the API does anything."""
    with api_client(base_url, key, concurrency) as client:

        def call(i: int) -> None:
            response = client.get("/health/live")
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

        latencies, seconds, errors = run_load(call, total, concurrency)
    return LoadResult("empty endpoint", "-", concurrency, latencies, seconds, len(errors), errors[:1])


def api_client(base_url: str, key: str, concurrency: int, timeout: float = 60) -> httpx.Client:
    """One client for all the load's threads (httpx clients are thread-safe), made before the clock.

    A client per thread made inside the measurement cost the benchmark itself about 30 ms of CPU
    each (httpx loads its CA bundle), on the 2 cores the server under test runs on: 100 of them
    were seconds of CPU inside "100 submissions at once". Connections still open on first use.
    """
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
    )


def paired_misses(
    base_url: str, key: str, kb: KnowledgeBase, queries: list[str], searches: list[list[dict]], mode: str, rounds: int
) -> list[float]:
    """What the API adds to a miss: per query, the direct `_msearch` and the API's miss back to back.

    The search server's own time drifts between runs by more than the API adds (the separate
    tables above compare medians taken a minute apart); paired, the drift cancels. Returns the
    differences (API miss - direct) in ms; their median is the figure.
    """
    direct = Elasticsearch(node_urls(), request_timeout=60)
    alias = alias_name()
    differences = []
    with api_client(base_url, key, 1) as api:
        for _ in range(rounds):
            kb.bump_generation()  # every API request of this round is a result-cache miss
            for query, search in zip(queries, searches, strict=True):
                started = time.perf_counter()
                direct.msearch(index=alias, searches=search)
                reference = time.perf_counter() - started
                started = time.perf_counter()
                response = api.get("/api/v1/search", params={"kb": kb.slug, "q": query, "mode": mode, "size": 10})
                elapsed = time.perf_counter() - started
                if response.status_code != 200 or response.json()["cache"] != "miss":
                    raise RuntimeError(f"not a miss: {response.status_code} {response.text[:200]}")
                differences.append((elapsed - reference) * 1000)
    direct.close()
    return differences
