"""The Ask tab end to end in a real browser (Debian's chromium through Playwright) against daphne and
an rq worker on the `answers` queue: the answer streams in token by token, its [n] markers link to
the sources and the sources to the documents; cancel, a server restart mid-answer (reconnect and
resync), an extractive answer, and the same question without JavaScript.

The `support` knowledge base answers through the `openai` generator pointed at the stand-in model
server (bench.standin_llm: scripted server-sent events, not a model - none can run here), slowed
down so the stream is visible; `handbook` uses the default extractive generator.
"""

import re
import uuid
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from bench.processes import start_worker_process, wait_until
from bench.standin_llm import StandinLLM
from kbportal.claiming import JobStatus
from knowledge.services import knowledge_base_create
from search.models import AnswerTask
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    SLOW_SEARCH_SERVER,
    AsgiServer,
    artifacts,
    browser_page,
    patient_search_client,
    shot,
)
from tests.search.search_kbs import document_id, ingest
from tests.support import stop_worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

HANDBOOK = {
    "Vacation policy": "Every employee has 25 days of paid vacation a year. "
                       "Unused vacation days carry over until the end of March.",
    "Expenses": "Submit receipts within thirty days. Travel is booked through the travel desk.",
}
SUPPORT = {
    "Password reset": "Reset a forgotten password from the sign-in page. The reset link expires after one hour.",
    "Printers": "Printers on every floor accept badge release. Toner is ordered by the facilities team.",
}
LONG_REPLY = " ".join(["The reset link from the sign-in page expires after one hour [1]."] * 6)


@pytest.fixture
def standin():
    with StandinLLM().running() as llm:
        yield llm


@pytest.fixture
def knowledge_bases(transactional_db, search_index, patient_search_client):  # noqa: F811
    # Unique slugs: the search index outlives test databases, and retrieval filters by slug.
    suffix = uuid.uuid4().hex[:8]
    handbook = knowledge_base_create(slug=f"handbook-{suffix}", name="Staff handbook", embedder="hashing")
    support = knowledge_base_create(slug=f"support-{suffix}", name="IT support", embedder="hashing")
    ingest(handbook, HANDBOOK)
    ingest(support, SUPPORT)
    return SimpleNamespace(handbook=handbook.slug, support=support.slug)


@pytest.fixture
def services(knowledge_bases, standin, artifacts):  # noqa: F811
    """daphne and one answers worker; both answer `support` with the stand-in model."""
    llm_env = {"KB_GENERATOR_BY_KB": f"{knowledge_bases.support}=openai", "KB_LLM_URL": standin.url,
               "KB_LLM_MODEL": "standin-1", "KB_LLM_RETRY_BASE_SECONDS": "0.05"}
    server = AsgiServer(artifacts / "daphne-ask.log", **llm_env)
    server.start()
    log = (artifacts / "worker-ask.log").open("ab")
    worker = start_worker_process(("answers",), worker_env(**SLOW_SEARCH_SERVER, **llm_env), log=log)
    try:
        yield SimpleNamespace(server=server, **vars(knowledge_bases))
    finally:
        stop_worker(worker)
        log.close()
        server.stop()


def sign_in(page: Page, server: AsgiServer) -> None:
    get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)
    page.goto(f"{server.url}/accounts/login/?next=/dashboard/search/ask/")
    page.get_by_label("User name").fill("operator")
    page.get_by_label("Password").fill("pw-operator-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Ask a knowledge base")).to_be_visible()


def ask(page: Page, kb: str, question: str) -> None:
    page.get_by_label("Knowledge base").select_option(kb)
    page.get_by_label("Question", exact=True).fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()


def record_stream(page: Page) -> None:
    """Record every length the answer text has while it is being written (a MutationObserver)."""
    page.evaluate("""() => {
        window.__lengths = [];
        const region = document.querySelector('[data-answer] [data-field="answer"]');
        new MutationObserver(() => {
            if (region.getAttribute('aria-busy') === 'true') window.__lengths.push(region.textContent.length);
        }).observe(region, {childList: true, subtree: true, characterData: true});
    }""")


