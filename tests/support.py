"""Test helpers that are real parts, not mocks: worker processes and a counting embedder."""

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from django.conf import settings

from kbportal.worker import process_environment, start_worker_process
from search.embedders import HashingEmbedder

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
    return start_worker_process(queues or ("high", "default", "low"), worker_env(**extra_env), burst=burst)


def stop_worker(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
