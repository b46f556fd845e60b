"""`manage.py bench_ws`: many WebSocket subscribers on one job's group while the job publishes.

Set-up: a staff user with a database session (its cookie is what a browser sends), a knowledge
base and a running job row. The bench starts the ASGI server (uvicorn, as `make up` runs it, or
daphne) on a free port and opens N sockets to `/ws/jobs/?job=<id>` from this process (asyncio,
the `websockets` client). Once every socket has its state message, the bench publishes progress
events through the producer's real path, `kbportal.progress.ProgressThrottle.publish` ->
`send_to_groups` -> channels-redis `group_send`, at the producer's throttled rate
(KB_PROGRESS_INTERVAL), from this process instead of a worker (the worker calls the same
function; a synthetic job makes the event count and rate exact). Each payload carries `sent_at`
(added by `send_to_groups`); each subscriber records receipt time minus `sent_at` for every event.
Publisher and subscribers share this machine's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
import uuid
from dataclasses import dataclass

import websockets
from django.conf import settings

from ingestion.loadtesting import percentile


@dataclass
class WsRound:
    subscribers: int
    connected: int
    events: int
    delays_ms: list[float]
    connect_seconds: float
    errors: list[str]

    @property
    def expected(self) -> int:
        return self.connected * self.events

    def summary(self) -> dict:
        delays = sorted(self.delays_ms)
        return {
            "subscribers": self.subscribers,
            "connected": self.connected,
            "delivered": f"{len(delays)}/{self.expected}",
            "p50": percentile(delays, 50),
            "p95": percentile(delays, 95),
            "p99": percentile(delays, 99),
            "max": delays[-1] if delays else None,
            "connect_s": self.connect_seconds,
        }


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(needed, soft), hard), hard))


def staff_session() -> str:
    """A session key for a staff user, as the browser's `sessionid` cookie would carry."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore

    user, _ = get_user_model().objects.get_or_create(username="bench-ws", defaults={"is_staff": True})
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def bench_job():
    """A knowledge base and a running job whose group the subscribers join."""
    from django.utils import timezone

    from ingestion.models import IngestionJob, JobKind
    from ingestion.services import kb_create
    from kbportal.claiming import JobStatus

    slug = f"bench-ws-{uuid.uuid4().hex[:8]}"
    kb = kb_create(slug=slug, name=slug, embedder="hashing")
    return IngestionJob.objects.create(kb=kb, kind=JobKind.SYNC, status=JobStatus.RUNNING, total=10_000,
                                       started_at=timezone.now(), lease_owner="bench-ws")


async def _subscriber(url: str, headers: dict, ready: asyncio.Event, counter: list[int], total: int,
                      delays: list[float], done: asyncio.Event, errors: list[str]) -> bool:
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=60, max_queue=None,
                                      ping_interval=None) as socket:
            first = json.loads(await socket.recv())
            if first.get("type") != "state":
                raise websockets.InvalidMessage(f"expected the state message first, got {first.get('type')}")
            counter[0] += 1
            if counter[0] + counter[1] == total:
                ready.set()
            while not done.is_set():
                try:
                    message = await asyncio.wait_for(socket.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                received = time.time()
                payload = json.loads(message)
                if payload.get("type") == "job" and "sent_at" in payload:
                    delays.append((received - payload["sent_at"]) * 1000)
            return True
    except (OSError, websockets.WebSocketException, TimeoutError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        counter[1] += 1
        if counter[0] + counter[1] == total:
            ready.set()
        return False


async def run_round(base_ws: str, origin: str, session_key: str, job, subscribers: int, events: int,
                    interval: float) -> WsRound:
    from ingestion.services import job_state
    from kbportal.progress import ProgressThrottle

    url = f"{base_ws}/ws/jobs/?job={job.pk}"
    headers = {"Cookie": f"sessionid={session_key}", "Origin": origin}
    ready, done = asyncio.Event(), asyncio.Event()
    counter = [0, 0]  # connected with state, failed
    delays: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    tasks = []
    for _ in range(subscribers):
        tasks.append(asyncio.create_task(_subscriber(url, headers, ready, counter, subscribers, delays, done, errors)))
        await asyncio.sleep(0.002)  # a steady connect ramp, not a SYN flood
    try:
        await asyncio.wait_for(ready.wait(), timeout=120)
    except TimeoutError:
        done.set()
        raise RuntimeError(f"{counter[0]} of {subscribers} sockets got their state message in 120 s, "
                           f"{counter[1]} failed ({errors[:3]})") from None
    connect_seconds = time.monotonic() - started
    throttle = ProgressThrottle([f"job-{job.pk}", f"kb-{job.kb.slug}"], interval=interval)
    for n in range(events):
        job.done = n + 1
        payload = job_state(job)
        # The producer's own throttle sets the pace; publish is sync (async_to_sync), so off the loop.
        while not await asyncio.to_thread(throttle.publish, payload):
            await asyncio.sleep(max(throttle.last_sent + interval - time.monotonic(), 0.001))
    # Let the last events arrive: until all are in, or none came for 5 s (the rest are lost).
    seen, quiet_since = -1, time.monotonic()
    while len(delays) < counter[0] * events and time.monotonic() - quiet_since < 5:
        if len(delays) != seen:
            seen, quiet_since = len(delays), time.monotonic()
        await asyncio.sleep(0.1)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return WsRound(subscribers, counter[0], events, delays, connect_seconds, sorted(set(errors))[:3])


def run_bench(*, counts: list[int], events: int, server: str = "uvicorn", out=print) -> list[WsRound]:
    """Start the server, run one round per subscriber count, stop the server."""
    from asgiref.sync import async_to_sync

    from kbportal.serving import free_port, start_web_process, wait_live
    from kbportal.worker import process_environment

    raise_fd_limit(max(counts) * 2 + 256)
    session_key = staff_session()
    job = bench_job()
    port = free_port()
    log = open(settings.VAR_DIR / "bench_ws_server.log", "wb")  # noqa: SIM115 - closed with the server
    process = start_web_process(port, process_environment(KB_PRELOAD=""), server=server, log=log)
    rounds = []
    try:
        wait_live(f"http://127.0.0.1:{port}", process)
        out(f"{server} on port {port}; job {job.pk}; {events} events per round at the producer's throttle "
            f"({settings.KB_PROGRESS_INTERVAL:g} s)")
        for count in counts:
            result = async_to_sync(run_round)(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", session_key,
                                               job, count, events, settings.KB_PROGRESS_INTERVAL)
            rounds.append(result)
    finally:
        process.terminate()
        with contextlib.suppress(Exception):
            process.wait(timeout=20)
        log.close()
        job.kb.delete()
    return rounds
