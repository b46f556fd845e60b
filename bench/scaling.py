"""Throughput against the number of hosts (`manage.py bench_hosts`): KB Portal on the network-namespace
hosts of bench/hosts.py, each web and worker host a fixed slice of CPU.

Each web and worker host runs in a cgroup v1 of its own, `/sys/fs/cgroup/cpu/kb-hosts/<host>`, with a
CPU quota: `cpu.cfs_quota_us` microseconds of CPU time per `cpu.cfs_period_us` (100,000), so 0.4 CPU
is 40,000. A host is then a fixed share of a CPU whatever else the machine runs, and the ratio of two
runs counts hosts, not how two shared cores were divided. Elasticsearch's three nodes, the data host
(PostgreSQL, Redis, the scheduler), the proxy and the load generator (this process, on the machine's
side of the bridge) have no quota and are the same in both runs of a pair.

- Cached search: the same few queries, each asked once to fill the result cache, then asked over and
  over through the proxy by `concurrency` client threads, with one and with two web hosts behind it
  (the second host's server stopped, and taken out by the proxy's health check, for the one-host run).
  Every answer must be a cache hit.
- Ingestion: the same Markdown documents, a few per upload (a source and a job each), with one and
  with three worker hosts (the others' workers stopped), uploaded into one knowledge base and into a
  knowledge base per upload. The workers are held (SIGSTOP) while the documents are uploaded, so the
  clock runs from "all jobs queued" (SIGCONT) to "every job finished" and measures the workers, not
  the uploads. (Jobs of one knowledge base index one batch at a time: see docs/benchmarks.md.)

For each host, the CPU its processes used per second of the run (psutil) and the share of quota
periods in which the kernel throttled it (`cpu.stat`) show whether the quota was the bound.
"""

import contextlib
import fcntl
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from bench.hosts import ROOT, KbCluster
from bench.measuring import percentile
from bench.search import api_client, run_load

CGROUP_ROOT = Path("/sys/fs/cgroup/cpu/kb-hosts")
PERIOD_US = 100_000
#: The lock `make cluster-test` takes (scripts/cluster-test.sh): the hosts of a run share one bridge.
LOCK = ROOT / "var" / "run" / "cluster-test.lock"
WORDS = ["harbour", "lantern", "granite", "meadow", "copper", "falcon", "orchard", "glacier", "violin", "canyon",
         "ember", "willow", "quartz", "saddle", "beacon", "thistle", "marble", "harvest", "compass", "tundra"]
SEARCH_KB = "hosts-search"
FINISHED = ("succeeded", "failed", "canceled")


