"""Test helpers that are real parts, not mocks: worker and web processes, a counting embedder, and
services a test stops and starts on its own port (search server, Redis, PostgreSQL, a TCP proxy
that takes the object store away)."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis
from django.conf import settings

from kbportal.serving import free_port, start_web_process, wait_live
from kbportal.worker import process_environment, start_worker_process
from search.embedders import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
NOIDA = ROOT / ".venv" / "bin" / "noida-db"
EMBEDDED_KEY = "kb:test:embedded"


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, recording every text it embeds in a Redis list (side-effect count).

    KB_TEST_EMBED_DELAY slows each call down, so a test can kill a worker mid-job.
    """

    name = "counting"

    def embed(self, texts):
        client = redis.Redis.from_url(settings.REDIS_URL)
        if texts:
            client.rpush(EMBEDDED_KEY, *texts)
        delay = float(os.environ.get("KB_TEST_EMBED_DELAY", "0"))
        if delay:
            time.sleep(delay)
        return super().embed(texts)


def embedded_texts() -> list[str]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    return [item.decode() for item in client.lrange(EMBEDDED_KEY, 0, -1)]


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a worker process that sees this test run's database and Redis."""
    defaults = {
        "KB_EXTRA_EMBEDDERS": "counting=tests.support.CountingEmbedder",
        "KB_JOB_LEASE_SECONDS": str(settings.KB_JOB_LEASE_SECONDS),
        "PYTHONPATH": str(ROOT),
    }
    return process_environment(**{**defaults, **extra})


def start_worker(*queues: str, burst: bool = False, **extra_env: str) -> subprocess.Popen:
    return start_worker_process(queues or ("high", "default", "low"), worker_env(**extra_env), burst=burst)


def stop_worker(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # A worker's forked rq scheduler outlives a killed worker: sweep its process group too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_until(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.3)
        return True
    except httpx.HTTPError:
        return False


class SearchServer:
    """A noida-db process serving only the Elasticsearch API on `port`, data kept in `data_dir`."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(NOIDA), "start", "--only", "elasticsearch", "--elasticsearch-port", str(self.port),
             "--data-dir", str(self.data_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the wrapper and the server stop together
        )
        wait_for_http(self.url)

    def freeze(self) -> None:
        """Stop the server's processes without closing its port: requests hang until they time out."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            os.killpg(self.process.pid, signal.SIGCONT)  # a frozen process handles SIGTERM only once resumed
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # the server itself (the wrapper's child) must be gone too before the port is reused
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and answers(self.url):
            time.sleep(0.05)


def wait_for_http(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {seconds}s")


class RedisServer:
    """Our own redis-server on a free port, no persistence: a restart comes back empty."""

    def __init__(self):
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def freeze(self) -> None:
        """Stop the server without closing its port: commands hang until they time out."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()  # a frozen process handles SIGTERM only once resumed
            self.process.terminate()
            self.process.wait(timeout=10)


class PostgresCluster:
    """A throw-away PostgreSQL cluster (initdb as the postgres OS user) on a free port.

    Never the machine's shared server on 5432: this one is ours to stop.
    """

    def __init__(self):
        self.port = free_port()
        bin_dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self.bin = bin_dirs[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="kb-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/kbportal"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=self.dir)

    def init(self) -> None:
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync")
        self.start()
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "kbportal")

    def start(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                          "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self) -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """Forwards a free port to `target_port`; `stop()` closes it and drops every connection, so the
    service behind it is unreachable (connection refused) until `start()`, its data intact."""

    def __init__(self, target_port: int):
        self.port = free_port()
        self.target_port = target_port
        self.listener: socket.socket | None = None
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the accepting thread
            except OSError:
                pass
            listener.close()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class WebServer:
    """The ASGI application under uvicorn in its own process, on a free port."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.env = env
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's stderr, kept for its lifetime
        self.process = start_web_process(self.port, self.env, log=self.log)
        try:
            wait_live(self.url, self.process)
        except RuntimeError as exc:
            self.log.seek(0)
            raise RuntimeError(f"{exc}: {self.log.read()[-3000:].decode(errors='replace')}") from None

    def stop(self) -> None:
        if self.process is not None:
            stop_worker(self.process, timeout=15)
