"""Django's ASGI handler, with the middleware chain run in one thread hop on a reused thread.

Our views are all sync (DRF, django-ratelimit and the ORM are), and Django's ASGI handler cost
them CPU on every request in two ways (measured with py-spy on /health/live under uvicorn):

- It loads the middleware in async mode, and each of Django's `MiddlewareMixin` middlewares then
  runs `process_request` and `process_response` through `sync_to_async`: about fifteen crossings
  between the event loop and the request's thread. Here the chain is loaded in sync mode and
  entered once: every middleware and the view run in one call in the request's thread.
- It gives each request a new thread (a one-thread executor per `ThreadSensitiveContext`), and a
  second one to join it afterwards. Here each request still runs alone on a thread of its own -
  a slow request never holds up another, and Django's per-thread database connection belongs to
  one request at a time - but the thread is taken from `RequestThreads` and given back for the
  next request once it has nothing left to run (asgiref's `ThreadSensitiveContext(executor=)`).

Everything else (reading the body, disconnects, streaming, the request signals) is Django's.
"""

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler

#: Idle request threads a process keeps; more are started when more requests run at once.
IDLE_THREADS = 32


class RequestThread(ThreadPoolExecutor):
    """One thread; knows whether work is still running on it (a request abandoned by its client)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self._lock = threading.Lock()
        self._running = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        with self._lock:
            self._running += 1
        return super().submit(self._run, fn, args, kwargs)

    def _run(self, fn, args, kwargs):
        try:
            return fn(*args, **kwargs)
        finally:  # before the caller sees the result: idle as soon as it is done
            with self._lock:
                self._running -= 1

    @property
    def idle(self) -> bool:
        with self._lock:
            return self._running == 0


class RequestThreads:
    """Request threads of one process, used by its event loop only (no lock needed)."""

    def __init__(self, keep: int = IDLE_THREADS) -> None:
        self.keep = keep
        self._idle: list[RequestThread] = []

    def take(self) -> RequestThread:
        return self._idle.pop() if self._idle else RequestThread()

    def give_back(self, thread: RequestThread) -> None:
        # Still running: Django stopped waiting (the client went away) but sync code cannot be
        # interrupted. Let it finish on its own; the next request must not queue behind it.
        if thread.idle and len(self._idle) < self.keep:
            self._idle.append(thread)
        else:
            thread.shutdown(wait=False)


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self.threads = RequestThreads()

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        thread = self.threads.take()
        try:
            async with ThreadSensitiveContext(executor=thread):
                await self.handle(scope, receive, send)
        finally:
            self.threads.give_back(thread)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
