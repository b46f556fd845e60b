"""PostgreSQL connections come from Django's pool: a request's connection serves the next request,
and connections the server closed (a restart, an idle timeout) are replaced, never handed out.

Each test opens its own DatabaseWrapper (as each request's thread does) on the test database.
"""

import pytest
from django.db import connections

pytestmark = pytest.mark.django_db(transaction=True)


def request_connection():
    """A fresh wrapper for the default database, like the one a new request thread gets."""
    return connections.create_connection("default")


def backend_pid(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def opened(pool) -> int:
    """Connections the pool has opened to the server so far."""
    return pool.get_stats().get("connections_num", 0)


def test_requests_one_after_another_reuse_the_pooled_connections():
    pool = connections["default"].pool
    assert pool is not None
    backend_pid(connections["default"])  # the pool is open
    before = opened(pool)
    for _ in range(10):
        wrapper = request_connection()
        backend_pid(wrapper)
        wrapper.close()
    assert opened(pool) == before


def test_connections_the_server_closed_are_replaced_not_handed_to_requests():
    connections["default"].close_pool()  # a pool of this test's own: min_size connections at first
    own = backend_pid(connections["default"])
    wrappers = [request_connection() for _ in range(3)]
    for wrapper in wrappers:
        backend_pid(wrapper)
    for wrapper in wrappers:
        wrapper.close()  # three idle in the pool
    survivor = request_connection()
    with survivor.cursor() as cursor:  # as a PostgreSQL restart or idle timeout would
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle' "
            "AND pid NOT IN (pg_backend_pid(), %s)", [own])
        killed = {row[0] for row in cursor.fetchall()}
        for pid in killed:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # waits until it is gone
    assert len(killed) == 2
    others = [request_connection() for _ in range(3)]
    pids = [backend_pid(wrapper) for wrapper in others]  # each request gets a working connection
    assert not killed & set(pids)
    for wrapper in [survivor, *others]:
        wrapper.close()
