"""The ASGI server and rq workers as child processes, for benchmarks and tests that race real ones.

`make up` starts its own server and workers (scripts/up.sh); these start the same application and
the same worker class the same way, so what a benchmark or fault test measures is what runs.
"""

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_mode() -> dict[str, str]:
    """The settings of a production server on plain HTTP (as `make up` runs): debug off.

    With KB_DEBUG on, Django wraps every cursor to log each query with its parameters, which cost a
    cached search about a quarter of its time at the API; benchmarks measure what production runs.
    """
    return {"KB_DEBUG": "0", "KB_SECURE_SSL": "0", "KB_SECRET_KEY": secrets.token_urlsafe(50)}


def start_web_process(
    port: int, env: dict[str, str], *, server: str = "uvicorn", workers: int = 1, log=None
) -> subprocess.Popen:
    """Start uvicorn (or daphne) serving kbportal.asgi on 127.0.0.1:`port`; see `wait_live`."""
    bin_dir = Path(sys.executable).parent
    if server == "daphne":
        args = [str(bin_dir / "daphne"), "-b", "127.0.0.1", "-p", str(port), "kbportal.asgi:application"]
    else:
        args = [str(bin_dir / "uvicorn"), "kbportal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--no-access-log", "--timeout-graceful-shutdown", "10",
                "--ws-per-message-deflate", "false"]
    return subprocess.Popen(
        args, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL
    )


def wait_live(base_url: str, process: subprocess.Popen | None = None, seconds: float = 60) -> None:
    """Wait until /health/live answers; raise if the process died or the deadline passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the web server exited with {process.returncode}")
        try:
            if httpx.get(f"{base_url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not come up within {seconds}s")


def process_environment(**extra: str) -> dict[str, str]:
    """This process's environment, pinned to the database it is using (tests use a test database)."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env["KB_DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env["KB_REDIS_URL"] = settings.REDIS_URL
    env["KB_ES_URL"] = settings.KB_ES_URL
    env["KB_ES_INDEX"] = settings.KB_ES_INDEX
    env.update(extra)
    return env


def start_worker_process(
    queues: tuple[str, ...], env: dict[str, str], *, burst: bool = False, log=None
) -> subprocess.Popen:
    """Start `manage.py rqworker` with the worker class `make up` runs (kbportal.worker.Worker)."""
    args = [
        sys.executable,
        str(settings.BASE_DIR / "manage.py"),
        "rqworker",
        *queues,
        "--worker-class",
        "kbportal.worker.Worker",
    ]
    args.append("--with-scheduler")  # retries are scheduled (enqueue_in); some worker must move them
    if burst:
        args.append("--burst")
    return subprocess.Popen(
        args, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL,
        start_new_session=True,  # its own process group, with the scheduler it forks
    )


def wait_until(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    """The first true value of `predicate()`, asked every `interval` seconds; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
