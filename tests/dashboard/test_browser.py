"""End to end in a real browser (Debian's chromium through Playwright) against real processes:
daphne serving the ASGI application (HTTP and WebSockets) and an rq worker, both on the test
database. Screenshots of every page are saved under VAR_DIR/artifacts/ for people to look at."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from playwright.sync_api import Page, expect, sync_playwright

from bench.processes import free_port, start_worker_process
from ingestion.services import source_sync
from ingestion.tasks import run_ingestion_job
from knowledge.models import Source
from search.client import get_client, reset_client
from tests.support import ROOT, stop_worker, wait_for_http, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: The test search server is shared and slow under load: a timeout there would be retried after a
#: backoff by rq's scheduler, which test workers do not run. Give it time instead.
SLOW_SEARCH_SERVER = {"KB_ES_TIMEOUT": "30"}
TEXT = (
    "Vacation policy. Every employee has 25 days of paid vacation a year. "
    "Unused vacation days carry over until the end of March."
)


@pytest.fixture
def artifacts() -> Path:
    path = Path(settings.VAR_DIR) / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


class AsgiServer:
    """daphne serving kbportal.asgi on this run's database and Redis; stoppable and restartable
    on the same port, so a test can cut the browser's WebSocket and let it reconnect."""

    def __init__(self, log_path: Path, **env: str):
        self.port = free_port()
        self.env = env
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p", str(self.port),
                 "kbportal.asgi:application"],
                cwd=ROOT,
                env=worker_env(**{"KB_SERVE_STATIC": "1", "KB_DEBUG": "1", **SLOW_SEARCH_SERVER, **self.env}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_http(f"{self.url}/health/live", seconds=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def patient_search_client(settings):
    """This process's search client with the same patience as the servers'."""
    settings.KB_ES_TIMEOUT = float(SLOW_SEARCH_SERVER["KB_ES_TIMEOUT"])
    reset_client()
    yield
    reset_client()


@pytest.fixture
def asgi_server(transactional_db, search_index, artifacts):
    server = AsgiServer(artifacts / "daphne.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser_page(monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()
            # ORM calls made while Playwright's loop runs get their own connection (asgiref's
            # context-local storage); close it here, or the test database cannot be dropped.
            connections.close_all()


def shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_operator_creates_a_kb_watches_ingestion_live_searches_and_manages_keys(
    asgi_server, browser_page, artifacts, patient_search_client
):
    get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)
    page = browser_page

    # Anonymous: sent to the login page, then back to the dashboard.
    page.goto(f"{asgi_server.url}/dashboard/")
    expect(page).to_have_url(f"{asgi_server.url}/accounts/login/?next=/dashboard/")
    shot(page, artifacts, "01-login")
    page.get_by_label("User name").fill("operator")
    page.get_by_label("Password").fill("pw-operator-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    shot(page, artifacts, "02-overview-empty")

    # Create a knowledge base from the overview.
    page.get_by_label("Name", exact=True).fill("Staff handbook")
    page.get_by_label("Slug").fill("handbook")
    page.get_by_label("Embedder").select_option("hashing")
    page.get_by_role("button", name="Create knowledge base").click()
    expect(page.get_by_role("heading", name="Staff handbook")).to_be_visible()

    # Add a text source; no worker runs yet, so its job waits in the queue.
    page.locator("#id_text-name").fill("Vacation policy")
    page.locator("#id_text-text").fill(TEXT)
    page.get_by_role("button", name="Add text source").click()
    expect(page.locator("#jobs tr[data-job-id]")).to_have_count(1)
    job_id = page.locator("#jobs tr[data-job-id]").get_attribute("data-job-id")
    row = page.locator(f'#jobs tr[data-job-id="{job_id}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("queued")
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    shot(page, artifacts, "03-kb-job-queued")

    # A worker starts; the row reaches 100% over the WebSocket, without any reload.
    page.evaluate("window.__notReloaded = true")
    worker_log = (artifacts / "worker.log").open("ab")
    worker = start_worker_process(settings.KB_INGESTION_QUEUES, worker_env(**SLOW_SEARCH_SERVER), log=worker_log)
    try:
        expect(row.locator('[data-field="status"]')).to_have_text("succeeded", timeout=60_000)
    finally:
        stop_worker(worker)
        worker_log.close()
    expect(row.locator('[data-field="percent"]')).to_have_text("100.0%")
    assert row.locator('[data-field="progress"]').evaluate("el => el.value") == 100
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator("[data-live-announce]")).to_contain_text("succeeded")

    # The server goes away; meanwhile another sync runs. After reconnecting, the page resyncs
    # from the state message and shows the job it never got an event for.
    asgi_server.stop()
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "reconnecting")
    missed = source_sync(source=Source.objects.get(name="Vacation policy"))
    assert run_ingestion_job(missed.pk) == "succeeded"
    asgi_server.start()
    missed_row = page.locator(f'#jobs tr[data-job-id="{missed.pk}"]')
    expect(missed_row.locator('[data-field="status"]')).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("[data-live-status]")).to_have_attribute("data-state", "live")
    assert page.evaluate("window.__notReloaded") is True
    page.reload()
    expect(page.locator("#sources")).to_contain_text("Vacation policy")
    expect(page.locator("#documents")).to_contain_text("indexed")
    shot(page, artifacts, "04-kb-indexed")

    # Narrow screen: the same page stays usable.
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, artifacts, "05-kb-narrow")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Job detail and the jobs list.
    row.get_by_role("link", name=f"Job {job_id}").click()
    expect(page.locator('[data-field="status"]')).to_have_text("succeeded")
    expect(page.get_by_role("button", name="Retry as a new job")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()
    shot(page, artifacts, "06-job-detail")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    expect(page.locator("tr[data-job-id]")).to_have_count(2)
    shot(page, artifacts, "07-jobs")

    # Search it in the playground: every mode finds the policy.
    get_client().indices.refresh(index=settings.KB_ES_INDEX)
    page.get_by_role("link", name="Search playground").click()
    page.get_by_label("Knowledge base", exact=True).select_option("handbook")
    page.get_by_label("Query", exact=True).fill("vacation days")
    page.get_by_role("button", name="Search").click()
    for mode in ("hybrid", "keyword", "semantic"):
        expect(page.locator(f'[data-mode="{mode}"] .hits')).to_contain_text("vacation")
    expect(page.locator('[data-mode="keyword"] mark').first).to_be_visible()
    shot(page, artifacts, "08-playground")

    # Create an API key (its secret shown once), then revoke it.
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("intranet search")
    page.get_by_label("Staff handbook (handbook)").check()
    page.get_by_label("Search", exact=True).check()
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key").input_value()
    assert secret.startswith("kb_")
    shot(page, artifacts, "09-api-key-created")
    page.get_by_role("link", name="Revoke intranet search").click()
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator("tr[data-key]")).to_contain_text("revoked")
    assert secret not in page.content()
    shot(page, artifacts, "10-api-keys")

    # The overview now counts the document and its chunks.
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("row", name="Staff handbook")).to_contain_text("1")
    shot(page, artifacts, "11-overview")
