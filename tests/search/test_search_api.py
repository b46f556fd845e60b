"""GET/POST /api/v1/search: answers, filters, knowledge-base isolation, auth, errors, rate limits."""

from datetime import date, timedelta

import pytest
from django.contrib.auth.models import User
from rest_framework.exceptions import ValidationError

from knowledge.errors import NotAllowed
from knowledge.models import ApiKey
from knowledge.services import api_key_create, knowledge_base_create
from search.api import validated_search_input
from search.indexer import bulk_upsert
from search.services import search_knowledge
from tests.search.chunk_index import chunk, vector
from tests.search.search_kbs import SEARCH_URL, bearer, document_id, ingest, make_kb

pytestmark = pytest.mark.django_db(transaction=True)

ROCKETS = {
    "Rocket engines": "Liquid rocket engines burn propellant and oxidiser in a combustion chamber.",
    "Bread baking": "Knead the dough, let it rise, and bake the bread in a hot oven.",
    "Garden care": "Water the tomatoes early in the morning and mulch the beds.",
}
LONG_BODY = "\n\n".join(f"Section {n} explains rocket staging and engine cut-off in detail. " * 15 for n in range(6))


@pytest.fixture
def kb(search_index):
    kb = make_kb()
    ingest(kb, ROCKETS)
    return kb


def test_search_returns_the_matching_document_with_its_fields(client, kb):
    response = client.get(SEARCH_URL, {"q": "rocket engines", "kb": kb.slug}, **bearer([kb.slug]))
    assert response.status_code == 200
    body = response.json()
    top = body["hits"][0]
    assert top["title"] == "Rocket engines"
    assert top["document_id"] == document_id(kb, "Rocket engines")
    assert top["source_id"] == kb.sources.get().pk
    assert top["position"] == 0 and top["url"] == "rocket-engines.md" and top["kb"] == kb.slug
    assert "<mark>" in top["snippet"]
    assert (body["mode"], body["degraded"], body["cache"]) == ("hybrid", False, "miss")
    assert body["total"] >= 1 and body["took_ms"] > 0


def test_post_body_searches_like_get(client, kb):
    headers = bearer([kb.slug])
    body = {"q": "bread dough", "kb": [kb.slug], "size": 1}
    response = client.post(SEARCH_URL, body, content_type="application/json", **headers)
    assert response.status_code == 200
    assert [hit["title"] for hit in response.json()["hits"]] == ["Bread baking"]


@pytest.mark.parametrize("mode", ["keyword", "semantic"])
def test_single_ranking_modes_find_the_document(client, kb, mode):
    response = client.get(SEARCH_URL, {"q": "tomatoes mulch", "kb": kb.slug, "mode": mode}, **bearer([kb.slug]))
    assert response.status_code == 200
    assert response.json()["mode"] == mode
    assert response.json()["hits"][0]["title"] == "Garden care"


def test_key_without_kb_parameter_searches_only_its_own_knowledge_bases(client, kb):
    other = make_kb()
    ingest(other, {"Rocket secrets": "Other rocket engines that only the other knowledge base holds."})
    response = client.get(SEARCH_URL, {"q": "rocket engines", "size": 50}, **bearer([kb.slug]))
    assert response.status_code == 200
    assert {hit["kb"] for hit in response.json()["hits"]} == {kb.slug}


def test_key_naming_a_knowledge_base_it_lacks_is_forbidden(client, kb):
    other = make_kb()
    headers = bearer([kb.slug])
    assert client.get(SEARCH_URL, {"q": "rocket", "kb": other.slug}, **headers).status_code == 403
    # also when mixed with one it has, as a comma list or a repeated parameter
    assert client.get(SEARCH_URL, {"q": "rocket", "kb": f"{kb.slug},{other.slug}"}, **headers).status_code == 403
    assert client.get(SEARCH_URL, {"q": "rocket", "kb": [kb.slug, other.slug]}, **headers).status_code == 403


def test_key_for_two_knowledge_bases_searches_both(client, kb):
    other = make_kb()
    ingest(other, {"Rocket history": "The first rocket engines were tested in the 1920s."})
    headers = bearer([kb.slug, other.slug])
    response = client.get(SEARCH_URL, {"q": "rocket engines", "kb": f"{kb.slug},{other.slug}"}, **headers)
    assert {hit["kb"] for hit in response.json()["hits"]} == {kb.slug, other.slug}


