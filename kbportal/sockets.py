"""The base of our WebSocket consumers: a socket, once closed, is never sent to, and a message
is dispatched without Channels' hop to the sync thread (see `dispatch`).

Our consumers send from more than their handlers: group events keep arriving, and timers and
database re-reads run in their own tasks, until Channels hands the consumer `websocket.disconnect`.
The socket is closed before that in two ways: the consumer closes it itself (a 44xx refusal, a
final answer) while it is still in its group, or the client goes away, which the server learns
inside the app's `receive` call that returns the disconnect, a step before the consumer handles
it. uvicorn refuses any later send with RuntimeError("Unexpected ASGI message 'websocket.send',
after sending 'websocket.close' ...") and the consumer or its task died with a traceback.

This base wraps the ASGI `send` and `receive` its consumer is given: the socket counts as closed
from the consumer's own `websocket.close` and from the moment `receive` returns the disconnect (the
same step in which the server marks it), and whatever is sent after that is dropped. A send the
server fails because the client vanished during it (an OSError, as the ASGI spec asks of servers)
marks it closed too; the disconnect follows.
"""

from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class JsonSocketConsumer(AsyncJsonWebsocketConsumer):
    closed = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def receive_noting_disconnect() -> dict:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
            return message

        async def send_while_open(message: dict) -> None:
            if self.closed:
                return
            if message["type"] == "websocket.close":
                self.closed = True
            try:
                await send(message)
            except OSError:
                self.closed = True

        await super().__call__(scope, receive_noting_disconnect, send_while_open)

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch without its per-message `close_old_connections` in the sync thread.

        That hop through the process's one thread-sensitive executor cost about as much as the rest
        of a delivery, and 500 sockets of a group took it one after another for every event. Our
        handlers use the database only through `database_sync_to_async`, which closes old
        connections around each call.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

