"""The `/ws/jobs/` WebSocket: live progress of one job (`?job=<id>`) or of a knowledge base's jobs (`?kb=<slug>`).

Staff only. Anonymous sockets are closed with 4401, non-staff with 4403 (4400: neither `job` nor
`kb` given, 4404: no such job or knowledge base). The socket is accepted first so the browser
sees the code (a refusal during the handshake only shows up as 1006) and knows not to reconnect.

On connect the consumer joins the group *before* reading the current state, so no event can fall
between the snapshot and the subscription; it then sends

    {"type": "state", "scope": "job" | "kb", "kb": <slug>, "jobs": [<job_state>, ...]}

and relays each progress event (a `job_state` payload, `"type": "job"`). A client may send
`{"type": "resync"}` to get the state message again.

Coalescing: the producer already throttles, but a kb group carries every job of that kb and a
slow browser must not queue up stale numbers, so the consumer relays at most one message per job
per `MIN_INTERVAL`, the latest one winning, flushed by a short timer. A final state (succeeded,
failed, canceled) is sent at once and replaces anything pending for that job; a non-final event
arriving after it is dropped.

Final states are guaranteed, not hoped for: the channel layer (Redis pub/sub) delivers at most
once, so an event (even a final one) can be lost, e.g. while a server process reconnects to Redis.
A job that is not finished and has been silent for `STALE_AFTER` seconds is therefore re-read from
PostgreSQL (the truth) and its state sent if it changed. A finished job, or a worker that died
mid-job, is shown right within a few seconds whatever happened to the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from dashboard.overview import kb_live_jobs
from ingestion.models import IngestionJob
from ingestion.services import job_state
from kbportal.claiming import FINISHED_STATUSES
from kbportal.progress import group_name
from kbportal.sockets import JsonSocketConsumer
from knowledge.models import KnowledgeBase

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
#: Per job, at most one relayed message per this many seconds (10/s); the rest are coalesced.
MIN_INTERVAL = 0.1
#: An unfinished job silent this long is re-read from the database; while re-reads find nothing
#: new (a job waiting in a long queue) the wait doubles up to `STALE_MAX`.
STALE_AFTER = 3.0
STALE_MAX = 30.0
#: Jobs of a knowledge base sent on connect: every active one plus this many recent ones.
RECENT_JOBS = 20
#: Fields that make two states of a job differ for a viewer.
COMPARED = ("status", "stage", "total", "done", "failed", "skipped", "error")


def is_final(payload: dict[str, Any]) -> bool:
    return payload.get("status") in FINISHED_STATUSES


@database_sync_to_async
def job_snapshot(job_id: int) -> dict | None:
    job = IngestionJob.objects.select_related("kb").filter(pk=job_id).first()
    if job is None:
        return None
    return {"type": "state", "scope": "job", "kb": job.kb_slug, "jobs": [job_state(job)]}


@database_sync_to_async
def kb_snapshot(slug: str) -> dict | None:
    kb = KnowledgeBase.objects.filter(slug=slug).first()
    if kb is None:
        return None
    jobs = kb_live_jobs(kb, recent=RECENT_JOBS)
    return {"type": "state", "scope": "kb", "kb": kb.slug, "jobs": [job_state(job) for job in jobs]}


@database_sync_to_async
def job_states(job_ids: list[int]) -> list[dict]:
    return [job_state(job) for job in IngestionJob.objects.select_related("kb").filter(pk__in=job_ids)]


class JobProgressConsumer(JsonSocketConsumer):
    group: str | None = None
    #: What this socket watches: ("job", id) or ("kb", slug).
    watched: tuple[str, int | str] = ("", "")
    tasks: tuple[asyncio.Task, ...] = ()

    async def connect(self) -> None:
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not (user.is_staff and user.is_active):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        job_id, slug = (query.get("job") or [""])[0], (query.get("kb") or [""])[0]
        if job_id.isdigit():
            self.watched = ("job", int(job_id))
        elif slug:
            self.watched = ("kb", slug)
        else:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        group = group_name(*self.watched)
        self.pending: dict[Any, tuple[dict, str | None]] = {}  # job id -> latest state not yet sent, as JSON
        self.sent: dict[Any, dict] = {}  # job id -> last state sent
        self.last_sent: dict[Any, float] = {}  # job id -> when (monotonic)
        self.recheck: dict[Any, tuple[float, float]] = {}  # unfinished job id -> (re-read at, wait)
        self.wake = asyncio.Event()
        # Join first, read second: an event published meanwhile is queued for us, not lost.
        await self.channel_layer.group_add(group, self.channel_name)
        self.group = group
        state = await self.snapshot()
        if state is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_state(state)
        self.tasks = (asyncio.create_task(self.flush_pending()), asyncio.create_task(self.watch_silent_jobs()))

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "resync" and self.group is not None:
            state = await self.snapshot()
            if state is not None:
                await self.send_state(state)

    async def progress_event(self, event: dict) -> None:
        """A progress event from the group (see kbportal.progress); `text` is its payload as JSON."""
        await self.offer(event["payload"], event.get("text"))

    # -- internals ---------------------------------------------------------------------------
    async def snapshot(self) -> dict | None:
        kind, key = self.watched
        return await (job_snapshot(key) if kind == "job" else kb_snapshot(key))

    async def send_state(self, state: dict) -> None:
        now = time.monotonic()
        for job in state["jobs"]:
            self.pending.pop(job["id"], None)
            self.remember(job["id"], job, now)
        await self.send_json(state)

    def remember(self, key: Any, payload: dict, now: float) -> None:
        self.sent[key] = payload
        self.last_sent[key] = now
        if is_final(payload):
            self.recheck.pop(key, None)
        else:
            self.recheck[key] = (now + STALE_AFTER, STALE_AFTER)

    async def offer(self, payload: dict, text: str | None = None) -> None:
        """Send now, coalesce for later, or drop, as the rules in the module docstring say."""
        key = payload.get("id")
        previous = self.sent.get(key)
        if previous is not None and is_final(previous) and (not is_final(payload) or same_state(previous, payload)):
            return  # never move a finished job back, nor repeat its final state
        if key in self.recheck:
            self.recheck[key] = (time.monotonic() + STALE_AFTER, STALE_AFTER)
        if is_final(payload) or time.monotonic() >= self.last_sent.get(key, 0.0) + MIN_INTERVAL:
            self.pending.pop(key, None)
            await self.send_job(key, payload, text)
        else:
            self.pending[key] = (payload, text)
            self.wake.set()

    async def send_job(self, key: Any, payload: dict, text: str | None = None) -> None:
        """Send one job's state; `text`, when given, is it as JSON (encoded once by the producer
        for every socket of the group, not once per socket)."""
        self.remember(key, payload, time.monotonic())
        await (self.send_json(payload) if text is None else self.send(text_data=text))

    async def flush_pending(self) -> None:
        """Send each coalesced job's latest state once its interval has passed."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                due = min(self.last_sent.get(key, 0.0) + MIN_INTERVAL for key in self.pending)
                await asyncio.sleep(max(due - time.monotonic(), 0))
                for key in list(self.pending):
                    if self.last_sent.get(key, 0.0) + MIN_INTERVAL <= time.monotonic():
                        item = self.pending.pop(key, None)
                        if item is not None:
                            await self.send_job(key, *item)

    async def watch_silent_jobs(self) -> None:
        """Re-read unfinished jobs that went quiet: their events may have been dropped on the way."""
        while True:
            await asyncio.sleep(STALE_AFTER / 3)
            now = time.monotonic()
            silent = [key for key, (due, _) in self.recheck.items() if due <= now]
            if not silent:
                continue
            for key in silent:
                wait = min(self.recheck[key][1] * 2, STALE_MAX)
                self.recheck[key] = (now + wait, wait)
            with contextlib.suppress(Exception):  # a database hiccup must not kill the socket
                for state in await job_states(silent):
                    if not same_state(self.sent.get(state["id"]), state):
                        self.pending.pop(state["id"], None)
                        await self.send_job(state["id"], state)


def same_state(a: dict | None, b: dict | None) -> bool:
    return a is not None and b is not None and all(a.get(name) == b.get(name) for name in COMPARED)
