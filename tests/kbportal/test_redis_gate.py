"""kbportal.redis_gate against a real redis-server that the tests freeze (SIGSTOP), stop and restart."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from kbportal import redis_gate
from kbportal.redis_gate import GatedConnectionPool, RedisSkipped
from tests.support import RedisServer

TIMEOUT = 0.3


@pytest.fixture
def server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def gated_client(server: RedisServer) -> redis.Redis:
    pool = GatedConnectionPool.from_url(server.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                                        retry=Retry(NoBackoff(), 1))
    return redis.Redis(connection_pool=pool)


def timed(fn) -> tuple[type[Exception] | None, float]:
    started = time.perf_counter()
    try:
        fn()
    except redis.RedisError as exc:
        return type(exc), time.perf_counter() - started
    return None, time.perf_counter() - started


def test_a_hanging_redis_costs_one_timeout_then_fails_fast_and_is_logged_once(server, caplog):
    client = gated_client(server)
    client.set("k", "v")
    server.freeze()
    with caplog.at_level(logging.WARNING, logger="kbportal.redis_gate"):
        error, seconds = timed(lambda: client.get("k"))
        assert error is not None and seconds >= TIMEOUT  # the client's one retry is skipped
        for _ in range(20):
            error, seconds = timed(lambda: client.get("k"))
            assert error is RedisSkipped and seconds < 0.02
    logged = [r.getMessage() for r in caplog.records if r.name == "kbportal.redis_gate"]
    assert len(logged) == 1 and "is not answering" in logged[0]


def test_after_the_skip_one_thread_tries_again_while_the_others_still_skip(server, monkeypatch):
    monkeypatch.setattr(redis_gate, "SKIP_SECONDS", 0.5)
    client = gated_client(server)
    barrier = threading.Barrier(16)

    def attempt() -> tuple[type[Exception] | None, float]:
        barrier.wait()
        return timed(client.ping)

    def at_once() -> list[tuple[type[Exception] | None, float]]:
        with ThreadPoolExecutor(16) as pool:
            return [future.result() for future in [pool.submit(attempt) for _ in range(16)]]

    assert [error for error, _ in at_once()] == [None] * 16  # 16 open connections in the pool
    server.freeze()
    assert timed(client.ping)[1] >= TIMEOUT
    time.sleep(0.6)
    outcomes = at_once()
    assert len([seconds for _, seconds in outcomes if seconds >= TIMEOUT]) == 1  # the one that tried again
    assert [error for error, seconds in outcomes if seconds < TIMEOUT] == [RedisSkipped] * 15


def test_redis_is_used_again_once_it_answers(server, monkeypatch, caplog):
    monkeypatch.setattr(redis_gate, "SKIP_SECONDS", 0.5)
    client = gated_client(server)
    client.set("k", "v")
    server.freeze()
    assert timed(lambda: client.get("k"))[1] >= TIMEOUT
    server.thaw()
    assert timed(lambda: client.get("k"))[0] is RedisSkipped  # still within the skip
    time.sleep(0.6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kbportal.redis_gate"):
        assert client.get("k") == b"v"
    logged = [r.getMessage() for r in caplog.records if r.name == "kbportal.redis_gate"]
    assert logged == [f"Redis at 127.0.0.1:{server.port} answers again"]
    assert client.get("k") == b"v"


def test_a_stopped_redis_is_skipped_and_a_restarted_one_used_at_once(server, monkeypatch):
    monkeypatch.setattr(redis_gate, "SKIP_SECONDS", 0.5)
    client = gated_client(server)
    client.set("k", "v")
    server.stop()
    server.start()  # empty, same port: the pooled socket is stale, Redis answers
    assert client.get("k") is None
    server.stop()
    assert timed(lambda: client.get("k"))[0] is redis.ConnectionError  # refused: the gate closes
    assert timed(lambda: client.get("k"))[0] is RedisSkipped
    server.start()
    time.sleep(0.6)
    assert client.set("k", "again") and client.get("k") == b"again"
