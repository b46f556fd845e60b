"""`manage.py bench_crawl`: url-source syncs against the crawl engine alone, measured in the same run.

The site (ingestion.localsite's bench site: N pages, ~20 ms of server latency on every answer,
ETag and Last-Modified on every page) runs in a child process, so its handler threads do not
compete with the crawler and the pipeline for this process's GIL.

- engine: `crawl()` with a no-op `on_page` (fetch, parse, follow links; nothing stored);
- pipeline: a url source in a fresh KB, its sync job run inline by `IngestionRunner.execute`
  (crawl, extract, chunk, embed, index, mark), at concurrency 1 and 16;
- re-sync: the same job again on the unchanged site: conditional requests, 304s, no embedding.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.test import override_settings

from ingestion.crawling import crawl
from ingestion.models import IngestionJob
from ingestion.pipeline import IngestionRunner
from ingestion.services import kb_create, source_add, source_sync
from knowledge.models import KnowledgeBase, Source
from knowledge.source_config import validate_source_config
from search.embedders import get_embedder
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
        command = [sys.executable, "-m", "ingestion.localsite", "--pages", str(self.pages)]
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
    return kb_create(slug=slug, name=slug, embedder=embedder_name)


def run_job(job: IngestionJob, name: str, concurrency: int) -> tuple[CrawlMeasurement, IngestionJob]:
    with override_settings(KB_CRAWLER_ALLOW_PRIVATE=["127.0.0.0/8"]):
        started = time.perf_counter()
        IngestionRunner.execute(job.pk)
        seconds = time.perf_counter() - started
    job = IngestionJob.objects.select_related("kb").get(pk=job.pk)
    note = f"job {job.status}: {job.done} indexed, {job.skipped} unchanged, {job.failed} failed"
    return CrawlMeasurement(name, concurrency, seconds, job.done + job.skipped, note), job


def bench_pipeline(
    root: str, pages: int, concurrency: int, embedder_name: str
) -> tuple[CrawlMeasurement, Source, IngestionJob]:
    """A first sync of the site through the whole pipeline, in a fresh KB."""
    kb = fresh_kb(embedder_name)
    get_embedder(embedder_name)  # loaded once per process, as in a worker
    source, job = source_add(kb=kb, kind="url", name="bench site", config=crawl_config(root, pages, concurrency))
    measurement, job = run_job(job, "pipeline, first sync", concurrency)
    return measurement, source, job


def bench_resync(source: Source) -> tuple[CrawlMeasurement, IngestionJob]:
    """The same source synced again, the site unchanged: 304s, nothing extracted or embedded."""
    job = source_sync(source=source)
    return run_job(job, "pipeline, re-sync", int(source.config["concurrency"]))


def drop_bench_kbs() -> None:
    for kb in KnowledgeBase.objects.filter(slug__startswith=KB_PREFIX):
        delete_kb_chunks(kb.slug)
        kb.delete()
