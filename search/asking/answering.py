"""Answering one question: retrieve -> context within a token budget -> generate -> citations.

`AnswerRunner` runs an `AnswerTask` through the one job lifecycle (kbportal.claiming.JobRunner):
claim, lease, cancel, retry and the fenced final write come from there; this module adds only
the work. While the generator writes, `AnswerStream` coalesces its text and, at most every
KB_ANSWER_STREAM_INTERVAL, saves the partial answer (the truth a late WebSocket reads on connect)
and publishes the new text to the Channels group `answer-<id>` as

    {"type": "token", "id": <task>, "offset": <characters before this text>, "text": "..."}

The final state goes to the same group as {"type": "answer", ...answer_state}. The offset lets a
consumer that read a partial answer from the database drop the text it already has.
Each flush is also a batch boundary: a lost lease or a cancel request stops generation there.

Retrieval failures of the search server are transient (the task is retried with backoff); model
failures fail the answer with the reason (see search.asking.generators).
"""

from __future__ import annotations

import html
import logging
import time
from typing import Any

import redis
from django.conf import settings

from kbportal.claiming import JobRunner, JobStatus, TransientError
from kbportal.progress import group_name, send_to_groups
from knowledge.models import KnowledgeBase
from search.asking.generators import Generation, Passage, estimate_tokens, get_generator
from search.asking.relevance import any_relevant, nothing_relevant
from search.client import SearchUnavailable, get_client, unavailable_on_failure
from search.errors import SearchDown
from search.index import alias_name
from search.models import AnswerTask
from search.services import search_breaker, search_knowledge

logger = logging.getLogger(__name__)

SNIPPET_CHARS = 240
#: A passage is cut to fit the budget only when at least this many tokens of it would remain.
MIN_PASSAGE_TOKENS = 40


def done_channel(task_id: int) -> str:
    """Redis pub/sub channel told when a task finishes (long-polling requests wait on it)."""
    return f"{settings.CACHES['default'].get('KEY_PREFIX', 'kb')}:answer-done:{task_id}"


def answer_state(task: AnswerTask) -> dict[str, Any]:
    """The task as the API, the WebSocket and the dashboard show it."""
    return {
        "id": task.pk,
        "kb": task.kb.slug,
        "question": task.question,
        "mode": task.mode,
        "passages": task.passages,
        "status": task.status,
        "answer": task.answer,
        "citations": task.citations,
        "generator": task.generator,
        "extractive": task.generator == "extractive",
        "model": task.model,
        "retrieval_ms": task.retrieval_ms,
        "generation_ms": task.generation_ms,
        "prompt_tokens": task.prompt_tokens,
        "completion_tokens": task.completion_tokens,
        "error": task.error,
        # One line each: why it failed or was canceled; the previous attempt's error while retrying.
        "reason": task.reason,
        "retry_reason": task.retry_reason,
        "attempts": task.attempts,
        "cancel_requested": task.cancel_requested,
        "reused": task.reused_from_id is not None,
        "created_at": task.created_at.isoformat() if task.created_at else None,
        "started_at": task.started_at.isoformat() if task.started_at else None,
        "finished_at": task.finished_at.isoformat() if task.finished_at else None,
        "expires_at": task.expires_at.isoformat() if task.expires_at else None,
    }


def publish_final(task: AnswerTask) -> None:
    """Tell WebSockets (group) and long-polls (pub/sub) that the task reached a final state."""
    send_to_groups([group_name("answer", task.pk)], {"type": "answer", **answer_state(task)})
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
        try:
            client.publish(done_channel(task.pk), task.status)
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:  # long-polls also re-read the row every second
        logger.warning("answer %s: done notification failed: %s", task.pk, exc)


# --- retrieval -----------------------------------------------------------------------------------


def chunk_sources(chunk_ids: list[str]) -> dict[str, dict]:
    """Full text and embedding of chunks by id (search hits carry only snippets), in one round trip."""
    if not chunk_ids:
        return {}

    def fetch() -> dict:
        with unavailable_on_failure("mget"):
            return get_client().mget(index=alias_name(), ids=chunk_ids, source_includes=["content", "embedding"])

    response = search_breaker().call(fetch)
    return {doc["_id"]: doc["_source"] for doc in response["docs"] if doc.get("found")}


def retrieve(*, kb_slug: str, question: str, mode: str, passages: int) -> tuple[list[Passage], dict[str, list]]:
    """The best chunks for the question (not collapsed per document), numbered from 1 by rank,
    and their stored embeddings by chunk id (for `search.asking.relevance`)."""
    hits = search_knowledge(
        kb_slugs=[kb_slug], query=question, mode=mode, size=passages, highlight=False, collapse=False
    ).hits
    sources = chunk_sources([hit.chunk_id for hit in hits])
    found = []
    for hit in hits:
        source = sources.get(hit.chunk_id)
        if source is None:
            continue  # deleted since the search: never cite what is gone
        found.append(
            Passage(
                number=len(found) + 1, chunk_id=hit.chunk_id, document_id=hit.document_id,
                source_id=hit.source_id, kb=hit.kb, title=hit.title, url=hit.url,
                position=hit.position, content=source.get("content", ""),
                where=hit.where, location=hit.location,
            )
        )
    return found, {chunk_id: source.get("embedding") for chunk_id, source in sources.items()}