def test_ask_tab_streams_answers_with_linked_citations_cancels_and_resyncs(
    services, browser_page, artifacts, standin  # noqa: F811
):
    page = browser_page
    server = services.server
    sign_in(page, server)
    expect(page.get_by_role("navigation", name="Playground").get_by_role("link", name="Ask")).to_have_attribute(
        "aria-current", "page")
    shot(page, artifacts, "ask-01-form")
    panel = page.locator("[data-answer]")
    status = panel.locator('[data-field="status"]')
    text = panel.locator('[data-field="answer"]')

    # 1. The stand-in writes for 3 s: the text grows in place, then the answer links its source.
    standin.answer_seconds = 3
    page.evaluate("window.__notReloaded = true")
    record_stream(page)
    ask(page, services.support, "How long is a password reset link valid?")
    expect(status).to_have_text("running", timeout=30_000)
    expect(text).to_contain_text("According to", timeout=30_000)
    expect(status).to_have_text("succeeded", timeout=30_000)
    lengths = page.evaluate("window.__lengths")
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), lengths  # streamed, and only ever grew
    assert page.evaluate("window.__notReloaded") is True
    expect(text).to_contain_text("the knowledge base answers this [1].")
    expect(panel.locator('[data-field="extractive"]')).to_be_hidden()
    expect(panel.locator("[data-live-status]")).to_contain_text("Answer complete.")
    task = AnswerTask.objects.order_by("-pk").first()
    assert text.text_content() == task.answer
    marker = text.get_by_role("link", name="Source 1")
    expect(marker).to_have_attribute("href", f"#cite-{task.pk}-1")
    source = panel.locator(f"#cite-{task.pk}-1")
    expect(source).to_contain_text(task.citations[0]["title"])
    expect(panel.get_by_role("button", name="Cancel")).to_be_hidden()
    shot(page, artifacts, "ask-02-streamed-answer")

    # The marker jumps to the source; the source's title opens the document's row on its KB page.
    marker.click()
    assert page.evaluate("location.hash") == f"#cite-{task.pk}-1"
    cited_doc = task.citations[0]["document_id"]
    source.get_by_role("link", name=task.citations[0]["title"]).click()
    expect(page.locator(f"#doc-{cited_doc}")).to_be_visible()
    assert page.evaluate("location.hash") == f"#doc-{cited_doc}"
    assert cited_doc in {document_id(task.kb, title) for title in SUPPORT}
    shot(page, artifacts, "ask-03-cited-document")

    # 2. Cancel a long answer while it is written.
    page.goto(f"{server.url}/dashboard/search/ask/")
    standin.reply, standin.answer_seconds = LONG_REPLY, 30
    ask(page, services.support, "When does the reset link expire?")
    expect(text).to_contain_text("reset link", timeout=30_000)
    panel.get_by_role("button", name="Cancel").click()
    expect(status).to_have_text("canceled", timeout=15_000)
    canceled = AnswerTask.objects.order_by("-pk").first()
    assert canceled.status == JobStatus.CANCELED and len(canceled.answer) < len(LONG_REPLY)
    shot(page, artifacts, "ask-04-canceled")

    # 3. The server goes away mid-answer and comes back after the answer finished: the page
    #    reconnects and resyncs from the state message, with no text lost or doubled.
    standin.reply, standin.answer_seconds = None, 6
    ask(page, services.support, "Who orders printer toner?")
    expect(text).to_contain_text("According", timeout=30_000)
    server.stop()
    expect(panel.locator("[data-live-status]")).to_have_attribute("data-state", "reconnecting")
    resumed = AnswerTask.objects.order_by("-pk").first()
    wait_until(lambda: AnswerTask.objects.get(pk=resumed.pk).is_finished, timeout=60, message="answer finished")
    server.start()
    expect(status).to_have_text("succeeded", timeout=30_000)
    resumed.refresh_from_db()
    assert text.text_content() == resumed.answer
    expect(text.get_by_role("link", name="Source 1")).to_be_visible()

    # 4. An extractive answer is labelled as such and quotes the cited document.
    ask(page, services.handbook, "How many days of paid vacation do employees have?")
    expect(status).to_have_text("succeeded", timeout=30_000)
    expect(panel.locator('[data-field="extractive"]')).to_be_visible()
    expect(text).to_contain_text("vacation")
    expect(panel.locator(".citations li").first).to_contain_text("Vacation policy")
    expect(page.get_by_role("heading", name="Answer")).to_be_focused()
    shot(page, artifacts, "ask-05-extractive")
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, artifacts, "ask-06-extractive-narrow")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.set_viewport_size({"width": 1280, "height": 900})

    # 5. A bad question is shown back with the service's message.
    page.get_by_label("Question", exact=True).fill("   ")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator(".field.has-error")).to_contain_text("The question must not be empty.")


def test_ask_tab_works_without_javascript(services, browser_page, artifacts):  # noqa: F811
    page = browser_page
    context = page.context.browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, services.server)
        ask(page, services.handbook, "Until when do unused vacation days carry over?")
        expect(page).to_have_url(re.compile(r"/dashboard/search/ask/\d+/$"))
        expect(page.get_by_role("heading", name="Answer", exact=True)).to_be_visible()
        shot(page, artifacts, "ask-07-nojs-pending")
        # The page refreshes itself (a <noscript> meta refresh) until the answer is final.
        expect(page.locator('[data-field="status"]')).to_have_text("succeeded", timeout=60_000)
        task = AnswerTask.objects.get()
        expect(page.locator("[data-answer]").get_by_role("link", name=f"Source {task.citations[0]['number']}")
               ).to_be_visible()
        expect(page.locator(".citations")).to_contain_text("Vacation policy")
        expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
        shot(page, artifacts, "ask-08-nojs-answer")
    finally:
        context.close()
