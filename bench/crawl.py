"""`manage.py bench_crawl`: url-source syncs against the crawl engine alone, measured in the same run.

The site (bench.localsite's bench site: N pages, ~20 ms of server latency on every answer,
ETag and Last-Modified on every page) runs in a child process, so its handler threads do not
compete with the crawler and the pipeline for this process's GIL.

- engine: `crawl()` with a no-op `on_page` (fetch, parse, follow links; nothing stored);
- pipeline: a url source in a fresh KB, its sync job run inline by `ingestion.tasks.run_ingestion_job`
  (crawl, extract, chunk, embed, index, mark), at concurrency 1 and 16;
- re-sync: the same job again on the unchanged site: conditional requests, 304s, no embedding.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.test import override_settings

from ingestion.crawling import crawl
from ingestion.models import IngestionJob
from ingestion.services import source_add, source_sync
from ingestion.tasks import run_ingestion_job
from knowledge.embedders import get_embedder
from knowledge.models import KnowledgeBase, Source
from knowledge.services import knowledge_base_create
from knowledge.source_config import validate_source_config
from search.indexer import delete_kb_chunks

KB_PREFIX = "bench-crawl-"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CrawlMeasurement:
    name: str
    concurrency: int
    seconds: float
    pages: int
    note: str = ""
    #: CPU seconds spent during the run, per process (see CpuMeter); empty when not measured.
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


class BenchSite:
    """The bench site served by a child process for the duration of a `with` block."""

    def __init__(self, pages: int, latency: float) -> None:
        self.pages = pages
        self.latency = latency
        self.process: subprocess.Popen | None = None
        self.root = ""

    def __enter__(self) -> BenchSite:
        command = [sys.executable, "-m", "bench.localsite", "--pages", str(self.pages)]
        command += ["--latency", str(self.latency)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.root = self.process.stdout.readline().strip()
        if not self.root.startswith("http://127.0.0.1:"):
            self.__exit__()
            raise RuntimeError("the bench site did not start")
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


#: Local services whose CPU a sync spends too, found by their command line.
SERVICES = {
    "search server": "org.elasticsearch.bootstrap.Elasticsearch",
    "PostgreSQL": "postgres",
    "Redis": "redis-server",
}


class CpuMeter:
    """CPU seconds spent during a `with` block by this process (the job), its children (the crawl
    process, sampled while it lives), the bench site and the local services.

    On a machine with few cores the pipeline's speed-up is bounded by its CPU per page: these
    figures say where that CPU goes and what bound it sets (bench_crawl prints both).
    """

    def __init__(self, site: BenchSite) -> None:
        self.site_pid = site.process.pid
        self.me = psutil.Process()
        self.children: dict[int, float] = {}
        self.seconds: dict[str, float] = {}
        self._stop = threading.Event()

    def __enter__(self) -> CpuMeter:
        self.before = self._services()
        self.own = self._cpu(self.me)
        self.existing = {child.pid for child in self.me.children(recursive=True)}
        self._sampler = threading.Thread(target=self._sample_children, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._sampler.join()
        after = self._services()
        self.seconds = {"job process": self._cpu(self.me) - self.own, "crawl process": sum(self.children.values())}
        for name in ["bench site", *SERVICES]:
            self.seconds[name] = after.get(name, 0.0) - self.before.get(name, 0.0)

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    def _sample_children(self) -> None:
        """The CPU of children started during the block (the crawl process ends with the job)."""
        while not self._stop.wait(0.05):
            for child in self.me.children(recursive=True):
                if child.pid in self.existing:
                    continue  # the bench site, counted apart
                try:
                    self.children[child.pid] = self._cpu(child)
                except psutil.Error:
                    pass  # it just ended: its last sample stands

    def _services(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for process in psutil.process_iter():
            try:
                if process.pid == self.site_pid:
                    name = "bench site"
                else:
                    command = " ".join(process.cmdline())
                    name = next((n for n, marker in SERVICES.items() if marker in command), "")
                if name:
                    totals[name] = totals.get(name, 0.0) + self._cpu(process)
            except psutil.Error:
                continue
        return totals


def crawl_config(root: str, pages: int, concurrency: int) -> dict:
    return validate_source_config(
        "url", {"start_urls": [root + "/"], "max_pages": pages, "max_depth": 5, "concurrency": concurrency}
    )


def bench_engine(root: str, pages: int, concurrency: int) -> CrawlMeasurement:
    """The crawl engine alone: every page fetched and parsed, nothing stored."""
    reported = 0

    async def on_page(page) -> None:
        nonlocal reported
        reported += 1

    with override_settings(KB_CRAWLER_ALLOW_PRIVATE=["127.0.0.0/8"]):
        started = time.perf_counter()
        stats = asyncio.run(crawl(crawl_config(root, pages, concurrency), {}, on_page))
        seconds = time.perf_counter() - started
    return CrawlMeasurement("crawl engine alone", concurrency, seconds, reported, f"{stats.fetched} fetched")


def fresh_kb(embedder_name: str) -> KnowledgeBase:
    slug = f"{KB_PREFIX}{uuid.uuid4().hex[:6]}"
    return knowledge_base_create(slug=slug, name=slug, embedder=embedder_name)


def run_job(job: IngestionJob, name: str, concurrency: int) -> tuple[CrawlMeasurement, IngestionJob]:
    with override_settings(KB_CRAWLER_ALLOW_PRIVATE=["127.0.0.0/8"]):
        started = time.perf_counter()
        run_ingestion_job(job.pk)
        seconds = time.perf_counter() - started
    job = IngestionJob.objects.select_related("kb").get(pk=job.pk)
    note = f"job {job.status}: {job.done} indexed, {job.skipped} unchanged, {job.failed} failed"
    return CrawlMeasurement(name, concurrency, seconds, job.done + job.skipped, note), job


def bench_pipeline(
    site: BenchSite, pages: int, concurrency: int, embedder_name: str
) -> tuple[CrawlMeasurement, Source, IngestionJob]:
    """A first sync of the site through the whole pipeline, in a fresh KB, with its CPU per process."""
    kb = fresh_kb(embedder_name)
    get_embedder(embedder_name)  # loaded once per process, as in a worker
    config = crawl_config(site.root, pages, concurrency)
    source, job = source_add(kb=kb, kind="url", name="bench site", config=config)
    with CpuMeter(site) as meter:
        measurement, job = run_job(job, "pipeline, first sync", concurrency)
    measurement.cpu = meter.seconds
    return measurement, source, job


def bench_resync(source: Source) -> tuple[CrawlMeasurement, IngestionJob]:
    """The same source synced again, the site unchanged: 304s, nothing extracted or embedded."""
    job = source_sync(source=source)
    return run_job(job, "pipeline, re-sync", int(source.config["concurrency"]))


def drop_bench_kbs() -> None:
    for kb in KnowledgeBase.objects.filter(slug__startswith=KB_PREFIX):
        delete_kb_chunks(kb.pk)
        kb.delete()