def test_unknown_knowledge_base_is_404(client, kb):
    response = client.get(SEARCH_URL, {"q": "rocket", "kb": "no-such-kb"}, **bearer([kb.slug]))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_key_without_search_scope_is_forbidden(client, kb):
    response = client.get(SEARCH_URL, {"q": "rocket", "kb": kb.slug}, **bearer([kb.slug], scopes=("ingest",)))
    assert response.status_code == 403


def test_missing_key_is_401(client, kb):
    response = client.get(SEARCH_URL, {"q": "rocket", "kb": kb.slug})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_bad_or_revoked_key_is_401(client, kb):
    assert client.get(SEARCH_URL, {"q": "rocket"}, HTTP_AUTHORIZATION="Bearer kb_nope_secret").status_code == 401
    headers = bearer([kb.slug])
    ApiKey.objects.update(revoked=True)
    assert client.get(SEARCH_URL, {"q": "rocket"}, **headers).status_code == 401


def test_a_cache_hit_makes_no_database_query(client, kb, django_assert_num_queries):
    headers = bearer([kb.slug])
    params = {"q": "rocket engines", "kb": kb.slug}
    assert client.get(SEARCH_URL, params, **headers).json()["cache"] == "miss"  # loads the key, notes its use
    with django_assert_num_queries(0):  # the key with its grants is kept (knowledge.keycache)
        assert client.get(SEARCH_URL, params, **headers).json()["cache"] == "hit"


def test_a_withdrawn_grant_refuses_the_next_request(client, kb):
    key, raw = api_key_create(name="grant", kb_slugs=[kb.slug], scopes=["search"])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get(SEARCH_URL, {"q": "rocket", "kb": kb.slug}, **headers).status_code == 200
    key.knowledge_bases.clear()
    assert client.get(SEARCH_URL, {"q": "rocket", "kb": kb.slug}, **headers).status_code == 403
    assert client.get(SEARCH_URL, {"q": "rocket"}, **headers).status_code == 403  # nothing to search by default


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({}, "q"),
        ({"q": "x" * 1001}, "q"),
        ({"q": "rocket", "size": 101}, "size"),
        ({"q": "rocket", "mode": "fuzzy"}, "mode"),
        ({"q": "rocket", "page": 0}, "page"),
        ({"q": "rocket", "page": 10, "size": 100}, "page"),
        ({"q": "rocket", "date_from": "yesterday"}, "date_from"),
    ],
)
def test_invalid_parameters_are_400_with_field_errors(client, kb, params, field):
    response = client.get(SEARCH_URL, {"kb": kb.slug, **params}, **bearer([kb.slug]))
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"]


def test_knowledge_bases_with_different_embedders_are_searched_together_only_by_keyword(client, kb):
    other = knowledge_base_create(slug=f"{kb.slug}-minilm", name="MiniLM", embedder="minilm")
    headers = bearer([kb.slug, other.slug])
    both = {"q": "rocket", "kb": f"{kb.slug},{other.slug}"}
    response = client.get(SEARCH_URL, both, **headers)
    assert response.status_code == 400
    assert (response.json()["error"], list(response.json()["fields"])) == ("invalid", ["kb"])
    assert client.get(SEARCH_URL, {**both, "mode": "keyword"}, **headers).status_code == 200


def test_sources_filter_keeps_only_that_sources_documents(client, kb):
    extra = ingest(kb, {"Rocket fuel": "Rocket engines need fuel such as kerosene."}, name="extra")
    response = client.get(SEARCH_URL, {"q": "rocket engines", "kb": kb.slug, "sources": extra.pk}, **bearer([kb.slug]))
    assert [hit["title"] for hit in response.json()["hits"]] == ["Rocket fuel"]


def test_tags_filter_keeps_only_tagged_chunks(client, kb):
    bulk_upsert([chunk(900001, kb=str(kb.pk), title="Tagged rocket", content="rocket engines tagged", tags=["guide"],
                       embedding=vector(1.0, dims=384))], refresh=True)
    response = client.get(SEARCH_URL, {"q": "rocket engines", "kb": kb.slug, "tags": "guide,howto", "mode": "keyword"},
                          **bearer([kb.slug]))
    assert [hit["title"] for hit in response.json()["hits"]] == ["Tagged rocket"]


def test_date_filters_bound_the_indexing_day(client, kb):
    headers = bearer([kb.slug])
    today = date.today()
    hits = {}
    for name, params in {
        "up_to_yesterday": {"date_to": today - timedelta(days=1)},
        "up_to_today": {"date_to": today},
        "from_tomorrow": {"date_from": today + timedelta(days=1)},
        "from_today": {"date_from": today},
    }.items():
        query = {"q": "rocket engines", "kb": kb.slug, "mode": "keyword", **params}
        response = client.get(SEARCH_URL, query, **headers)
        hits[name] = len(response.json()["hits"])
    assert hits["up_to_yesterday"] == hits["from_tomorrow"] == 0
    assert hits["up_to_today"] == hits["from_today"] == 1


