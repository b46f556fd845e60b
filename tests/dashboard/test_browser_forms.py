"""Small dashboard flows in a real browser (chromium through Playwright, against daphne): the new
knowledge base form suggests the slug from the name, a long name wraps instead of widening the
page, revoking a key asks first, and the API docs render with no network beyond this server."""

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from knowledge.models import ApiKey, KnowledgeBase
from knowledge.services import api_key_create
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    AsgiServer,
    artifacts,
    asgi_server,
    browser_page,
    shot,
)

pytestmark = pytest.mark.django_db(transaction=True)

LONG_NAME = "Quarterly-engineering-operations-handbook-" * 12


def sign_in(page: Page, server: AsgiServer) -> None:
    get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)
    page.goto(f"{server.url}/accounts/login/?next=/dashboard/")
    page.get_by_label("User name").fill("operator")
    page.get_by_label("Password").fill("pw-operator-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def page_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_slug_follows_the_name_until_edited_and_long_names_wrap(asgi_server, browser_page, artifacts):  # noqa: F811
    page = browser_page
    sign_in(page, asgi_server)
    name, slug = page.get_by_label("Name", exact=True), page.get_by_label("Slug")
    name.press_sequentially("Café Ops Handbook")
    expect(slug).to_have_value("cafe-ops-handbook")
    shot(page, artifacts, "forms-01-slug-suggested")

    # Edited by hand, the slug stays; the name no longer changes it.
    slug.fill("ops")
    name.fill("Operations handbook 2026")
    expect(slug).to_have_value("ops")
    # Emptied, it follows the name again.
    slug.fill("")
    name.press_sequentially("!")
    expect(slug).to_have_value("operations-handbook-2026")

    # Uppercase typed by hand is refused with the documented rule, and nothing is created.
    slug.fill("Ops-Handbook")
    page.get_by_label("Embedder").select_option("hashing")
    page.get_by_role("button", name="Create knowledge base").click()
    expect(page.get_by_text("Use lowercase letters: “ops-handbook”, not “Ops-Handbook”.")).to_be_visible()
    assert not KnowledgeBase.objects.exists()
    shot(page, artifacts, "forms-02-uppercase-refused")

    # The refused page keeps the hand-typed slug; emptied, it follows the name again.
    expect(slug).to_have_value("Ops-Handbook")
    slug.fill("")
    # A very long name: created, and every page showing it keeps to the window's width.
    name.fill(LONG_NAME)
    expect(slug).to_have_value(LONG_NAME.lower()[:64].rstrip("-"))
    page.get_by_role("button", name="Create knowledge base").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Quarterly-engineering")
    assert page_width(page) <= 1280
    shot(page, artifacts, "forms-03-long-name-kb")
    for number, path in enumerate(("/dashboard/", "/dashboard/search/", "/dashboard/search/ask/", "/dashboard/keys/")):
        page.goto(asgi_server.url + path)
        assert page_width(page) <= 1280, path
        shot(page, artifacts, f"forms-04-long-name-{number}")


def test_revoking_a_key_asks_for_confirmation_first(asgi_server, browser_page, artifacts):  # noqa: F811
    page = browser_page
    sign_in(page, asgi_server)
    kb = KnowledgeBase.objects.create(slug="handbook", name="Handbook", embedder="hashing")
    key, _ = api_key_create(name="intranet search", kb_slugs=[kb.slug], scopes=["search"])
    page.goto(f"{asgi_server.url}/dashboard/keys/")
    page.get_by_role("link", name="Revoke intranet search").click()
    expect(page.get_by_role("heading", name=f"Revoke the key “intranet search” (kb_{key.prefix}_…)?")).to_be_visible()
    expect(page.get_by_text("It has never been used.")).to_be_visible()
    shot(page, artifacts, "forms-05-revoke-confirm")

    # "Keep it" goes back with the key still active.
    page.get_by_role("link", name="Keep it").click()
    expect(page.locator(f'tr[data-key="{key.prefix}"]')).not_to_contain_text("revoked")
    assert not ApiKey.objects.get(pk=key.pk).revoked

    page.get_by_role("link", name="Revoke intranet search").click()
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator(f'tr[data-key="{key.prefix}"]')).to_contain_text("revoked")
    assert ApiKey.objects.get(pk=key.pk).revoked
    shot(page, artifacts, "forms-06-revoked")


def test_api_docs_render_with_no_request_leaving_the_server(asgi_server, browser_page, artifacts):  # noqa: F811
    page = browser_page
    outside: list[str] = []

    def block_outside(route):
        if route.request.url.startswith(asgi_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", block_outside)
    page.goto(f"{asgi_server.url}/api/docs/")
    expect(page.get_by_role("heading", name="KB Portal API")).to_be_visible()
    expect(page.get_by_text("/api/v1/search").first).to_be_visible()
    shot(page, artifacts, "forms-07-swagger-offline")
    page.goto(f"{asgi_server.url}/api/redoc/")
    expect(page.get_by_role("heading", name="KB Portal API").first).to_be_visible(timeout=30_000)
    page.screenshot(path=str(artifacts / "forms-08-redoc-offline.png"))  # its full page is ~18,000 px
    assert outside == []
