import socket
import time

import pytest
from django.test import override_settings

from search.client import SearchUnavailable, reset_client
from search.indexer import bulk_upsert
from search.query import DEFAULT_WEIGHTS, SearchRequest, search, search_bodies
from tests.search.chunk_index import chunk, temporary_alias, vector

LONG = "Widget installation troubleshooting when the installer fails. " + "More details follow here. " * 30


@pytest.fixture(scope="module", autouse=True)
def corpus():
    with temporary_alias("query") as alias:
        bulk_upsert(
            [
                chunk(1, 0, source=1, tags=["guide"], created="2024-01-15T00:00:00Z",
                      title="Widget guide", content="Installing the widget: run the installer and restart.",
                      embedding=vector(1, 0)),
                chunk(1, 1, source=1, tags=["guide"], created="2024-01-15T00:00:00Z",
                      title="Widget guide", content=LONG, embedding=vector(0.9, 0.1)),
                chunk(2, 0, source=2, tags=["faq"], created="2024-03-10T00:00:00Z",
                      title="Billing", content="Billing questions and invoices.", embedding=vector(0, 1)),
                chunk(3, 0, source=1, tags=["faq"], created="2024-06-01T00:00:00Z",
                      title="Accounts", content="Password reset steps for <admin> accounts.",
                      embedding=vector(0, 0, 1)),
                chunk(10, 0, kb="kb-b", source=9, title="Widget", content="Installing the widget in kb b.",
                      embedding=vector(1, 0)),
                # kb-fusion: keyword ranks A, B; semantic ranks C, B, E, D, A; fused, B wins.
                *[
                    chunk(doc, 0, kb="kb-fusion", source=5, title="Doc", content=text, embedding=vec)
                    for doc, text, vec in [
                        (21, "solar panel solar panel efficiency solar", vector(0, 0, 0, 1)),
                        (22, "solar panel maintenance guide", vector(0.8, 0.6)),
                        (23, "gardening tips for spring", vector(1, 0)),
                        (24, "cooking pasta quickly", vector(0.6, 0.8)),
                        (25, "history of rome", vector(0.5, 0, 0.5)),
                    ]
                ],
            ],
            refresh=True,
        )
        bulk_upsert([chunk(30, 0, kb="kb-fr", source=7, title="Chevaux", content="Les chevaux mangent du foin.",
                           embedding=vector(0, 1))], language="french", refresh=True)
        yield alias


def documents(result) -> list:
    return [hit.document_id for hit in result.hits]


def test_keyword_mode_finds_matching_documents_only():
    result = search(SearchRequest("installer", ["kb-a"], mode="keyword"))
    assert documents(result) == [1]
    assert result.mode == "keyword"
    assert result.total == 1 and result.total_relation == "eq"


def test_keyword_search_matches_other_forms_of_a_word():
    assert documents(search(SearchRequest("installs", ["kb-a"], mode="keyword"))) == [1]
    assert documents(search(SearchRequest("invoice", ["kb-a"], mode="keyword"))) == [2]


def test_stop_words_alone_match_nothing():
    assert search(SearchRequest("the and of", ["kb-a"], mode="keyword")).hits == []


def test_each_knowledge_base_is_matched_in_its_own_language():
    french = {"kb-fr": "french"}
    assert documents(search(SearchRequest("chevaux", ["kb-fr"], mode="keyword", languages=french))) == [30]
    # The index holds the French term "cheval"; analysed as English, "chevaux" stays "chevaux".
    assert search(SearchRequest("chevaux", ["kb-fr"], mode="keyword")).hits == []
    both = search(SearchRequest("chevaux installs", ["kb-a", "kb-fr"], mode="keyword", languages=french))
    assert sorted(documents(both)) == [1, 30]


def test_collapse_keeps_one_hit_per_document():
    collapsed = search(SearchRequest("installer", ["kb-a"], mode="keyword"))
    every_chunk = search(SearchRequest("installer", ["kb-a"], mode="keyword", collapse=False))
    assert len(collapsed.hits) == 1
    assert sorted(hit.chunk_id for hit in every_chunk.hits) == ["1-0", "1-1"]


def test_hit_carries_document_source_chunk_and_url():
    hit = search(SearchRequest("password", ["kb-a"], mode="keyword")).hits[0]
    assert (hit.document_id, hit.source_id, hit.chunk_id, hit.position) == (3, 1, "3-0", 0)
    assert (hit.kb, hit.title, hit.url, hit.key) == ("kb-a", "Accounts", "https://example.test/3", "doc-3")
    assert hit.score > 0
    assert hit.ranks == {"keyword": 1}


def test_knowledge_bases_are_isolated():
    assert documents(search(SearchRequest("widget", ["kb-a"], mode="keyword"))) == [1]
    assert documents(search(SearchRequest("widget", ["kb-b"], mode="keyword"))) == [10]
    assert 10 not in documents(search(SearchRequest("widget", ["kb-a"], mode="semantic"), vector(1, 0)))
    assert set(documents(search(SearchRequest("widget", ["kb-a", "kb-b"], mode="keyword")))) == {1, 10}


