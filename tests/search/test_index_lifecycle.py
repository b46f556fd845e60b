import pytest

from search.client import get_client
from search.index import ensure_index, index_status, rebuild_index
from search.indexer import bulk_upsert, refresh
from tests.search.chunk_index import chunk, temporary_alias, vector


@pytest.fixture
def alias():
    with temporary_alias("lifecycle") as name:
        yield name


def test_ensure_index_creates_v1_behind_the_alias(alias):
    assert ensure_index(dims=8) == f"{alias}-v1"
    assert list(get_client().indices.get_alias(name=alias)) == [f"{alias}-v1"]


def test_ensure_index_twice_is_harmless(alias):
    first = ensure_index(dims=8)
    assert ensure_index(dims=16) == first
    assert index_status()["dims"] == 8


def test_mapping_pins_int8_hnsw_and_searches_application_made_terms(alias):
    index = ensure_index(dims=8)
    properties = get_client().indices.get_mapping(index=index)[index]["mappings"]["properties"]
    embedding = properties["embedding"]
    assert embedding["dims"] == 8
    assert embedding["similarity"] == "cosine"
    assert embedding["index"] is True
    assert embedding["index_options"] == {"type": "int8_hnsw", "m": 16, "ef_construction": 100}
    assert {properties[name]["analyzer"] for name in ("title_terms", "content_terms")} == {"whitespace"}
    assert properties["content"]["index"] is False and properties["title"]["index"] is False
    assert {properties[name]["type"] for name in ("kb", "source", "document", "tags")} == {"keyword"}


def test_a_single_node_index_has_no_replica_to_wait_for(alias):
    index = ensure_index(dims=8)
    assert get_client().cluster.health(index=index, wait_for_status="green", timeout="10s")["status"] == "green"


def test_status_reports_alias_index_docs_and_dims(alias):
    assert index_status() == {"alias": alias, "index": None, "docs": 0, "dims": None}
    bulk_upsert([chunk(1, 0), chunk(1, 1)], refresh=True)
    assert index_status() == {"alias": alias, "index": f"{alias}-v1", "docs": 2, "dims": 8}


def test_rebuild_moves_the_alias_and_keeps_chunks(alias):
    bulk_upsert([chunk(1, 0, content="alpha"), chunk(2, 0, content="beta")], refresh=True)
    result = rebuild_index()
    assert result["old_index"] == f"{alias}-v1"
    assert result["index"] == f"{alias}-v2"
    assert result["copied"] == 2
    assert result["reembed_required"] is False
    assert list(get_client().indices.get_alias(name=alias)) == [f"{alias}-v2"]
    assert not get_client().indices.exists(index=f"{alias}-v1")
    assert index_status()["docs"] == 2
    kept = get_client().get(index=alias, id="1-0")["_source"]
    assert kept["content"] == "alpha"
    assert kept["embedding"] == pytest.approx(vector(1.0), abs=1e-6)


def test_rebuild_twice_keeps_counting_versions(alias):
    bulk_upsert([chunk(1, 0)], refresh=True)
    rebuild_index()
    assert rebuild_index()["index"] == f"{alias}-v3"


def test_rebuild_with_new_dims_drops_vectors_and_asks_for_reembedding(alias):
    bulk_upsert([chunk(1, 0)], refresh=True)
    result = rebuild_index(dims=4)
    assert result["reembed_required"] is True
    assert index_status() == {"alias": alias, "index": f"{alias}-v2", "docs": 1, "dims": 4}
    assert "embedding" not in get_client().get(index=alias, id="1-0")["_source"]
    bulk_upsert([chunk(1, 0, embedding=vector(1.0, dims=4))], refresh=True)
    refresh()
    assert index_status()["docs"] == 1


def test_rebuild_without_an_index_creates_one(alias):
    result = rebuild_index(dims=8)
    assert result["index"] == f"{alias}-v1"
    assert index_status()["dims"] == 8
