import socket

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from search.client import reset_client
from search.indexer import bulk_upsert
from tests.search.chunk_index import chunk, temporary_alias


@pytest.fixture
def alias():
    with temporary_alias("command") as name:
        yield name


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("search_index", *args, stdout=out)
    return out.getvalue()


def test_search_index_create_then_status(alias):
    assert f"Index ready: {alias}-v1" in run("--create", "--dims", "8")
    assert f"alias={alias} index={alias}-v1 docs=0 dims=8" in run("--status")


def test_search_index_rebuild_reports_the_swap(alias):
    bulk_upsert([chunk(1, 0)], refresh=True)
    output = run("--rebuild")
    assert f"{alias}-v1 -> {alias}-v2, 1 chunks copied, dims 8" in output
    assert "docs=1" in output


def test_search_index_requires_an_action():
    with pytest.raises(CommandError):
        call_command("search_index")


def test_search_index_unreachable_server_is_a_command_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there
    reset_client()
    try:
        with override_settings(KB_ES_URL=f"http://127.0.0.1:{port}"), pytest.raises(CommandError, match="unreachable"):
            run("--status")
    finally:
        reset_client()