def build_context(passages: list[Passage], budget_tokens: int) -> list[Passage]:
    """The best passages that fit the token budget, in rank order; the last one cut to fit if worth it."""
    chosen: list[Passage] = []
    left = budget_tokens
    for passage in passages:
        cost = estimate_tokens(passage.title) + estimate_tokens(passage.content) + 4
        if cost <= left:
            chosen.append(passage)
            left -= cost
            continue
        room = left - estimate_tokens(passage.title) - 4
        if room >= MIN_PASSAGE_TOKENS:
            cut = passage.content[: room * 4].rsplit(" ", 1)[0] + " …"
            chosen.append(Passage(**{**passage.__dict__, "content": cut}))
        break
    return chosen


def snippet(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > SNIPPET_CHARS:
        text = text[:SNIPPET_CHARS].rsplit(" ", 1)[0] + " …"
    return html.escape(text)


def citations(passages: list[Passage], generation: Generation) -> list[dict]:
    """One citation per passage the answer cites, in order of first citation."""
    by_number = {passage.number: passage for passage in passages}
    return [
        {
            "number": number,
            "document_id": by_number[number].document_id,
            "title": by_number[number].title,
            "position": by_number[number].position,
            "location": by_number[number].location,
            "where": by_number[number].where,
            "chunk_id": by_number[number].chunk_id,
            "source_id": by_number[number].source_id,
            "url": by_number[number].url,
            "snippet": snippet(generation.quotes.get(number) or by_number[number].content),
            "quote": generation.quotes.get(number, ""),
        }
        for number in generation.cited
        if number in by_number
    ]


# --- streaming -----------------------------------------------------------------------------------


class AnswerStream:
    """Collects generated text; saves and publishes it at most every KB_ANSWER_STREAM_INTERVAL."""

    def __init__(self, runner: AnswerRunner):
        self.runner = runner
        self.parts: list[str] = []
        self.published = 0
        self.last = time.monotonic()
        self.interval = settings.KB_ANSWER_STREAM_INTERVAL

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def write(self, delta: str) -> None:
        self.parts.append(delta)
        if time.monotonic() - self.last >= self.interval:
            self.flush()
            self.runner.check()  # a batch boundary: stop here when canceled or the lease is lost

    def flush(self) -> None:
        self.last = time.monotonic()
        text = self.text
        if len(text) <= self.published:
            return
        task = self.runner.job
        # Save first, publish second: a socket connecting in between reads at least this text.
        AnswerTask.objects.filter(pk=task.pk, lease_owner=task.lease_owner).update(answer=text)
        send_to_groups(
            [group_name("answer", task.pk)],
            {"type": "token", "id": task.pk, "offset": self.published, "text": text[self.published:]},
        )
        self.published = len(text)


# --- the runner ----------------------------------------------------------------------------------


class AnswerRunner(JobRunner):
    model = AnswerTask
    job: AnswerTask

    def __init__(self, job, keeper):
        super().__init__(job, keeper)
        self.stream = AnswerStream(self)
        self.generation: Generation | None = None
        self.context: list[Passage] = []
        self.retrieval_ms: float | None = None
        self.generation_ms: float | None = None

    @classmethod
    def default_lease_seconds(cls) -> int:
        return settings.KB_ANSWER_LEASE_SECONDS

    def run(self) -> None:
        task = self.job
        kb = KnowledgeBase.objects.get(pk=task.kb_id)
        # Record the generation read *before* retrieval: an ingest finishing meanwhile moves the
        # generation on, so this answer can never be reused for content it did not see.
        AnswerTask.objects.filter(pk=task.pk, lease_owner=task.lease_owner).update(
            kb_generation=kb.generation, answer=""
        )
        send_to_groups([group_name("answer", task.pk)], {"type": "state", **answer_state(task), "answer": ""})
        started = time.perf_counter()
        try:
            found, vectors = retrieve(kb_slug=kb.slug, question=task.question, mode=task.mode, passages=task.passages)
        except (SearchUnavailable, SearchDown) as exc:
            raise TransientError(f"retrieval failed: {exc}")
        self.retrieval_ms = round((time.perf_counter() - started) * 1000, 1)
        self.check()
        if not any_relevant(task.question, found, vectors, embedder=kb.embedder, language=kb.language):
            # Nothing to answer from: say so plainly, cite nothing, and spend no model call on it.
            self.generation = nothing_relevant(kb)
            self.stream.write(self.generation.text)
        else:
            self.context = build_context(found, settings.KB_ANSWER_CONTEXT_TOKENS)
            generator = get_generator(task.generator, embedder=kb.embedder, request_id=f"answer-{task.pk}")
            started = time.perf_counter()
            try:
                self.generation = generator.generate(task.question, self.context, self.stream.write)
            finally:
                self.generation_ms = round((time.perf_counter() - started) * 1000, 1)
        self.stream.flush()

    def final_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"retrieval_ms": self.retrieval_ms, "generation_ms": self.generation_ms}
        generation = self.generation
        if generation is None:  # failed or canceled: keep what was written so far
            fields["answer"] = self.stream.text
            return fields
        fields.update(
            answer=generation.text,
            citations=citations(self.context, generation),
            model=generation.model,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
        )
        return fields

    def on_finish(self, status: str) -> None:
        task = AnswerTask.objects.select_related("kb").get(pk=self.job.pk)
        if task.is_finished:
            publish_final(task)
        elif status == JobStatus.QUEUED:  # a transient failure: it will be retried
            send_to_groups([group_name("answer", task.pk)], {"type": "state", **answer_state(task)})

