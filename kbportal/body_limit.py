"""The cap on a whole HTTP request body (KB_MAX_REQUEST_BYTES), enforced at the ASGI edge.

Why here and not in Django: Django's ASGI handler reads the entire body into a spooled temporary
file (on disk past FILE_UPLOAD_MAX_MEMORY_SIZE) before any middleware, view or upload handler
runs, and its own limit (DATA_UPLOAD_MAX_MEMORY_SIZE) does not apply to files. So a multipart
request of many files, each under KB_MAX_UPLOAD_BYTES, could fill the disk. This wrapper sits in
front of Django: a declared Content-Length over the cap is refused before a byte of the body is
read (uvicorn sends `100 Continue` only once the application reads, so such a client never sends
it); a body without a length (chunked) is counted as it arrives and refused once over the cap,
having buffered at most the cap. Either way the answer is 413 in the API's error shape, and the
connection is closed rather than drained.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from kbportal.logging import request_id_from

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (chunked) or an unreadable one."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """ASGI middleware: HTTP request bodies over settings.KB_MAX_REQUEST_BYTES get 413."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = settings.KB_MAX_REQUEST_BYTES
        length = declared_length(scope)
        if length is not None and length > limit:
            await refuse(scope, send, f"{length} bytes", limit)
            return

        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # To the application the client is gone (Django drops its spooled body and
                    # answers nothing); the 413 is ours to send.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        await self.app(scope, counted_receive, watched_send)
        if over and not started:
            await refuse(scope, send, f"over {limit} bytes", limit)


async def refuse(scope: Scope, send: Send, size: str, limit: int) -> None:
    """413 in the API's error shape (kbportal.errors), closing the connection."""
    incoming = next((value for name, value in scope.get("headers", ()) if name == b"x-request-id"), b"")
    request_id = request_id_from(incoming.decode("latin-1"))
    body = json.dumps({
        "error": "payload_too_large",
        "detail": f"The request body is {size}; the limit is {limit} bytes.",
        "request_id": request_id,
    }).encode()
    await send({
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"connection", b"close"),
        ],
    })
    await send({"type": "http.response.body", "body": body})