@contextlib.contextmanager
def exclusive_bridge():
    """Hold the lock of the multi-host runs; an error if another run holds it."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError("another multi-host run is under way (make cluster-test or bench_hosts)") from None
        yield


class CpuQuotas:
    """One cgroup per host with a quota of `cpu` CPUs each (`KbCluster(cgroups=quotas.paths)`)."""

    def __init__(self, names, cpu: float):
        self.cpu = cpu
        self.quota_us = round(cpu * PERIOD_US)
        self.paths = {name: CGROUP_ROOT / name for name in names}

    def create(self) -> "CpuQuotas":
        for path in self.paths.values():
            path.mkdir(parents=True, exist_ok=True)  # or left by a run killed before its end
            (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        return self

    def throttling(self, name: str) -> tuple[int, int]:
        """(quota periods so far, periods in which the host was throttled)."""
        stat = dict(line.split() for line in (self.paths[name] / "cpu.stat").read_text().splitlines())
        return int(stat["nr_periods"]), int(stat["nr_throttled"])

    def remove(self) -> None:
        """Remove the cgroups (their processes are gone; the kernel may take a moment to see it)."""
        for path in [*self.paths.values(), CGROUP_ROOT]:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)

    def describe(self) -> str:
        return (f"{self.cpu:g} CPU per web and worker host (cpu.cfs_quota_us={self.quota_us} per "
                f"cpu.cfs_period_us={PERIOD_US})")


# --- measuring hosts ----------------------------------------------------------------------------


def host_cpu_seconds(cluster: KbCluster, name: str) -> float:
    """CPU time (user + system) of the processes a host runs now, their children included."""
    total = 0.0
    for process in cluster.host(name).processes.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            for each in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = each.cpu_times()
                    total += times.user + times.system
    return total


def own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


class HostMeter:
    """CPU used and quota periods throttled, per host, between `start()` and `stop()`; and what the
    machine had left (idle) and this process (the load generator, the uploader) used."""

    def __init__(self, cluster: KbCluster, quotas: CpuQuotas, names):
        self.cluster, self.quotas, self.names = cluster, quotas, list(names)

    def start(self) -> "HostMeter":
        self.started = time.monotonic()
        self.cpu = {name: host_cpu_seconds(self.cluster, name) for name in self.names}
        self.periods = {name: self.quotas.throttling(name) for name in self.names}
        self.machine = psutil.cpu_times()
        self.own = own_cpu_seconds()
        return self

    def stop(self) -> str:
        """One line: per host, the CPUs it used on average and the share of periods it was throttled in;
        then this process's CPUs and the machine's idle share."""
        seconds = time.monotonic() - self.started
        machine = psutil.cpu_times()
        busy = [now - then for now, then in zip(machine, self.machine, strict=True)]
        idle = (machine.idle - self.machine.idle) / max(sum(busy), 1e-9)
        parts = []
        for name in self.names:
            used = (host_cpu_seconds(self.cluster, name) - self.cpu[name]) / seconds
            periods, throttled = (now - then for now, then in zip(self.quotas.throttling(name), self.periods[name],
                                                                   strict=True))
            parts.append(f"{name} {used:.2f} CPU, throttled in {100 * throttled / max(periods, 1):.0f}% of periods")
        parts.append(f"this process {(own_cpu_seconds() - self.own) / seconds:.2f} CPU; machine {100 * idle:.0f}% idle")
        return "; ".join(parts)


@dataclass
class Rate:
    """One measured run: `count` requests or documents in `seconds`."""

    label: str
    count: int
    seconds: float
    unit: str
    errors: list[str] = field(default_factory=list)
    hosts: str = ""  # HostMeter's line
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        detail = ""
        if self.latencies:
            detail = f", p50 {percentile(self.latencies, 0.5):.0f} ms, p95 {percentile(self.latencies, 0.95):.0f} ms"
        errors = f", {len(self.errors)} errors (first: {self.errors[0]})" if self.errors else ", 0 errors"
        return (f"{self.label:<15} {self.per_second:8.1f} {self.unit}/s ({self.count} in {self.seconds:.1f} s"
                f"{detail}{errors})\n{'':<17}{self.hosts}")


# --- the knowledge bases -----------------------------------------------------------------------


def prepare(cluster: KbCluster, slugs: list[str]) -> str:
    """Knowledge bases `slugs` (hashing embedder) and one API key for them all, unthrottled; the key."""
    with ThreadPoolExecutor(4) as pool:  # on the data host, which has no quota
        list(pool.map(lambda slug: cluster.manage("createkb", slug, "--embedder", "hashing"), slugs))
    output = cluster.manage("createapikey", *[arg for slug in slugs for arg in ("--kb", slug)],
                            "--scopes", "search,ingest", "--rate", "100000/s", "--name", "bench-hosts")
    return output.split()[-1]


def markdown_document(number: int) -> tuple[str, bytes]:
    """A small Markdown document (one or two chunks): its file name and its bytes."""
    rng = random.Random(number)
    body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 240)))
    return f"doc-{number:04d}.md", f"# Document {number}\n\n{body}\n".encode()


def upload(cluster: KbCluster, key: str, slugs: list[str], count: int, per_upload: int = 1,
           concurrency: int = 8) -> list[int]:
    """Upload documents 0..count-1 through the proxy, `per_upload` files a request (a source and a job
    each), the requests to knowledge bases `slugs` in turn; the job ids."""
    jobs: list[int] = []
    lock = threading.Lock()
    with api_client(cluster.proxy_url, key, concurrency) as client:
        def send(number: int) -> None:
            numbers = range(number * per_upload, min((number + 1) * per_upload, count))
            files = [("file", (*markdown_document(n), "text/markdown")) for n in numbers]
            response = client.post(f"/api/v1/kbs/{slugs[number % len(slugs)]}/uploads/", files=files)
            if response.status_code != 202:
                raise RuntimeError(f"upload of {len(files)} files: {response.status_code} {response.text[:200]}")
            with lock:
                jobs.append(response.json()["job"]["id"])

        _, _, errors = run_load(send, -(-count // per_upload), concurrency)
    if errors:
        raise RuntimeError(f"{len(errors)} uploads failed, first: {errors[0]}")
    return jobs


def wait_jobs(database: psycopg.Connection, jobs: list[int], timeout: float = 600) -> dict[str, int]:
    """Wait until every job has finished; how many ended in each status."""
    deadline = time.monotonic() + timeout
    while True:
        rows = database.execute("SELECT status, count(*) FROM ingestion_ingestionjob WHERE id = ANY(%s) GROUP BY 1",
                                (jobs,)).fetchall()
        statuses = dict(rows)
        if sum(n for status, n in statuses.items() if status in FINISHED) == len(jobs):
            return statuses
        if time.monotonic() > deadline:
            raise RuntimeError(f"the jobs did not finish within {timeout:.0f}s: {statuses}")
        time.sleep(0.1)


def indexed_documents(database: psycopg.Connection, slugs: list[str]) -> int:
    return database.execute(
        "SELECT count(*) FROM knowledge_document d JOIN knowledge_source s ON s.id = d.source_id "
        "JOIN knowledge_knowledgebase kb ON kb.id = s.kb_id WHERE kb.slug = ANY(%s) AND d.status = 'indexed'",
        (slugs,),
    ).fetchone()[0]


# --- cached search -----------------------------------------------------------------------------


def search_queries(count: int) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.sample(WORDS, 2)) for _ in range(count)]


def fill_cache(cluster: KbCluster, key: str, queries: list[str]) -> None:
    """Ask each query once (a miss that fills the result cache), then check it is a hit."""
    with api_client(cluster.proxy_url, key, 1) as client:
        for expected in ("", "hit"):
            for query in queries:
                response = client.get("/api/v1/search", params={"kb": SEARCH_KB, "q": query})
                response.raise_for_status()
                if expected and response.json()["cache"] != expected:
                    raise RuntimeError(f"{query!r} is not cached: {response.json()['cache']}")


def search_rate(cluster: KbCluster, quotas: CpuQuotas, key: str, queries: list[str], *, webs: list[str],
                total: int, concurrency: int) -> Rate:
    """`total` cached searches through the proxy from `concurrency` threads, with web hosts `webs` serving."""
    with api_client(cluster.proxy_url, key, concurrency) as client:
        def ask(number: int) -> None:
            response = client.get("/api/v1/search", params={"kb": SEARCH_KB, "q": queries[number % len(queries)]})
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            if response.json()["cache"] != "hit":
                raise RuntimeError("a cache miss")

        run_load(ask, 10 * concurrency, concurrency)  # connections open, servers warm: not counted
        meter = HostMeter(cluster, quotas, webs).start()
        latencies, seconds, errors = run_load(ask, total, concurrency)
    label = f"{len(webs)} web host" + ("s" if len(webs) > 1 else "")
    return Rate(label, len(latencies), seconds, "req", errors, meter.stop(), latencies)


def use_web_hosts(cluster: KbCluster, count: int) -> list[str]:
    """Serve from the first `count` web hosts: start the others' servers or stop them, and wait until the
    proxy's health checks (every second, two in a row) have put them in or taken them out."""
    for index, name in enumerate(cluster.WEBS):
        if index < count and not cluster.host(name).running("web"):
            cluster.start_web(name)
            cluster.wait_web(name)
        elif index >= count:
            cluster.host(name).stop("web")
    time.sleep(3)
    return list(cluster.WEBS[:count])


