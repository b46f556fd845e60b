"""The `/ws/jobs/` WebSocket: live progress of one job (`?job=<id>`) or of a knowledge base's jobs (`?kb=<slug>`).

Staff only. Anonymous sockets are closed with 4401, non-staff with 4403; the socket is accepted
first so the browser sees the code (a refusal during the handshake only shows up as 1006) and
knows not to reconnect.

On connect the consumer joins the group *before* reading the current state, so no event can fall
between the snapshot and the subscription; it then sends

    {"type": "state", "scope": "job" | "kb", "kb": <slug>, "jobs": [<job_state>, ...]}

and relays each progress event (a `job_state` payload, `"type": "job"`). The producer already
throttles; the consumer coalesces as well, because a kb group carries every job of that kb and a
slow browser must not queue up stale numbers: at most one message per job per `MIN_INTERVAL`, the
latest one winning, flushed by a short timer. A final state (succeeded, failed, canceled) is
always sent at once, replacing anything pending for that job.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from kbportal.claiming import FINISHED_STATUSES

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_BAD_REQUEST = 4400
#: Per job, at most one relayed message per this many seconds (10/s); the rest are coalesced.
MIN_INTERVAL = 0.1
#: Jobs of a knowledge base sent on connect: every active one plus this many recent ones.
RECENT_JOBS = 20


def is_final(payload: dict[str, Any]) -> bool:
    return payload.get("status") in FINISHED_STATUSES


@database_sync_to_async
def job_snapshot(job_id: int) -> dict | None:
    from ingestion.models import IngestionJob
    from ingestion.services import job_state

    job = IngestionJob.objects.select_related("kb").filter(pk=job_id).first()
    if job is None:
        return None
    return {"type": "state", "scope": "job", "kb": job.kb.slug, "jobs": [job_state(job)]}


@database_sync_to_async
def kb_snapshot(slug: str) -> dict | None:
    from ingestion.dashboard.overview import kb_live_jobs
    from ingestion.services import job_state
    from knowledge.models import KnowledgeBase

    kb = KnowledgeBase.objects.filter(slug=slug).first()
    if kb is None:
        return None
    return {"type": "state", "scope": "kb", "kb": kb.slug, "jobs": [job_state(job) for job in kb_live_jobs(kb)]}


class JobProgressConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None

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
            group, snapshot = f"job-{int(job_id)}", lambda: job_snapshot(int(job_id))
        elif slug:
            group, snapshot = f"kb-{slug}", lambda: kb_snapshot(slug)
        else:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        self.pending: dict[Any, dict] = {}
        self.last_sent: dict[Any, float] = {}
        self.flusher: asyncio.Task | None = None
        # Join first, read second: an event published meanwhile is queued for us, not lost.
        await self.channel_layer.group_add(group, self.channel_name)
        self.group = group
        state = await snapshot()
        if state is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        now = time.monotonic()
        for job in state["jobs"]:
            self.last_sent[job["id"]] = now
        await self.send_json(state)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        flusher = getattr(self, "flusher", None)
        if flusher is not None:
            flusher.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; a client message "resync" asks for the current state again."""
        if content == {"type": "resync"} and self.group is not None:
            scope, key = self.group.split("-", 1)
            state = await (job_snapshot(int(key)) if scope == "job" else kb_snapshot(key))
            if state is not None:
                await self.send_json(state)

    async def progress_event(self, event: dict) -> None:
        payload = event["payload"]
        key = payload.get("id")
        if is_final(payload):
            self.pending.pop(key, None)
            await self._send_job(key, payload)
            return
        due = self.last_sent.get(key, 0.0) + MIN_INTERVAL
        if time.monotonic() >= due and key not in self.pending:
            await self._send_job(key, payload)
            return
        self.pending[key] = payload
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush_later())

    async def _send_job(self, key: Any, payload: dict) -> None:
        self.last_sent[key] = time.monotonic()
        await self.send_json(payload)

    async def _flush_later(self) -> None:
        """Send every pending job's latest state once its interval has passed."""
        while self.pending:
            now = time.monotonic()
            due = min(self.last_sent.get(key, 0.0) + MIN_INTERVAL for key in self.pending)
            if due > now:
                await asyncio.sleep(due - now)
                continue
            for key in list(self.pending):
                if self.last_sent.get(key, 0.0) + MIN_INTERVAL <= time.monotonic():
                    await self._send_job(key, self.pending.pop(key))
