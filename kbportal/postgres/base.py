"""Django's PostgreSQL backend, keeping a few idle connections per web process for the next request.

Opening a PostgreSQL connection costs a backend process on the server and a few milliseconds
(measured: 3 ms on a quiet machine, 13 ms on a busy one), and under ASGI every request paid it:

- Django's persistent connections (CONN_MAX_AGE > 0) are per thread, and Django's ASGI handler
  gives every request a thread of its own (asgiref's ThreadSensitiveContext), so they piled up
  instead of being reused (`manage.py loadtest`: 97 of 100 connections at 16 concurrent requests);
  Django's documentation says to disable them under ASGI.
- Django's pool (psycopg_pool, OPTIONS["pool"]) caps the connections in use: with 8, 32
  concurrent requests queued for up to a second, a long-poll holds one for 30 s, and while
  PostgreSQL was down requests waited out the pool's timeout.

Here nothing caps or waits. A request that finds no idle connection opens one, as before. When
Django closes a connection at the end of a request (CONN_MAX_AGE = 0) and it is reusable - open,
not broken, autocommit, no transaction - it is parked for the next request instead, up to
KB_DB_IDLE_CONNECTIONS per process, for at most KB_DB_IDLE_SECONDS. A parked connection whose
socket has become readable is discarded rather than handed out: an idle connection receives
nothing unless the server closed it (restart, shutdown, idle timeout), so a PostgreSQL restart
costs no failed request.

Only the web server parks (`enable_reuse()`, called by kbportal.asgi): commands and workers
close their connections as before. Tests that import kbportal.asgi park too, so creating or
dropping a test database first closes what is parked (PostgreSQL refuses to drop a database
that has sessions).
"""

from __future__ import annotations

import select
import threading
import time

from django.conf import settings
from django.db.backends.postgresql import base, creation
from psycopg import IsolationLevel, pq

_lock = threading.Lock()
#: (alias, name, host, port, user) -> [(parked at, connection)], most recently parked last.
_parked: dict[tuple, list[tuple[float, object]]] = {}
_enabled = False


def enable_reuse() -> None:
    """Park idle connections in this process from now on (the web server's processes)."""
    global _enabled
    _enabled = True


def close_parked() -> None:
    with _lock:
        connections = [connection for stack in _parked.values() for _, connection in stack]
        _parked.clear()
    for connection in connections:
        connection.close()


def _reusable(connection) -> bool:
    if connection.closed or connection.broken or not connection.autocommit:
        return False
    if connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(connection.fileno(), select.POLLIN)
    return not poller.poll(0)  # readable while idle: the server closed it or is closing it


def _take(key: tuple):
    """A parked connection that is still good, or None."""
    now = time.monotonic()
    while True:
        with _lock:
            stack = _parked.get(key)
            if not stack:
                return None
            parked_at, connection = stack.pop()
        if now - parked_at <= settings.KB_DB_IDLE_SECONDS and _reusable(connection):
            return connection
        connection.close()


def _park(key: tuple, connection) -> bool:
    with _lock:
        stack = _parked.setdefault(key, [])
        if len(stack) >= settings.KB_DB_IDLE_CONNECTIONS:
            return False
        stack.append((time.monotonic(), connection))
        return True


def parked_count() -> int:
    with _lock:
        return sum(len(stack) for stack in _parked.values())


class DatabaseCreation(creation.DatabaseCreation):
    """PostgreSQL refuses to drop a database that has sessions: close the parked ones first."""

    def _execute_create_test_db(self, cursor, parameters, keepdb=False):
        close_parked()  # an existing test database may be dropped and created again
        super()._execute_create_test_db(cursor, parameters, keepdb)

    def _destroy_test_db(self, test_database_name, verbosity):
        close_parked()
        super()._destroy_test_db(test_database_name, verbosity)


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    def _reuse_key(self) -> tuple:
        s = self.settings_dict
        return (self.alias, s["NAME"], s["HOST"], s["PORT"], s["USER"])

    def get_new_connection(self, conn_params):
        connection = _take(self._reuse_key()) if _enabled and not self.pool else None
        if connection is None:
            return super().get_new_connection(conn_params)
        # What Django's get_new_connection sets; the connection itself kept its settings.
        self.isolation_level = IsolationLevel(
            self.settings_dict["OPTIONS"].get("isolation_level", IsolationLevel.READ_COMMITTED)
        )
        return connection

    def _close(self):
        connection = self.connection
        reusable = _enabled and connection is not None and not self.pool and _reusable(connection)
        if reusable and _park(self._reuse_key(), connection):
            return None
        return super()._close()
