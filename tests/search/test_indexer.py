import socket
import threading
import time

import pytest
from django.test import override_settings

from search.client import SearchError, SearchUnavailable, get_client, reset_client
from search.index import index_status
from search.indexer import (
    bulk_upsert,
    chunk_id,
    delete_document_chunks,
    delete_source_chunks,
    delete_stale_chunks,
)
from tests.search.chunk_index import chunk, temporary_alias, vector


@pytest.fixture
def alias():
    with temporary_alias("indexer") as name:
        yield name


def stored_ids() -> set[str]:
    hits = get_client().search(index=get_alias(), query={"match_all": {}}, size=100)["hits"]["hits"]
    return {hit["_id"] for hit in hits}


def get_alias() -> str:
    return index_status()["alias"]


def test_chunk_id_is_deterministic():
    assert chunk_id(42, 3) == chunk_id("42", 3) == "42-3"
    assert chunk_id(42, 3) != chunk_id(4, 23)


def test_bulk_upsert_creates_the_index_on_first_write(alias):
    assert bulk_upsert([chunk(1, 0)], refresh=True) == 1
    assert index_status()["index"] == f"{alias}-v1"


def test_bulk_upsert_twice_overwrites_the_same_chunks(alias):
    bulk_upsert([chunk(1, 0, content="old"), chunk(1, 1)], refresh=True)
    bulk_upsert([chunk(1, 0, content="new"), chunk(1, 1)], refresh=True)
    assert index_status()["docs"] == 2
    assert get_client().get(index=alias, id="1-0")["_source"]["content"] == "new"


def test_bulk_upsert_stores_ids_as_keywords_and_indexed_at(alias):
    bulk_upsert([chunk(7, 2, source=3, tags=["faq"])], refresh=True)
    stored = get_client().get(index=alias, id="7-2")["_source"]
    assert (stored["document"], stored["source"], stored["position"], stored["tags"]) == ("7", "3", 2, ["faq"])
    assert stored["url"] == "https://example.test/7"
    assert "indexed_at" in stored


def test_bulk_upsert_rejects_vectors_of_the_wrong_size_clearly(alias):
    bulk_upsert([chunk(1, 0)], refresh=True)
    with pytest.raises(SearchError, match="1 of 2 chunks rejected"):
        bulk_upsert([chunk(2, 0), chunk(3, 0, embedding=vector(1.0, dims=4))])


def test_bulk_upsert_refuses_a_chunk_without_its_document(alias):
    bad = chunk(1, 0)
    del bad["document"]
    with pytest.raises(ValueError, match="document"):
        bulk_upsert([bad])


def test_delete_stale_chunks_removes_positions_past_the_new_count(alias):
    bulk_upsert([chunk(1, p) for p in range(4)] + [chunk(2, 3)], refresh=True)
    assert delete_stale_chunks(1, keep_count=2, refresh=True) == 2
    assert stored_ids() == {"1-0", "1-1", "2-3"}


def test_delete_document_chunks_removes_only_those_documents(alias):
    bulk_upsert([chunk(1, 0), chunk(1, 1), chunk(2, 0), chunk(3, 0)], refresh=True)
    assert delete_document_chunks([1, 3], refresh=True) == 3
    assert stored_ids() == {"2-0"}


def test_delete_source_chunks_removes_the_sources_chunks(alias):
    bulk_upsert([chunk(1, 0, source=1), chunk(2, 0, source=2)], refresh=True)
    assert delete_source_chunks(1, refresh=True) == 1
    assert stored_ids() == {"2-0"}


def test_deleting_before_any_index_exists_deletes_nothing(alias):
    assert delete_stale_chunks(1, keep_count=0) == 0
    assert delete_document_chunks([1]) == 0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_bulk_upsert_on_unreachable_server_raises_search_unavailable(alias):
    reset_client()
    try:
        with override_settings(KB_ES_URL=f"http://127.0.0.1:{closed_port()}"):
            started = time.monotonic()
            with pytest.raises(SearchUnavailable):
                bulk_upsert([chunk(1, 0)])
            assert time.monotonic() - started < 2
    finally:
        reset_client()


def test_bulk_upsert_on_a_silent_server_times_out_as_unavailable(alias):
    # A listener that never answers: the request must end at the bulk timeout, not hang.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted = []
        threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
        reset_client()
        try:
            with override_settings(KB_ES_URL=f"http://127.0.0.1:{port}", KB_ES_TIMEOUT=0.3, KB_ES_BULK_TIMEOUT=0.5):
                started = time.monotonic()
                with pytest.raises(SearchUnavailable):
                    delete_document_chunks([1])
                assert time.monotonic() - started < 2
        finally:
            reset_client()
            for connection, _ in accepted:
                connection.close()
