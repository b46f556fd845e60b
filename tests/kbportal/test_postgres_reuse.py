"""kbportal.postgres: the web server parks idle PostgreSQL connections for the next request.

Each test opens its own DatabaseWrapper (as each request's thread does) on the test database.
"""

import pytest
from django.db import connections

from kbportal.postgres import base
from kbportal.postgres.base import close_parked, parked_count

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def nothing_parked(monkeypatch):
    """Each test starts with reuse off and nothing parked (importing kbportal.asgi turns it on)."""
    close_parked()
    monkeypatch.setattr(base, "_enabled", False)
    yield
    close_parked()


@pytest.fixture
def reuse(settings, monkeypatch):
    settings.KB_DB_IDLE_CONNECTIONS = 2
    monkeypatch.setattr(base, "_enabled", True)


def request_connection():
    """A fresh wrapper for the default database, like the one a new request thread gets."""
    return connections.create_connection("default")


def backend_pid(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_closed_idle_connection_serves_the_next_request(reuse):
    first = request_connection()
    pid = backend_pid(first)
    first.close()
    assert parked_count() == 1
    second = request_connection()
    assert backend_pid(second) == pid
    assert parked_count() == 0
    second.close()


def test_a_connection_the_server_closed_is_discarded_not_handed_out(reuse):
    admin = request_connection()
    backend_pid(admin)
    first = request_connection()
    pid = backend_pid(first)
    first.close()
    assert parked_count() == 1
    with admin.cursor() as cursor:  # as a PostgreSQL restart or idle timeout would
        cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # waits until it is gone
    second = request_connection()
    assert backend_pid(second) != pid  # a working connection, not the dead one
    assert parked_count() == 0
    second.close()
    admin.close()


def test_a_connection_inside_a_transaction_is_closed_not_parked(reuse):
    wrapper = request_connection()
    wrapper.set_autocommit(False)
    backend_pid(wrapper)
    wrapper.close()
    assert parked_count() == 0


def test_at_most_the_configured_number_are_parked(reuse):
    wrappers = [request_connection() for _ in range(3)]
    for wrapper in wrappers:
        backend_pid(wrapper)
    for wrapper in wrappers:
        wrapper.close()
    assert parked_count() == 2


def test_nothing_is_parked_unless_enabled():
    wrapper = request_connection()
    backend_pid(wrapper)
    wrapper.close()
    assert parked_count() == 0
