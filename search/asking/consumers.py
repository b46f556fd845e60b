"""`/ws/answers/<id>/`: one answer task, streamed live.

Who may listen: the API key that asked (`?key=kb_...` - browsers cannot set headers on a
WebSocket - or an `Authorization: Bearer` header), or a staff session. The socket is accepted
first and then closed with 4401 (no or bad credentials), 4403 (a key without the `ask` scope or
not the asker's) or 4404 (no such task), so a client sees why and does not reconnect.

Messages, in order:

    {"type": "state", ...answer_state}         on connect (answer = text written so far), and again
                                                when a retried task starts over
    {"type": "token", "offset": n, "text": s}  new text; `offset` is where it starts in the answer
    {"type": "answer", ...answer_state}        the final state with citations; the socket then closes

The consumer joins the group before reading the row, so no text falls between the snapshot and the
subscription, and forwards only text beyond what it has sent (offsets), so nothing is doubled. Text
that arrives past a gap (an event lost on the way) triggers a fresh state from the database. An
unfinished task silent for `STALE_AFTER` seconds is re-read, so a lost final event still shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from rest_framework.exceptions import AuthenticationFailed

from kbportal.claiming import FINISHED_STATUSES
from kbportal.progress import group_name
from kbportal.sockets import JsonSocketConsumer
from knowledge.authentication import authenticate_key
from search.asking.answering import answer_state
from search.asking.services import answer_get, answer_visible_to

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
STALE_AFTER = 5.0


def raw_key(scope: dict) -> str:
    query = parse_qs(scope.get("query_string", b"").decode())
    key = (query.get("key") or [""])[0]
    if key:
        return key
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, credential = value.decode(errors="replace").partition(" ")
            if scheme.lower() == "bearer":
                return credential.strip()
    return ""


@database_sync_to_async
def authorise(scope: dict, task_id: int) -> tuple[int, dict | None]:
    """(0, state) when this socket may follow the task, else (close code, None)."""
    raw, user, api_key = raw_key(scope), scope.get("user"), None
    if raw:
        try:
            api_key = authenticate_key(raw)
        except AuthenticationFailed:
            return CLOSE_UNAUTHENTICATED, None
        if not api_key.has_scope("ask"):
            return CLOSE_FORBIDDEN, None
        user = None
    elif user is None or not user.is_authenticated:
        return CLOSE_UNAUTHENTICATED, None
    task = answer_get(task_id)
    if task is None:
        return CLOSE_NOT_FOUND, None
    if not answer_visible_to(task, api_key=api_key, user=user):
        # A key probing other people's task ids learns nothing: same code as a missing task.
        return (CLOSE_NOT_FOUND if api_key is not None else CLOSE_FORBIDDEN), None
    return 0, answer_state(task)


@database_sync_to_async
def read_state(task_id: int) -> dict | None:
    task = answer_get(task_id)
    return answer_state(task) if task is not None else None


class AnswerConsumer(JsonSocketConsumer):
    group: str | None = None
    watcher: asyncio.Task | None = None

    async def connect(self) -> None:
        await self.accept()
        self.task_id = int(self.scope["url_route"]["kwargs"]["task_id"])
        self.length = 0  # characters of the answer this socket has sent
        self.finished = False
        self.heard = asyncio.get_running_loop().time()
        code, _ = await authorise(self.scope, self.task_id)
        if code:
            await self.close(code=code)
            return
        # Join first, read second: text published meanwhile is queued for us, not lost.
        self.group = group_name("answer", self.task_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        state = await read_state(self.task_id)
        if state is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_state(state)
        if not self.finished:
            self.watcher = asyncio.create_task(self.watch_silence())

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        if self.watcher is not None:
            self.watcher.cancel()

    async def progress_event(self, event: dict) -> None:
        """An event of the answer's group (see search.asking.answering)."""
        if self.finished:
            return
        self.heard = asyncio.get_running_loop().time()
        payload = event["payload"]
        kind = payload.get("type")
        if kind == "token":
            await self.relay_text(payload["offset"], payload["text"])
        elif kind in ("state", "answer"):
            await self.send_state(payload)

    async def relay_text(self, offset: int, text: str) -> None:
        end = offset + len(text)
        if end <= self.length:
            return  # already sent (it was in the state read on connect)
        if offset > self.length:
            state = await read_state(self.task_id)  # we missed text: the row has at least up to `end`
            if state is not None:
                await self.send_state(state)
            return
        await self.send_json({"type": "token", "id": self.task_id, "offset": self.length,
                              "text": text[self.length - offset:]})
        self.length = end

    async def send_state(self, state: dict) -> None:
        final = state.get("status") in FINISHED_STATUSES
        await self.send_json({**state, "type": "answer" if final else "state"})
        self.length = len(state.get("answer") or "")
        if final:
            self.finished = True
            await self.close()

    async def watch_silence(self) -> None:
        """Re-read the task when it went quiet: its final event may have been dropped."""
        loop = asyncio.get_running_loop()
        while not self.finished:
            await asyncio.sleep(STALE_AFTER / 2)
            if loop.time() - self.heard < STALE_AFTER:
                continue
            self.heard = loop.time()
            with contextlib.suppress(Exception):  # a database hiccup must not kill the socket
                state = await read_state(self.task_id)
                if state is not None and (state["status"] in FINISHED_STATUSES
                                          or len(state["answer"]) > self.length):
                    await self.send_state(state)

