"""Fixed-window counters in Redis (kbportal.ratelimits)."""

import threading
from unittest import mock

import pytest
from django.core.cache import cache
from django.test import RequestFactory

from kbportal import ratelimits


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.parametrize(("rate", "parsed"), [("50/s", (50, 1)), ("600/m", (600, 60)), ("10/15m", (10, 900)),
                                              ("5/d", (5, 86400)), ("7/2h", (7, 7200))])
def test_rates_parse(rate, parsed):
    assert ratelimits.parse_rate(rate) == parsed


@pytest.mark.parametrize("rate", ["", "50", "50/x", "/s", "5/0.5s", "-1/s"])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match="Not a rate"):
        ratelimits.parse_rate(rate)


def test_counts_within_a_window_and_starts_again_in_the_next():
    with mock.patch("kbportal.ratelimits.time.time", return_value=1_000_000.0):
        usages = [ratelimits.hit("g", "caller", "3/m") for _ in range(4)]
        assert [usage.count for usage in usages] == [1, 2, 3, 4]
        assert [usage.exceeded for usage in usages] == [False, False, False, True]
        assert ratelimits.peek("g", "caller", "3/m").count == 4  # peeking does not count
        assert ratelimits.hit("g", "other", "3/m").count == 1  # another caller, its own budget
        assert ratelimits.hit("other-group", "caller", "3/m").count == 1
    seconds_left = usages[-1].seconds_left
    assert 1 <= seconds_left <= 60
    with mock.patch("kbportal.ratelimits.time.time", return_value=1_000_000.0 + seconds_left):
        assert ratelimits.hit("g", "caller", "3/m").count == 1


def test_the_counter_expires_with_its_window():
    usage = ratelimits.hit("g", "expiring", "5/h")
    key, _ = ratelimits._window("g:expiring", 3600)
    ttl = cache.client.get_client().ttl(key)
    assert 0 < ttl <= usage.seconds_left + 1


def test_windows_of_different_callers_end_at_different_times():
    with mock.patch("kbportal.ratelimits.time.time", return_value=1_000_000.0):
        ends = {ratelimits.hit("g", f"caller-{n}", "1/h").seconds_left for n in range(20)}
    assert len(ends) > 10


def test_concurrent_hits_are_each_counted_once():
    counts = []
    lock = threading.Lock()

    def hammer():
        for _ in range(50):
            count = ratelimits.hit("g", "busy", "100000/h").count
            with lock:
                counts.append(count)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(counts) == list(range(1, 401))


def test_ipv6_clients_count_per_64_and_ipv4_per_address():
    factory = RequestFactory()
    assert ratelimits.client_ip(factory.get("/", REMOTE_ADDR="2001:db8::1")) == "2001:db8::"
    assert ratelimits.client_ip(factory.get("/", REMOTE_ADDR="2001:db8::ffff:1")) == "2001:db8::"
    assert ratelimits.client_ip(factory.get("/", REMOTE_ADDR="192.0.2.7")) == "192.0.2.7"