def test_source_filter_applies_to_both_sides():
    request = SearchRequest("widget", ["kb-a"], sources=[2])
    assert documents(search(request, vector(1, 0))) == [2]  # only kNN finds it; BM25 has no source-2 widget


def test_tag_filter_matches_any_tag():
    result = search(SearchRequest("", ["kb-a"], mode="semantic", tags=["faq"]), vector(1, 0))
    assert set(documents(result)) == {2, 3}


def test_date_range_filters_on_created():
    request = SearchRequest("", ["kb-a"], mode="semantic", date_from="2024-02-01", date_to="2024-04-01")
    assert documents(search(request, vector(1, 0))) == [2]


def test_semantic_mode_orders_by_similarity():
    result = search(SearchRequest("", ["kb-a"], mode="semantic"), vector(0, 0, 1))
    assert documents(result)[0] == 3
    assert [hit.score for hit in result.hits] == sorted((hit.score for hit in result.hits), reverse=True)


def test_hybrid_fuses_both_rankings():
    keyword = search(SearchRequest("solar panel", ["kb-fusion"], mode="keyword"))
    semantic = search(SearchRequest("solar panel", ["kb-fusion"], mode="semantic"), vector(1, 0))
    hybrid = search(SearchRequest("solar panel", ["kb-fusion"]), vector(1, 0))
    assert documents(keyword) == [21, 22]
    assert documents(semantic) == [23, 22, 25, 24, 21]
    assert documents(hybrid)[:3] == [22, 21, 23]
    assert hybrid.hits[0].ranks == {"keyword": 2, "semantic": 2}
    assert hybrid.hits[0].score == pytest.approx((DEFAULT_WEIGHTS["keyword"] + DEFAULT_WEIGHTS["semantic"]) / 62)


def test_hybrid_weights_shift_the_fusion():
    result = search(SearchRequest("solar panel", ["kb-fusion"], weights={"keyword": 0}), vector(1, 0))
    assert documents(result)[:2] == [23, 22]


def test_pages_follow_the_fused_order():
    first = search(SearchRequest("solar panel", ["kb-fusion"], size=2), vector(1, 0))
    second = search(SearchRequest("solar panel", ["kb-fusion"], size=2, page=2), vector(1, 0))
    assert documents(first) + documents(second) == [22, 21, 23, 25]
    assert second.total == 5


def test_snippet_highlights_matches_and_escapes_html():
    snippet = search(SearchRequest("password", ["kb-a"], mode="keyword")).hits[0].snippet
    assert "<mark>Password</mark>" in snippet
    assert "&lt;admin&gt;" in snippet and "<admin>" not in snippet


def test_semantic_hits_are_highlighted_with_the_query_words():
    result = search(SearchRequest("password", ["kb-a"], mode="semantic"), vector(0, 0, 1))
    assert "<mark>Password</mark>" in result.hits[0].snippet


def test_snippet_marks_the_forms_of_a_word_that_matched():
    snippet = search(SearchRequest("install", ["kb-a"], mode="keyword", size=1)).hits[0].snippet
    assert "<mark>Installing</mark>" in snippet and "<mark>installer</mark>" in snippet


def test_without_highlight_the_snippet_is_truncated_content():
    result = search(SearchRequest("troubleshooting", ["kb-a"], mode="keyword", highlight=False))
    snippet = result.hits[0].snippet
    assert "<mark>" not in snippet
    assert snippet.startswith("Widget installation troubleshooting")
    assert snippet.endswith(" …") and len(snippet) <= 242


def test_hybrid_without_a_vector_is_refused():
    with pytest.raises(ValueError, match="query vector"):
        search(SearchRequest("widget", ["kb-a"]))


def test_search_before_any_index_exists_finds_nothing():
    with temporary_alias("query_missing"):
        result = search(SearchRequest("widget", ["kb-a"]), vector(1, 0))
    assert result.hits == [] and result.total == 0


def test_unreachable_server_raises_search_unavailable_fast():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reset_client()
    try:
        with override_settings(KB_ES_URL=f"http://127.0.0.1:{port}"):
            started = time.monotonic()
            with pytest.raises(SearchUnavailable):
                search(SearchRequest("widget", ["kb-a"]), vector(1, 0))
            assert time.monotonic() - started < 1
    finally:
        reset_client()


def test_knn_re_ranks_oversampled_int8_candidates_by_their_float_vectors(settings):
    request = SearchRequest("widget", ["kb-a"], mode="semantic")
    knn = search_bodies(request, vector(1, 0))["semantic"].to_dict()["knn"]
    assert knn["rescore_vector"] == {"oversample": settings.KB_KNN_RESCORE_OVERSAMPLE}
    assert knn["num_candidates"] == 100 and knn["k"] == 30
    settings.KB_KNN_RESCORE_OVERSAMPLE = 0
    assert "rescore_vector" not in search_bodies(request, vector(1, 0))["semantic"].to_dict()["knn"]


def test_rescored_semantic_search_still_orders_by_similarity(settings):
    settings.KB_KNN_RESCORE_OVERSAMPLE = 3
    result = search(SearchRequest("x", ["kb-fusion"], mode="semantic"), vector(1, 0))
    assert documents(result)[:2] == [23, 22]
