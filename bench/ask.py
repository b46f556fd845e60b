"""`manage.py bench_ask`: how fast questions are accepted, and how many answers workers produce.

1. Accept latency: `total` POST /api/v1/ask, first from one client thread (the cost of one
   submission), then from `total` threads at once (each opening its own connection; the client
   object is made before the clock), to uvicorn with two worker processes as `make up` runs it.
   Questions are distinct, so none is answered from a stored answer. No worker listens
   meanwhile; the tasks are canceled afterwards. The reference, measured the same way just
   before each level: GET /health/live, a Django view that touches neither PostgreSQL nor Redis,
   so what a request costs here before it does anything.
2. Throughput: for each worker count, that many real worker processes (kbportal.worker.Worker,
   rq's SimpleWorker: one job at a time per process) listen on the `answers` queue; `per_worker`
   questions per worker are submitted at once and answered through the `openai` generator by the
   stand-in model server (bench.standin_llm) taking `answer_seconds` per answer. Answers per
   minute = answers / (last finish - submission). Workers are started and registered before the
   clock starts, so their start-up is not counted.

The knowledge base is seeded here (documents and chunks written straight to PostgreSQL and the
index with the hashing embedder) unless --kb names an existing one.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from dataclasses import dataclass

import django_rq
import httpx
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from rq import Worker

from bench.processes import free_port, process_environment, start_worker_process
from bench.search import LoadResult, api_client, bench_floor, run_load, start_server
from kbportal.claiming import FINISHED_STATUSES, JobStatus
from knowledge.embedders import chunk_embedding_text, get_embedder
from knowledge.models import Document, DocumentStatus, KnowledgeBase, SourceKind
from knowledge.services import knowledge_base_create, source_create
from search.asking.services import answer_submit
from search.indexer import bulk_upsert, chunk_id, refresh
from search.models import AnswerTask

TOPICS = [
    ("Rocket engines", "Liquid rocket engines burn propellant and oxidiser in a combustion chamber."),
    ("Bread baking", "Knead the dough, let it rise until it doubles, and bake it in a hot oven."),
    ("Garden care", "Water the tomatoes early in the morning and mulch the beds to keep them moist."),
    ("Solar panels", "Solar panels turn sunlight into electricity with photovoltaic cells on the roof."),
    ("Coffee brewing", "Grind the beans just before brewing and pour water just off the boil."),
    ("Bicycle repair", "Patch an inner tube by roughening the rubber, applying glue and pressing the patch."),
    ("Tide tables", "Tides rise and fall twice a day as the moon pulls the oceans."),
    ("Bee keeping", "Bees store honey in wax combs and the keeper smokes the hive before opening it."),
]


@dataclass
class Throughput:
    workers: int
    answers: int
    seconds: float
    failed: int

    @property
    def per_minute(self) -> float:
        return self.answers / self.seconds * 60 if self.seconds else 0.0


def seed_kb(embedder: str = "hashing") -> KnowledgeBase:
    """A small knowledge base written straight to PostgreSQL and the index (no ingestion workers)."""
    slug = f"bench-ask-{uuid.uuid4().hex[:8]}"
    kb = knowledge_base_create(slug=slug, name=slug, embedder=embedder)
    source = source_create(kb=kb, kind=SourceKind.TEXT, name="bench", config={"text": "bench"})
    now = timezone.now()
    chunks = []
    for title, text in TOPICS:
        document = Document.objects.create(
            source=source, key=title, title=title, status=DocumentStatus.INDEXED, chunk_count=1, indexed_at=now
        )
        chunks.append({"_id": chunk_id(document.pk, 0), "kb": str(kb.pk), "source": str(source.pk),
                       "document": str(document.pk), "title": title, "content": text, "position": 0,
                       "url": title, "created": now.isoformat()})
    vectors = get_embedder(embedder).embed([chunk_embedding_text(c["title"], c["content"]) for c in chunks])
    for chunk, vector in zip(chunks, vectors, strict=True):
        chunk["embedding"] = vector
    bulk_upsert(chunks)
    refresh()
    kb.bump_generation()
    return kb


def question(n: int, run: str) -> str:
    title, _ = TOPICS[n % len(TOPICS)]
    return f"What should I know about {title.lower()}? (bench {run} #{n})"


def listening_workers() -> int:
    return len(Worker.all(queue=django_rq.get_queue("answers")))


ASK = "POST /api/v1/ask"
#: The reference: an empty endpoint (no database, no Redis) under the same client, server and load.
FLOOR = "GET /health/live"


def accept_latency(kb: KnowledgeBase, raw_key: str, *, total: int, levels: list[int],
                   processes: int = 2) -> list[LoadResult]:
    """p50/p99 of POST /api/v1/ask against uvicorn with `processes` workers, as `make up` runs it."""
    port = free_port()
    server = start_server("uvicorn", port, processes)
    run = uuid.uuid4().hex[:6]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as warm:  # each process's first request
            for n in range(4 * processes):
                warm.post("/api/v1/ask", headers={"Authorization": f"Bearer {raw_key}"},
                          json={"kb": kb.slug, "question": f"warm-up {run} {n}"})
        results = []
        for concurrency in levels:
            floor = bench_floor(f"http://127.0.0.1:{port}", raw_key, total, concurrency)
            floor.target = FLOOR
            results.append(floor)
            with api_client(f"http://127.0.0.1:{port}", raw_key, concurrency, timeout=30) as client:

                def call(i: int, client: httpx.Client = client) -> None:
                    text = f"{question(i, run)} {uuid.uuid4().hex[:6]}"  # distinct across levels too
                    response = client.post("/api/v1/ask", json={"kb": kb.slug, "question": text})
                    if response.status_code != 202:
                        raise RuntimeError(f"{response.status_code}: {response.text[:200]}")

                latencies, seconds, errors = run_load(call, total, concurrency)
            results.append(LoadResult(ASK, "-", concurrency, latencies, seconds, len(errors), errors[:3]))
    finally:
        server.terminate()
        server.wait(timeout=30)
    # Nobody will answer these: cancel them and clear their doorbells.
    AnswerTask.objects.filter(kb=kb, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELED, cancel_requested=True, finished_at=timezone.now(), error="benchmark submission"
    )
    django_rq.get_queue("answers").empty()
    return results


def start_answer_workers(count: int, llm_url: str, log=None) -> list[subprocess.Popen]:
    env = process_environment(
        KB_GENERATOR="openai", KB_LLM_URL=llm_url, KB_LLM_MODEL="standin", KB_WORKER_PRELOAD="",
    )
    return [start_worker_process(("answers",), env, log=log) for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def throughput(kb: KnowledgeBase, *, workers: int, per_worker: int, llm_url: str, timeout: float = 600) -> Throughput:
    """Answers per minute of `workers` worker processes (see the module docstring)."""
    processes = start_answer_workers(workers, llm_url)
    try:
        deadline = time.monotonic() + 120
        while listening_workers() < workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError("answer workers did not start")
            time.sleep(0.2)
        run = uuid.uuid4().hex[:6]
        submitted = timezone.now()
        # The generator is chosen when a question is submitted (it is part of the answer's identity).
        with override_settings(KB_GENERATOR="openai", KB_LLM_MODEL="standin", KB_GENERATOR_BY_KB={}):
            ids = [answer_submit(kb_slug=kb.slug, question=question(n, run))[0].pk
                   for n in range(workers * per_worker)]
        deadline = time.monotonic() + timeout
        while AnswerTask.objects.filter(pk__in=ids).exclude(status__in=FINISHED_STATUSES).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"answers not finished within {timeout:.0f}s")
            time.sleep(0.2)
    finally:
        stop_workers(processes)
    tasks = AnswerTask.objects.filter(pk__in=ids)
    last = max(task.finished_at for task in tasks)
    succeeded = tasks.filter(status=JobStatus.SUCCEEDED).count()
    return Throughput(workers, succeeded, (last - submitted).total_seconds(), len(ids) - succeeded)


def breakdown(kb: KnowledgeBase, since) -> dict[str, float]:
    """Mean retrieval and generation time of the answers finished since `since` (what limits a worker)."""
    tasks = AnswerTask.objects.filter(kb=kb, finished_at__gte=since, status=JobStatus.SUCCEEDED)
    rows = list(tasks.values_list("retrieval_ms", "generation_ms", "started_at", "finished_at"))
    if not rows:
        return {}
    return {
        "retrieval_ms": sum(r[0] or 0 for r in rows) / len(rows),
        "generation_ms": sum(r[1] or 0 for r in rows) / len(rows),
        "task_ms": sum((r[3] - r[2]).total_seconds() * 1000 for r in rows) / len(rows),
    }


def settings_summary() -> str:
    return f"search server {settings.KB_ES_URL}, Redis {settings.REDIS_URL}"
