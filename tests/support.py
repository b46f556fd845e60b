"""Test helpers that are real parts, not mocks: worker and web processes, a counting embedder, and
services a test stops and starts on its own port (an Elasticsearch node, Redis, PostgreSQL, a TCP
proxy that takes the object store away)."""

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

from bench.processes import free_port, process_environment, start_web_process, start_worker_process, wait_live
from knowledge.embedders import HashingEmbedder

ROOT = Path(__file__).resolve().parent.parent
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
    return start_worker_process(queues or settings.KB_INGESTION_QUEUES, worker_env(**extra_env), burst=burst)


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


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.3)
        return True
    except httpx.HTTPError:
        return False


def _es_as_user() -> list[str]:
    """Elasticsearch refuses to run as root: as root, run it as KB_ES_USER (kbsearch), which scripts/lib.sh
    creates. setpriv execs (runuser would stay as a parent that SIGKILLs the server 2 s after a SIGTERM)."""
    if os.geteuid() != 0:
        return []
    user = os.environ.get("KB_ES_USER", "kbsearch")
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]


class ElasticsearchNode:
    """A real single-node Elasticsearch of our own, from the distribution `make test` unpacked (KB_ES_HOME,
    run on KB_ES_JAVA_HOME), on a free HTTP port and a free transport port, its data in a temporary directory.

    `stop()` then `start()` brings it back on the same ports with the same data. `freeze()` stops its
    processes without closing the port (requests hang) until `thaw()`. `destroy()` stops it and removes
    its data. A start takes 10-25 s on 2 cores (three JVMs: launcher, its flags probe, the server), so
    share a node where tests allow it.
    """

    def __init__(self, heap: str = "512m", start_seconds: float = 90):
        home = os.environ.get("KB_ES_HOME")
        if not home or not (Path(home) / "bin" / "elasticsearch").exists():
            raise RuntimeError(f"KB_ES_HOME={home!r} is no Elasticsearch distribution: run the tests with `make test`")
        self.home = Path(home)
        self.java_home = os.environ.get("KB_ES_JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
        self.heap = heap
        self.start_seconds = start_seconds
        self.port = free_port()
        self.transport_port = free_port()
        while self.transport_port == self.port:
            self.transport_port = free_port()
        # Not pytest's tmp_path: its base directory is mode 700, closed to the kbsearch user.
        self.dir = Path(tempfile.mkdtemp(prefix="kb-es-"))
        for sub in ("data", "logs"):
            (self.dir / sub).mkdir()
        if os.geteuid() == 0:
            user = os.environ.get("KB_ES_USER", "kbsearch")
            for path in (self.dir, self.dir / "data", self.dir / "logs"):
                shutil.chown(path, user, user)
        self.log_path = self.dir / "console.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the node (again) and wait for its cluster health to be yellow."""
        if self.running():
            return
        env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "JAVA_OPTS", "_JAVA_OPTIONS",
                                                                   "ES_PATH_CONF")}
        # C1 only: a third less start time (25 s -> 16 s on a busy 2-core machine); these nodes serve a few
        # small requests, where C2's faster code never pays for its compile time.
        env.update(ES_JAVA_HOME=self.java_home,
                   ES_JAVA_OPTS=f"-Xms{self.heap} -Xmx{self.heap} -XX:TieredStopAtLevel=1")
        settings = {
            "node.name": f"test-{self.port}",
            "cluster.name": f"kbportal-test-{self.port}",
            "discovery.type": "single-node",
            "network.host": "127.0.0.1",
            "http.port": self.port,
            "transport.port": self.transport_port,
            "path.data": self.dir / "data",
            "path.logs": self.dir / "logs",
            "xpack.security.enabled": "false",
            "xpack.ml.enabled": "false",
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        args = [arg for key, value in settings.items() for arg in ("-E", f"{key}={value}")]
        with open(self.log_path, "ab") as log:
            # Its own process group: the launcher JVM (our pid, setpriv execs into it) and the server
            # JVM it runs; freeze() and a last-resort kill reach both.
            self.process = subprocess.Popen(
                [*_es_as_user(), str(self.home / "bin" / "elasticsearch"), *args],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Elasticsearch exited ({self.process.returncode}) before it answered:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/_cluster/health", params={"wait_for_status": "yellow", "timeout": "1s"},
                             timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"Elasticsearch did not reach yellow within {self.start_seconds}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def freeze(self) -> None:
        """Stop the node's processes without closing its port: requests hang until they time out."""
        if self.running():
            self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.running():
            self._signal_group(signal.SIGCONT)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the launcher stops the server gracefully), SIGKILL after `timeout`; returns once the
        port no longer answers."""
        if self.process is not None:
            if self.process.poll() is None:
                self._signal_group(signal.SIGCONT)  # a frozen process handles SIGTERM only once resumed
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    self.process.wait()
            self._signal_group(signal.SIGKILL)  # nothing of the group may outlive the launcher
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and answers(self.url):
            time.sleep(0.05)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


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
