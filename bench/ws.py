"""`manage.py bench_ws`: many WebSocket subscribers on one job's group while the job publishes.

Set-up: a staff user with a database session (its cookie is what a browser sends), a knowledge
base and a running job row. The bench starts the ASGI server on a free port the way `make up` runs
it (uvicorn with 2 worker processes, or one daphne) and opens N sockets to `/ws/jobs/?job=<id>` from
separate client processes (websockets' sans-I/O client protocol on asyncio transports), so the
subscribers share neither the server's processes nor the publisher's. Once every
socket has its state message, the bench publishes progress events through the producer's real
path, `kbportal.progress.ProgressThrottle.publish` -> `send_to_groups` -> the channel layer's
`group_send`, at the producer's throttled rate (KB_PROGRESS_INTERVAL), from this process instead
of a worker (the worker calls the same function; a synthetic job makes the event count and rate
exact). Each payload carries `sent_at` (added by `send_to_groups`); a client records the time its
bytes reached the client process minus `sent_at`. Publisher, Redis, server and clients share this
machine's clock and its cores, so the clients' own work is part of the figure.

The client processes are spawned (a clean interpreter) and import this module without Django set
up, so models and services are imported inside the functions that use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import resource
import time
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from urllib.parse import urlsplit

import websockets
from django.conf import settings
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from bench.measuring import percentile
from bench.processes import free_port, process_environment, start_web_process, wait_live

#: Seconds the clients may take to connect, and to hand in their delays once told to.
CONNECT_TIMEOUT = 120
#: Clients stop waiting for the missing events after this long without one.
QUIET_SECONDS = 5.0
#: Handshakes one client process has in flight at once.
OPENING = 16


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
            "p50": percentile(delays, 0.5),
            "p95": percentile(delays, 0.95),
            "p99": percentile(delays, 0.99),
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
    from kbportal.claiming import JobStatus
    from knowledge.services import knowledge_base_create

    slug = f"bench-ws-{uuid.uuid4().hex[:8]}"
    kb = knowledge_base_create(slug=slug, name=slug, embedder="hashing")
    return IngestionJob.objects.create(kb=kb, kind=JobKind.SYNC, status=JobStatus.RUNNING, total=10_000,
                                       started_at=timezone.now(), lease_owner="bench-ws")


# --- a client process (no Django in here) --------------------------------------------------------


class Subscriber(asyncio.Protocol):
    """One socket on websockets' sans-I/O client protocol, read straight from the transport.

    A message is timed when its bytes reach the process, not when a reader task gets round to it:
    with 500 sockets in a process, the library's asyncio client (a task, a queue and a frame
    assembler per socket) added its own queueing to the figure, and used half as much CPU as the
    server, on the same two cores.
    """

    def __init__(self, url: str, headers: dict, delays: list[float]):
        self.protocol = ClientProtocol(parse_uri(url))
        request = self.protocol.connect()
        request.headers.update(headers)
        self.protocol.send_request(request)
        self.delays = delays
        self.opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.flush()

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self.message(json.loads(event.data), received)
        if self.protocol.handshake_exc is not None and not self.opened.done():
            self.opened.set_exception(self.protocol.handshake_exc)
        self.flush()  # pongs, the close handshake

    def message(self, payload: dict, received: float) -> None:
        if not self.opened.done():
            if payload.get("type") == "state":
                self.opened.set_result(None)
            else:
                self.opened.set_exception(ValueError(f"expected the state message first, got {payload.get('type')}"))
        elif payload.get("type") == "job" and "sent_at" in payload:
            self.delays.append((received - payload["sent_at"]) * 1000)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the state message"))

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def close(self) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close()
            self.flush()
        self.transport.close()


def client_process(url: str, headers: dict, count: int, conn: Connection) -> None:
    """Hold `count` sockets: report (connected, connect seconds, errors) once they are up, then wait
    for the number of events to expect and send back the delays (ms) of those received."""
    asyncio.run(_client(url, headers, count, conn))


async def _client(url: str, headers: dict, count: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    host, port = urlsplit(url).hostname, urlsplit(url).port
    subscribers: list[Subscriber] = []
    delays: list[float] = []
    errors: list[str] = []
    # Handshakes in flight at once: the server answers each after a session and a job read from
    # PostgreSQL, and drops a handshake that waited 10 s; this measures its connect rate, not a storm.
    opening = asyncio.Semaphore(OPENING)

    async def subscribe() -> None:
        async with opening:
            try:
                _, subscriber = await loop.create_connection(lambda: Subscriber(url, headers, delays), host, port)
            except OSError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            try:
                await asyncio.wait_for(subscriber.opened, CONNECT_TIMEOUT)
            except (OSError, ValueError, websockets.WebSocketException, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                subscriber.transport.close()
                return
        subscribers.append(subscriber)

    started = time.monotonic()
    await asyncio.gather(*(subscribe() for _ in range(count)))
    conn.send((len(subscribers), time.monotonic() - started, errors[:3]))
    events = await asyncio.to_thread(conn.recv)
    seen, quiet_since = -1, time.monotonic()
    while len(delays) < len(subscribers) * events and time.monotonic() - quiet_since < QUIET_SECONDS:
        if len(delays) != seen:
            seen, quiet_since = len(delays), time.monotonic()
        await asyncio.sleep(0.05)
    for subscriber in subscribers:
        subscriber.close()
    conn.send(delays)


# --- the bench -------------------------------------------------------------------------------------


def receive(conn: Connection, what: str) -> object:
    """The next thing a client process sends, or an error after CONNECT_TIMEOUT seconds."""
    if not conn.poll(CONNECT_TIMEOUT):
        raise RuntimeError(f"a client process sent no {what} within {CONNECT_TIMEOUT} s")
    return conn.recv()


def run_round(base_ws: str, origin: str, session_key: str, job, subscribers: int, events: int, interval: float,
              processes: int) -> WsRound:
    from ingestion.services import job_groups, job_state
    from kbportal.progress import ProgressThrottle

    url = f"{base_ws}/ws/jobs/?job={job.pk}"
    headers = {"Cookie": f"sessionid={session_key}", "Origin": origin}
    context = multiprocessing.get_context("spawn")  # a clean interpreter: no Django, no inherited sockets
    shares = [share for n in range(processes) if (share := subscribers // processes + (n < subscribers % processes))]
    clients = []
    for share in shares:
        ours, theirs = context.Pipe()
        process = context.Process(target=client_process, args=(url, headers, share, theirs), daemon=True)
        process.start()
        clients.append((process, ours))
    try:
        reports = [receive(conn, "report of its connections") for _, conn in clients]
        connected = sum(report[0] for report in reports)
        errors = sorted({error for report in reports for error in report[2]})[:3]
        throttle = ProgressThrottle(job_groups(job), interval=interval)
        for n in range(events):
            job.done = n + 1
            payload = job_state(job)
            while not throttle.publish(payload):  # the producer's own throttle sets the pace
                time.sleep(max(throttle.last_sent + interval - time.monotonic(), 0.001))
        for _, conn in clients:
            conn.send(events)
        delays = [delay for _, conn in clients for delay in receive(conn, "delays")]
    finally:
        for process, _ in clients:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return WsRound(subscribers, connected, events, delays, max(report[1] for report in reports), errors)


def run_bench(*, counts: list[int], events: int, server: str = "uvicorn", workers: int = 2, processes: int = 2,
              out=print) -> list[WsRound]:
    """Start the server, run one round per subscriber count, stop the server."""
    raise_fd_limit(max(counts) * 2 + 256)  # inherited by the server and the client processes
    session_key = staff_session()
    job = bench_job()
    port = free_port()
    log_path = settings.VAR_DIR / "bench_ws_server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the server
    process = start_web_process(port, process_environment(KB_PRELOAD=""), server=server, workers=workers, log=log)
    rounds = []
    try:
        wait_live(f"http://127.0.0.1:{port}", process)
        shape = f"uvicorn, {workers} worker processes" if server == "uvicorn" else "daphne, 1 process"
        out(f"{shape}, port {port}; {settings.CHANNEL_LAYERS['default']['BACKEND']}; job {job.pk}; "
            f"subscribers in {processes} client processes; {events} events per round at the producer's "
            f"throttle ({settings.KB_PROGRESS_INTERVAL:g} s)")
        for count in counts:
            rounds.append(run_round(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", session_key, job, count,
                                    events, settings.KB_PROGRESS_INTERVAL, processes))
    finally:
        process.terminate()
        with contextlib.suppress(Exception):
            process.wait(timeout=20)
        log.close()
        job.kb.delete()
    text = log_path.read_text(errors="replace")  # uvicorn's wording, then daphne's
    failures = text.count("Exception in ASGI application") + text.count("Exception inside application")
    out(f"server log: {failures} exceptions in the ASGI application ({log_path})")
    return rounds
