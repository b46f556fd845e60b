"""The ASGI server as a child process, for benchmarks and tests that need a real one on a free port.

`make up` starts its own server (scripts/up.sh); this starts the same application the same way,
so what a benchmark or fault test measures is what runs.
"""

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
