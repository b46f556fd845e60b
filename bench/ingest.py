"""`manage.py bench_ingest`: the pipeline against its references, measured in the same run.

- bare embedder: the exact texts the pipeline embeds, embedded in the same batch size, no I/O;
- the whole pipeline in one process (`ingest --inline` path) on the same documents;
- 1 and 2 real worker processes over the same documents split into several sources;
- the upload API's accept latency (202) while the workers are busy.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import django_rq
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from rq.worker import Worker as RqWorker

from bench.processes import process_environment, start_worker_process, wait_until
from ingestion.chunking import chunk_sections
from ingestion.extraction import extract
from ingestion.models import IngestionJob
from ingestion.services import collection_source
from ingestion.tasks import run_ingestion_job
from knowledge.embedders import chunk_embedding_text, get_embedder
from knowledge.models import KnowledgeBase
from knowledge.services import knowledge_base_create
from search.evaluation import CollectionDocument
from search.indexer import delete_kb_chunks


@dataclass
class Measurement:
    name: str
    seconds: float
    documents: int
    note: str = ""

    @property
    def docs_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0


def pipeline_texts(documents: list[CollectionDocument]) -> list[str]:
    """Exactly what the pipeline embeds for these documents, chunk by chunk."""
    texts = []
    for doc in documents:
        extracted = extract(f"# {doc.title}\n\n{doc.text}".encode(), "text/markdown", f"{doc.key}.md")
        title = extracted.title or doc.key
        texts += [chunk_embedding_text(title, chunk.text) for chunk in chunk_sections(extracted.sections)]
    return texts


def bench_bare_embedder(embedder_name: str, documents: list[CollectionDocument]) -> Measurement:
    embedder = get_embedder(embedder_name)
    texts = pipeline_texts(documents)
    batch = settings.KB_EMBED_BATCH
    embedder.embed(texts[:batch])  # warm-up: first-call allocations are not throughput
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        embedder.embed(texts[start : start + batch])
    return Measurement("bare embedder", time.perf_counter() - started, len(documents), f"{len(texts)} chunks")


def fresh_kb(embedder_name: str, label: str) -> KnowledgeBase:
    slug = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    return knowledge_base_create(slug=slug, name=slug, embedder=embedder_name)


def bench_inline_pipeline(embedder_name: str, documents: list[CollectionDocument]) -> Measurement:
    kb = fresh_kb(embedder_name, "inline")
    get_embedder(embedder_name)  # loaded once per process, as in a worker
    started = time.perf_counter()
    _, job = collection_source(kb=kb, name="bench", documents=documents)
    run_ingestion_job(job.pk)
    seconds = time.perf_counter() - started
    job.refresh_from_db()
    return Measurement("pipeline, 1 process", seconds, job.done, f"job {job.status}")


def bench_workers(
    embedder_name: str, documents: list[CollectionDocument], workers: int, sources: int, during: Callable | None = None
) -> tuple[Measurement, object]:
    """Documents split over `sources` jobs, processed by `workers` real worker processes."""
    kb = fresh_kb(embedder_name, f"w{workers}")
    queue = django_rq.get_queue("default")
    before = {w.name for w in RqWorker.all(connection=queue.connection)}
    processes = [
        start_worker_process(settings.KB_INGESTION_QUEUES, process_environment(KB_TORCH_THREADS="1"))
        for _ in range(workers)
    ]
    extra = None
    try:
        # Workers register after their preload (model loaded), so timing excludes model loading.
        wait_until(lambda: len({w.name for w in RqWorker.all(connection=queue.connection)} - before) >= workers, 180)
        size = -(-len(documents) // sources)
        started = time.perf_counter()
        jobs = [
            collection_source(kb=kb, name=f"part {n}", documents=documents[n * size : (n + 1) * size])[1]
            for n in range(sources)
        ]
        ids = [job.pk for job in jobs if job is not None]
        if during is not None:
            extra = during(kb)
        wait_until(lambda: not IngestionJob.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists(), 3600)
        seconds = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
    done = sum(IngestionJob.objects.filter(pk__in=ids).values_list("done", flat=True))
    return Measurement(f"{workers} worker(s), {sources} jobs", seconds, done), extra


def bench_upload_accept(kb: KnowledgeBase, uploads: int, concurrency: int = 4) -> list[float]:
    """Milliseconds to a 202 for `uploads` small files posted to the upload API."""
    user, _ = get_user_model().objects.get_or_create(username="bench-uploader", defaults={"is_staff": True})
    user.is_staff = True
    user.save()
    latencies: list[float] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        client = Client()
        client.force_login(user)
        body = f"Upload {n}: a short note about benchmark uploads {uuid.uuid4().hex}".encode()
        upload = SimpleUploadedFile(f"note-{n}.txt", body, content_type="text/plain")
        started = time.perf_counter()
        response = client.post(f"/api/v1/kbs/{kb.slug}/uploads/", {"file": upload})
        elapsed = (time.perf_counter() - started) * 1000
        connection.close()
        if response.status_code != 202:
            raise RuntimeError(f"upload answered {response.status_code}: {response.content[:200]!r}")
        with lock:
            latencies.append(elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(uploads)))
    return latencies


def drop_bench_kbs() -> None:
    for kb in KnowledgeBase.objects.filter(slug__startswith="bench-"):
        delete_kb_chunks(kb.pk)
        kb.delete()