# --- ingestion ---------------------------------------------------------------------------------


def signal_workers(cluster: KbCluster, names: list[str], sig: int) -> None:
    for name in names:
        os.killpg(cluster.host(name).processes["worker"].pid, sig)  # the worker and its scheduler


def ingestion_rate(cluster: KbCluster, quotas: CpuQuotas, database: psycopg.Connection, *, slugs: list[str],
                   workers: list[str], documents: int, per_upload: int) -> Rate:
    """Upload `documents` into the knowledge bases `slugs` (made here) while the workers of hosts `workers`
    are held, release them, and time them until every job has finished."""
    key = prepare(cluster, slugs)
    for name in cluster.WORKERS:
        if name not in workers:
            cluster.host(name).stop("worker")
        elif not cluster.host(name).running("worker"):
            raise RuntimeError(f"{name}'s worker is not running")
    signal_workers(cluster, workers, signal.SIGSTOP)
    try:
        jobs = upload(cluster, key, slugs, documents, per_upload)
    except BaseException:
        signal_workers(cluster, workers, signal.SIGCONT)
        raise
    meter = HostMeter(cluster, quotas, workers).start()
    started = time.monotonic()
    signal_workers(cluster, workers, signal.SIGCONT)
    statuses = wait_jobs(database, jobs)
    seconds = time.monotonic() - started
    hosts = meter.stop()
    indexed = indexed_documents(database, slugs)
    errors = [f"{n} jobs {status}" for status, n in statuses.items() if status != "succeeded"]
    if indexed != documents:
        errors.append(f"{indexed} of {documents} documents indexed")
    label = f"{len(workers)} worker host" + ("s" if len(workers) > 1 else "")
    return Rate(label, indexed, seconds, "docs", errors, hosts)
