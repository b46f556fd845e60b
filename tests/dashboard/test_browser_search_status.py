"""The Overview in a real browser (Debian's chromium through Playwright, daphne serving the app) while
searches fail: "search failing" with the reason, in red, then "up" once a search succeeds again.

Searches are made by the test process through a proxy in front of the test search server; the
breaker they trip is the one the server reads, since its state lives in the shared Redis.
"""

from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from search.client import reset_client
from search.errors import SearchDown
from search.services import SearchAnswer, search_breaker, search_knowledge
from tests.dashboard.test_browser import artifacts, asgi_server, browser_page, shot  # noqa: F401  (fixtures)
from tests.search.search_kbs import make_kb
from tests.support import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)

DANGER = "rgb(179, 38, 30)"  # --danger in static/css/dashboard.css


@pytest.fixture
def proxy(settings, search_index):
    proxy = TcpProxy(urlsplit(settings.KB_ES_URL).port)
    proxy.start()
    settings.KB_ES_URL = f"http://127.0.0.1:{proxy.port}"
    settings.KB_BREAKER_MIN_CALLS = 2
    settings.KB_BREAKER_OPEN_SECONDS = 1
    reset_client()
    try:
        yield proxy
    finally:
        proxy.stop()
        reset_client()


def search(kb, query: str) -> SearchAnswer:
    return search_knowledge(kb_slugs=[kb.slug], query=query, mode="keyword")


def test_overview_shows_search_failing_in_red_then_up(asgi_server, browser_page, artifacts, proxy):  # noqa: F811
    get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)
    kb = make_kb("o")
    proxy.stop()
    for n in range(2):
        with pytest.raises(SearchDown):
            search(kb, f"failing query {n}")
    assert search_breaker().state()["state"] == "open"

    page = browser_page
    page.goto(f"{asgi_server.url}/dashboard/")
    page.get_by_label("User name").fill("operator")
    page.get_by_label("Password").fill("pw-operator-1")
    page.get_by_role("button", name="Sign in").click()
    failing = page.get_by_test_id("search-failing")
    expect(failing).to_have_text("search failing: connection refused")
    expect(failing).to_have_css("color", DANGER)
    component = page.locator('[data-component="search"]')
    expect(component).to_contain_text("for ")
    expect(component.locator(".badge")).to_have_text("down")
    expect(page.locator(".badge-breaker-open, .badge-breaker-half_open")).to_be_visible()
    shot(page, artifacts, "overview-search-failing")

    # The server is back; once the open second is over, the next search is the probe and succeeds.
    proxy.start()
    page.wait_for_timeout(1100)
    assert search(kb, "lighthouse").hits == []  # answered (the knowledge base is empty)
    page.reload()
    expect(component.locator(".badge")).to_have_text("up")
    expect(page.get_by_test_id("search-failing")).to_have_count(0)
    expect(page.locator(".badge-breaker-closed")).to_be_visible()
    shot(page, artifacts, "overview-search-up")