def test_chunks_true_returns_every_matching_chunk_of_a_document(client, kb):
    ingest(kb, {"Staging": LONG_BODY}, name="long")
    headers = bearer([kb.slug])
    params = {"q": "rocket staging engine cut-off", "kb": kb.slug, "mode": "keyword", "size": 50}
    documents = client.get(SEARCH_URL, params, **headers).json()["hits"]
    chunks = client.get(SEARCH_URL, {**params, "chunks": "true"}, **headers).json()["hits"]
    staging = document_id(kb, "Staging")
    assert [hit["document_id"] for hit in documents].count(staging) == 1
    assert [hit["document_id"] for hit in chunks].count(staging) > 1
    assert len({hit["position"] for hit in chunks if hit["document_id"] == staging}) > 1


def test_staff_session_searches_any_knowledge_base(client, kb):
    client.force_login(User.objects.create_user("ops", is_staff=True))
    response = client.get(SEARCH_URL, {"q": "bread", "kb": kb.slug})
    assert response.status_code == 200
    assert response.json()["hits"][0]["title"] == "Bread baking"


def test_key_over_its_rate_gets_429_with_retry_after(client, kb):
    headers = bearer([kb.slug], rate="2/m")
    statuses = [client.get(SEARCH_URL, {"q": "bread", "kb": kb.slug}, **headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    response = client.get(SEARCH_URL, {"q": "bread", "kb": kb.slug}, **headers)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    # another key is counted on its own
    assert client.get(SEARCH_URL, {"q": "bread", "kb": kb.slug}, **bearer([kb.slug])).status_code == 200


def test_anonymous_traffic_is_limited_per_ip_before_the_401(client, kb, settings):
    settings.KB_ANON_RATE = "3/m"
    statuses = [
        client.get(SEARCH_URL, {"q": "bread"}, **headers).status_code
        for headers in [{}, {"HTTP_AUTHORIZATION": "Bearer kb_bad_guess"}, {}, {}]
    ]
    assert statuses == [401, 401, 401, 429]
    assert int(client.get(SEARCH_URL, {"q": "bread"})["Retry-After"]) >= 1
    # another address has its own budget
    assert client.get(SEARCH_URL, {"q": "bread"}, REMOTE_ADDR="10.1.2.3").status_code == 401


def test_service_refuses_a_key_without_the_knowledge_base(kb):
    other = make_kb()
    key, _ = api_key_create(name="k", kb_slugs=[kb.slug], scopes=["search"])
    with pytest.raises(NotAllowed):
        search_knowledge(kb_slugs=[other.slug], query="rocket", api_key=key)


def test_schema_documents_the_search_endpoint_with_examples(client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    operation = response.json()["paths"]["/api/v1/search"]
    names = {parameter["name"] for parameter in operation["get"]["parameters"]}
    assert {"q", "kb", "mode", "sources", "tags", "date_from", "date_to", "page", "size", "highlight"} <= names
    assert "examples" in operation["get"]["responses"]["200"]["content"]["application/json"]
    assert "examples" in operation["post"]["requestBody"]["content"]["application/json"]
    assert client.get("/api/docs/").status_code == 200


def test_validation_reports_every_invalid_field_and_remembers_only_valid_input():
    with pytest.raises(ValidationError) as raised:
        validated_search_input({"q": "", "size": "101", "mode": "fuzzy"})
    assert set(raised.value.detail) == {"q", "size", "mode"}
    first = validated_search_input({"q": "rocket", "size": "5", "kb": ["a", "b"]})
    second = validated_search_input({"q": "comet", "size": "5", "kb": ["a", "b"]})
    assert (first["q"], first["size"], list(first["kb"])) == ("rocket", 5, ["a", "b"])
    assert (second["q"], second["size"]) == ("comet", 5)  # the rest remembered, q validated anew
    with pytest.raises(ValidationError) as raised:
        validated_search_input({"q": "x" * 1001, "size": "5", "kb": ["a", "b"]})
    assert set(raised.value.detail) == {"q"}


def test_remembered_validation_keeps_json_types_apart():
    """True == 1, but a JSON true is no page number."""
    assert validated_search_input({"q": "rocket", "page": 1})["page"] == 1
    with pytest.raises(ValidationError) as raised:
        validated_search_input({"q": "rocket", "page": True})
    assert "page" in raised.value.detail
