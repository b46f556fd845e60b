"""Site-wide routes: the root, the API docs served from our own static files, one slash convention
for every API route, and refusals that name the missing scope."""

import pytest
import yaml
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.urls import reverse

from tests.search.search_kbs import bearer, ingest, make_kb

pytestmark = pytest.mark.django_db(transaction=True)

SIDECAR = "/static/drf_spectacular_sidecar/"


@pytest.fixture
def staff_client(client):
    client.force_login(get_user_model().objects.create_user("operator", password="pw", is_staff=True))
    return client


def test_root_sends_anonymous_visitors_to_the_api_docs(client):
    response = client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/api/docs/")


def test_root_sends_staff_to_the_dashboard(staff_client):
    response = staff_client.get("/")
    assert (response.status_code, response["Location"]) == (302, "/dashboard/")


def test_root_sends_signed_in_non_staff_to_the_api_docs(client):
    client.force_login(get_user_model().objects.create_user("reader", password="pw"))
    assert client.get("/")["Location"] == "/api/docs/"


@pytest.mark.parametrize(("url", "asset"), [
    ("/api/docs/", "swagger-ui-dist/swagger-ui-bundle.js"),
    ("/api/redoc/", "redoc/bundles/redoc.standalone.js"),
])
def test_api_docs_load_their_scripts_from_our_static_files_not_a_cdn(client, url, asset):
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert SIDECAR + asset in page
    assert "cdn.jsdelivr.net" not in page and "https://" not in page.replace("https://github.com", "")
    assert finders.find("drf_spectacular_sidecar/" + asset)  # what the static handler serves
    assert "cdn.jsdelivr.net" not in response["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["/api/v1/search", "/api/v1/search/"])
def test_search_answers_with_and_without_the_trailing_slash(client, search_index, path):
    kb = make_kb()
    ingest(kb, {"Rocket engines": "Liquid rocket engines burn propellant."})
    response = client.get(path, {"q": "rocket", "kb": kb.slug}, **bearer([kb.slug]))
    assert response.status_code == 200
    assert response.json()["hits"][0]["title"] == "Rocket engines"


@pytest.mark.parametrize("path", ["/api/v1/kbs/", "/api/v1/kbs"])
def test_a_post_works_at_both_forms_of_the_path_without_a_redirect(staff_client, path):
    response = staff_client.post(path, {"slug": "team-docs", "name": "Team docs", "embedder": "hashing"},
                                 content_type="application/json")
    assert response.status_code == 201, response.content
    assert staff_client.get("/api/v1/kbs/team-docs").status_code == 200
    assert staff_client.get("/api/v1/kbs/team-docs/").status_code == 200


def test_reverse_gives_the_canonical_path_and_the_schema_lists_each_operation_once(staff_client):
    assert (reverse("search"), reverse("kb-list"), reverse("job-detail", args=[1])) == (
        "/api/v1/search", "/api/v1/kbs/", "/api/v1/jobs/1/"
    )
    paths = yaml.safe_load(staff_client.get("/api/schema/").content)["paths"]
    assert "/api/v1/search" in paths and "/api/v1/search/" not in paths
    assert "/api/v1/kbs/" in paths and "/api/v1/kbs" not in paths


def test_unknown_api_paths_are_still_404_in_the_api_shape(client):
    response = client.get("/api/v1/nowhere/")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_a_key_without_the_scope_is_told_which_scope_it_lacks(client, search_index):
    kb = make_kb()
    response = client.get(f"/api/v1/kbs/{kb.slug}/", **bearer([kb.slug], scopes=("search",)))
    assert response.status_code == 403
    assert response.json()["detail"] == "This API key lacks the 'ingest' scope."
    response = client.get("/api/v1/search", {"q": "x", "kb": kb.slug}, **bearer([kb.slug], scopes=("ingest",)))
    assert response.json()["detail"] == "This API key lacks the 'search' scope."
