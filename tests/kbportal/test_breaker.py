"""The circuit breaker against real Redis: tripping, failing fast, the single half-open probe,
shared state across instances (processes), concurrency, and the in-memory fallback."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kbportal import breaker as breaker_module
from kbportal.breaker import CircuitBreaker, CircuitOpen

OPEN_SECONDS = 0.5


class Interrupted(BaseException):
    """Stands in for a cancellation (asyncio.CancelledError, KeyboardInterrupt)."""


def make(name: str = "search", **options) -> CircuitBreaker:
    options.setdefault("failure_exceptions", (ConnectionError, TimeoutError))
    options.setdefault("open_seconds", OPEN_SECONDS)
    return CircuitBreaker(name, **options)


def down() -> None:
    raise ConnectionError("service down")


def up() -> str:
    return "ok"


def run(breaker: CircuitBreaker, fn) -> None:
    try:
        breaker.call(fn)
    except ConnectionError:
        pass


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(40):
        if breaker.state()["state"] == "open":
            return
        run(breaker, down)
    pytest.fail("the breaker did not open")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_settings_give_the_defaults():
    policy = CircuitBreaker("search", failure_exceptions=(ConnectionError,)).policy
    assert (policy.failure_ratio, policy.min_calls, policy.window_seconds, policy.open_seconds) == (0.5, 20, 60, 30.0)


def test_call_returns_the_result_while_closed():
    breaker = make()
    assert breaker.call(lambda a, b=0: a + b, 2, b=3) == 5
    assert breaker.state() | {"opened_at": None} == {
        "name": "search",
        "state": "closed",
        "failures": 0,
        "calls": 1,
        "opened_at": None,
        "retry_after": 0.0,
        "storage": "redis",
    }


def test_does_not_open_before_min_calls():
    breaker = make()
    for _ in range(19):
        run(breaker, down)
    assert breaker.state()["state"] == "closed"
    assert breaker.state()["failures"] == 19
    run(breaker, down)
    assert breaker.state()["state"] == "open"


def test_opens_at_half_failures_over_min_calls():
    breaker = make()
    for _ in range(10):
        run(breaker, up)
    for _ in range(9):
        run(breaker, down)
    assert breaker.state()["state"] == "closed"
    run(breaker, down)
    state = breaker.state()
    assert (state["state"], state["calls"], state["failures"]) == ("open", 20, 10)
    assert state["opened_at"] == pytest.approx(time.time(), abs=2)
    assert breaker.transitions["closed->open"] == 1


def test_stays_closed_below_failure_ratio():
    breaker = make()
    for _ in range(11):
        run(breaker, up)
    for _ in range(9):
        run(breaker, down)
    assert breaker.state()["state"] == "closed"


def test_fails_fast_while_open():
    breaker = make(open_seconds=5)
    trip(breaker)
    reached = []
    started = time.perf_counter()
    with pytest.raises(CircuitOpen) as raised:
        breaker.call(reached.append, 1)
    elapsed = time.perf_counter() - started
    assert reached == []
    assert elapsed < 0.05
    assert 4 < raised.value.retry_after <= 5


def test_fails_fast_under_load_while_open():
    breaker = make(open_seconds=5)
    trip(breaker)
    started = time.perf_counter()
    for _ in range(200):
        with pytest.raises(CircuitOpen):
            breaker.call(up)
    assert (time.perf_counter() - started) / 200 < 0.005


def test_half_open_lets_exactly_one_probe_through_racing_threads():
    breaker = make()
    trip(breaker)
    time.sleep(OPEN_SECONDS + 0.1)
    assert breaker.state()["state"] == "half_open"
    barrier = threading.Barrier(32)
    reached = []

    def probe() -> str:
        reached.append(1)
        time.sleep(0.2)
        return "ok"

    def attempt(_: int) -> str:
        barrier.wait()
        try:
            return breaker.call(probe)
        except CircuitOpen:
            return "refused"

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(attempt, range(32)))
    assert len(reached) == 1
    assert sorted(outcomes).count("refused") == 31


def test_probe_success_closes_and_resets_window():
    breaker = make()
    trip(breaker)
    time.sleep(OPEN_SECONDS + 0.1)
    assert breaker.call(up) == "ok"
    state = breaker.state()
    assert (state["state"], state["calls"], state["failures"], state["opened_at"]) == ("closed", 0, 0, None)
    assert breaker.call(up) == "ok"
    assert breaker.transitions == {"closed->open": 1, "open->half_open": 1, "half_open->closed": 1}


def test_probe_failure_reopens_for_open_seconds():
    breaker = make()
    trip(breaker)
    time.sleep(OPEN_SECONDS + 0.1)
    run(breaker, down)
    state = breaker.state()
    assert state["state"] == "open"
    assert 0.3 < state["retry_after"] <= OPEN_SECONDS
    with pytest.raises(CircuitOpen):
        breaker.call(up)
    assert breaker.transitions["half_open->open"] == 1


def test_interrupted_probe_frees_the_probe_slot():
    breaker = make(probe_seconds=10)
    trip(breaker)
    time.sleep(OPEN_SECONDS + 0.1)

    def interrupted() -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        breaker.call(interrupted)
    assert breaker.call(up) == "ok"
    assert breaker.state()["state"] == "closed"


def test_other_exceptions_pass_through_and_count_as_success():
    breaker = make()

    def bad_input() -> None:
        raise ValueError("400: bad query")

    for _ in range(30):
        with pytest.raises(ValueError):
            breaker.call(bad_input)
    state = breaker.state()
    assert (state["state"], state["calls"], state["failures"]) == ("closed", 30, 0)


def test_guard_counts_failures_in_a_block():
    breaker = make()
    for _ in range(20):
        with pytest.raises(TimeoutError), breaker.guard():
            raise TimeoutError
    with pytest.raises(CircuitOpen), breaker.guard():
        pytest.fail("the block ran while open")


def test_record_failure_and_success_feed_the_window():
    breaker = make()
    for _ in range(10):
        breaker.record_success()
    for _ in range(10):
        breaker.record_failure()
    assert breaker.state()["state"] == "open"


def test_reset_closes_the_breaker():
    breaker = make(open_seconds=30)
    trip(breaker)
    breaker.reset()
    assert breaker.state()["state"] == "closed"
    assert breaker.call(up) == "ok"


def test_state_is_shared_by_instances_with_the_same_name():
    first, second = make("search"), make("search")
    trip(first)
    assert second.state()["state"] == "open"
    with pytest.raises(CircuitOpen):
        second.call(up)


def test_state_is_isolated_between_names(clean_redis):
    trip(make("search"))
    other = make("storage")
    assert other.state()["state"] == "closed"
    assert other.call(up) == "ok"
    assert {key.decode() for key in clean_redis.keys("kb:breaker:storage:*")} == {"kb:breaker:storage:window"}


def test_concurrent_calls_are_not_serialised():
    breaker = make()

    def slow() -> str:
        time.sleep(0.2)
        return "ok"

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: breaker.call(slow), range(16)))
    elapsed = time.perf_counter() - started
    assert results == ["ok"] * 16
    assert elapsed < 1.0  # serialised would take 16 * 0.2 = 3.2 s


def test_works_in_memory_when_redis_is_unreachable(caplog):
    breaker = make("no-redis", redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    try:
        assert breaker.call(up) == "ok"
        assert "using in-memory state" in caplog.text
        assert breaker.state()["storage"] == "memory"
        trip(breaker)
        started = time.perf_counter()
        with pytest.raises(CircuitOpen):
            breaker.call(up)
        assert time.perf_counter() - started < 0.05
        time.sleep(OPEN_SECONDS + 0.1)
        assert breaker.call(up) == "ok"
        assert breaker.state()["state"] == "closed"
    finally:
        breaker.reset()


def test_memory_fallback_lets_one_probe_through_racing_threads():
    breaker = make("no-redis-race", redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    try:
        trip(breaker)
        time.sleep(OPEN_SECONDS + 0.1)
        barrier = threading.Barrier(16)
        reached = []

        def attempt(_: int) -> None:
            barrier.wait()
            try:
                breaker.call(lambda: (reached.append(1), time.sleep(0.1)))
            except CircuitOpen:
                pass

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(attempt, range(16)))
        assert len(reached) == 1
    finally:
        breaker.reset()


def test_a_closed_verdict_is_reused_briefly_and_a_trip_elsewhere_is_seen_after_it(monkeypatch):
    monkeypatch.setattr(breaker_module, "ADMIT_REUSE_SECONDS", 1.0)
    here, elsewhere = make("search", open_seconds=30), make("search", open_seconds=30)
    started = time.monotonic()
    assert here.call(up) == "ok"  # asks Redis: closed
    trip(elsewhere)
    assert time.monotonic() - started < 1.0
    assert here.call(up) == "ok"  # its closed verdict, still fresh
    time.sleep(1.05)
    with pytest.raises(CircuitOpen):
        here.call(up)
    trip_here = make("search", open_seconds=30)
    trip_here.reset()
    assert trip_here.call(up) == "ok"
    trip(trip_here)  # a trip this process records takes effect at once
    with pytest.raises(CircuitOpen):
        trip_here.call(up)



def test_successes_are_recorded_together_and_with_the_next_failure(monkeypatch):
    monkeypatch.setattr(breaker_module, "SUCCESS_RECORD_SECONDS", 1.0)
    here, elsewhere = make("search"), make("search")  # another process, as far as Redis is concerned
    started = time.monotonic()
    for _ in range(5):
        assert here.call(up) == "ok"
    assert time.monotonic() - started < 1.0
    assert elsewhere.state()["calls"] == 1  # the first success was recorded, four are held
    run(here, down)  # a failure takes the held successes with it
    assert (elsewhere.state()["calls"], elsewhere.state()["failures"]) == (6, 1)
    for _ in range(3):
        assert here.call(up) == "ok"
    assert elsewhere.state()["calls"] == 6
    time.sleep(1.05)
    assert here.call(up) == "ok"  # held long enough: recorded with this one
    assert elsewhere.state()["calls"] == 10


def test_held_successes_count_against_a_failure_burst():
    """30 successes (29 of them held), then failures: the breaker opens at the 30th failure, when
    half of the 60 calls failed (it would at the 19th if the held successes were not counted)."""
    breaker = make()
    for _ in range(30):
        assert breaker.call(up) == "ok"
    for failure in range(1, 31):
        run(breaker, down)
        if failure < 30:
            assert breaker.transitions["closed->open"] == 0, failure
    assert breaker.transitions["closed->open"] == 1


# -- the failing period: why calls fail and since when ---------------------------------------------


def timed_out() -> None:
    raise TimeoutError("no answer")


def test_failure_gives_the_latest_reason_and_when_the_failing_period_began():
    breaker = make(describe_failure=lambda error: f"described: {error}")
    assert breaker.failure() is None
    run(breaker, down)
    first = breaker.failure()
    assert first.reason == "described: service down"
    assert first.since == pytest.approx(time.time(), abs=2)
    time.sleep(0.2)
    with pytest.raises(TimeoutError):
        breaker.call(timed_out)
    latest = breaker.failure()
    assert (latest.reason, latest.since) == ("described: no answer", first.since)
    assert latest.seconds >= 0.2


def test_a_success_ends_the_failing_period_at_once_for_every_instance():
    here, elsewhere, observer = make("search"), make("search"), make("search")
    run(here, down)
    assert observer.failure().reason == "ConnectionError: service down"
    # Its admission learns that a failing period is on, so the success is recorded, not held.
    assert elsewhere.call(up) == "ok"
    assert observer.failure() is None


def test_failing_period_of_a_closed_breaker_ends_a_window_after_its_last_failure():
    breaker = make(window_seconds=1)
    run(breaker, down)
    assert breaker.failure() is not None
    time.sleep(1.2)
    assert breaker.failure() is None
    assert breaker.state()["state"] == "closed"


def test_failing_period_lasts_while_tripped_and_ends_with_the_successful_probe():
    breaker = make(window_seconds=1)
    trip(breaker)
    since = breaker.failure().since
    time.sleep(1.2)  # past the window: the tripped breaker is still failing
    assert breaker.state()["state"] == "half_open"
    assert breaker.failure().since == since
    with pytest.raises(TimeoutError):
        breaker.call(timed_out)  # the probe fails: same period, new reason
    assert (breaker.failure().reason, breaker.failure().since) == ("TimeoutError: no answer", since)
    time.sleep(OPEN_SECONDS + 0.1)
    assert breaker.call(up) == "ok"
    assert breaker.failure() is None


def test_record_failure_keeps_the_reason_given():
    breaker = make()
    breaker.record_failure("search server answered 503")
    assert breaker.failure().reason == "search server answered 503"


def test_reset_ends_the_failing_period():
    breaker = make()
    trip(breaker)
    breaker.reset()
    assert breaker.failure() is None


def test_memory_fallback_keeps_the_failing_period_too():
    breaker = make("no-redis-failing", redis_url=f"redis://127.0.0.1:{closed_port()}/0", window_seconds=1)
    try:
        run(breaker, down)
        assert breaker.failure().reason == "ConnectionError: service down"
        assert breaker.state()["storage"] == "memory"
        assert breaker.call(up) == "ok"
        assert breaker.failure() is None
        trip(breaker)
        time.sleep(1.2)
        assert breaker.failure().reason == "ConnectionError: service down"
    finally:
        breaker.reset()
