"""Failures and live refresh in a real browser (Debian's chromium through Playwright) against daphne
and an rq worker: a failed job turns red with its one-line reason in the knowledge base's job list,
the Jobs page and the job page (document errors as a table); when a sync finishes, the knowledge
base page's Sources and Documents sections show its result without a reload; a failed answer shows
why and is asked again from its page. Screenshots are saved under VAR_DIR/artifacts/."""

import re
import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import Page, expect

from bench.processes import start_worker_process
from ingestion.models import IngestionJob
from ingestion.services import store_upload, upload_add
from kbportal.claiming import JobStatus
from knowledge.services import knowledge_base_create
from search.asking.services import answer_submit
from search.models import AnswerTask
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    SLOW_SEARCH_SERVER,
    artifacts,
    asgi_server,
    browser_page,
    patient_search_client,
    shot,
)
from tests.search.asking.ask_support import run_in_thread
from tests.search.search_kbs import ingest
from tests.support import stop_worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
RED = "rgb(179, 38, 30)"  # --danger


@pytest.fixture
def signed_in(asgi_server, browser_page):  # noqa: F811
    # The admin user `make up` creates: the dashboard and Django admin alike.
    get_user_model().objects.create_superuser("admin", password="pw-admin-1")
    page = browser_page
    page.goto(f"{asgi_server.url}/accounts/login/?next=/dashboard/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("pw-admin-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    return page


@pytest.fixture
def start_worker(artifacts):  # noqa: F811
    """Starts one ingestion worker when called; stopped at the end of the test."""
    started = []

    def start():
        log = (artifacts / "worker-failures.log").open("ab")
        worker = start_worker_process(settings.KB_INGESTION_QUEUES, worker_env(**SLOW_SEARCH_SERVER), log=log)
        started.append((worker, log))

    yield start
    for worker, log in started:
        stop_worker(worker)
        log.close()


def new_kb(name: str):
    return knowledge_base_create(slug=f"b-{uuid.uuid4().hex[:8]}", name=name, embedder="hashing")


def test_a_failed_job_is_red_with_its_reason_in_the_lists_and_on_its_page(
    asgi_server, signed_in, start_worker, artifacts, patient_search_client  # noqa: F811
):
    page: Page = signed_in
    kb = new_kb("Pictures")
    files = [store_upload(data=PNG, filename=name, content_type="image/png") for name in ("red.png", "blue.png")]
    _, job = upload_add(kb=kb, files=files, name="two pictures")
    page.goto(f"{asgi_server.url}/dashboard/kbs/{kb.slug}/")
    row = page.locator(f'#jobs tr[data-job-id="{job.pk}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("queued")

    # The worker fails it; the row turns red and shows why, live.
    start_worker()
    expect(row.locator('[data-field="status"]')).to_have_text("failed", timeout=60_000)
    reason = IngestionJob.objects.get(pk=job.pk).error
    assert reason.startswith("all 2 documents failed; first: red.png: ") and "{" not in reason
    expect(row).to_have_class(re.compile(r"\bstatus-failed\b"))
    expect(row.locator('[data-field="reason"]')).to_have_text(reason)
    assert row.locator('[data-field="reason"]').evaluate("el => getComputedStyle(el).color") == RED
    assert row.locator("progress").evaluate("el => getComputedStyle(el).accentColor") == RED
    # The Documents section shows both failed documents with their errors (refreshed, not reloaded).
    expect(page.locator("#documents tbody tr")).to_have_count(2)
    expect(page.locator("#documents")).to_contain_text("red.png")
    shot(page, artifacts, "failures-01-kb-job-failed")

    # The Jobs page: the same red row with the reason in the Error column.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    listed = page.locator(f'tr[data-job-id="{job.pk}"]')
    expect(listed.locator('[data-field="reason"]')).to_have_text(reason)
    assert listed.locator("progress").evaluate("el => getComputedStyle(el).accentColor") == RED
    shot(page, artifacts, "failures-02-jobs-list")

    # The job page: the reason on one line, each document's error in a table, a retry button.
    listed.get_by_role("link", name=f"Job {job.pk}").click()
    expect(page.locator('p[data-field="reason"]')).to_have_text(reason)
    assert page.locator('p[data-field="reason"]').evaluate("el => getComputedStyle(el).color") == RED
    table = page.get_by_role("table", name="Documents that failed, the latest last")
    expect(table.get_by_role("row")).to_have_count(3)
    expect(table.get_by_role("row").nth(1).get_by_role("cell").first).to_have_text("red.png")
    expect(table.get_by_role("row").nth(2).get_by_role("cell").first).to_have_text("blue.png")
    expect(page.get_by_role("button", name="Retry as a new job")).to_be_visible()
    shot(page, artifacts, "failures-03-job-page")

    # Django admin: the same reason in the job list; the job's page has nothing to edit.
    page.goto(f"{asgi_server.url}/admin/ingestion/ingestionjob/")
    admin_row = page.locator("#result_list tbody tr")
    expect(admin_row).to_have_count(1)
    expect(admin_row.locator("td.field-reason_line")).to_have_text(reason)
    assert admin_row.locator("td.field-reason_line span").evaluate("el => getComputedStyle(el).color") == RED
    shot(page, artifacts, "failures-08-admin-jobs")
    page.goto(f"{asgi_server.url}/admin/ingestion/ingestionjob/{job.pk}/change/")
    expect(page.get_by_role("heading", name="View ingestion job")).to_be_visible()
    expect(page.locator("[name='status'], [name='error'], [name='_save']")).to_have_count(0)
    shot(page, artifacts, "failures-09-admin-job")

    # django-rq's page (from the dashboard's menu) counts no failed job, and says where the failures are.
    page.goto(f"{asgi_server.url}/dashboard/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Queues (django-rq)").click()
    note = page.get_by_test_id("rq-note")
    expect(note).to_contain_text("Job history, progress and failures")
    shot(page, artifacts, "failures-10-django-rq")
    note.get_by_role("link", name="failed jobs").click()
    expect(page.locator(f'tr[data-job-id="{job.pk}"] [data-field="status"]')).to_have_text("failed")
    shot(page, artifacts, "failures-11-failed-jobs-from-rq")


def test_when_a_sync_finishes_the_kb_page_shows_its_sources_and_documents_without_a_reload(
    asgi_server, signed_in, start_worker, artifacts, patient_search_client  # noqa: F811
):
    page: Page = signed_in
    kb = new_kb("Staff handbook")
    page.goto(f"{asgi_server.url}/dashboard/kbs/{kb.slug}/")
    page.locator("#id_text-name").fill("Vacation policy")
    page.locator("#id_text-text").fill("Every employee has 25 days of paid vacation a year.")
    page.get_by_role("button", name="Add text source").click()
    sources = page.locator("#sources")
    expect(sources.get_by_role("row", name=re.compile("Vacation policy"))).to_contain_text("never")
    expect(page.locator("#documents")).to_contain_text("No documents match")
    expect(page.locator("#jobs [data-live-status]")).to_have_attribute("data-state", "live")
    page.locator("#id_q").fill("")  # a focused filter field keeps its place while the list refreshes
    shot(page, artifacts, "failures-04-kb-before-sync")

    page.evaluate("window.__notReloaded = true")
    start_worker()
    expect(page.locator("#jobs [data-field='status']").first).to_have_text("succeeded", timeout=60_000)
    source_row = sources.get_by_role("row", name=re.compile("Vacation policy"))
    expect(source_row).to_contain_text("succeeded: 1 indexed, 0 unchanged, 0 failed")
    expect(source_row).not_to_contain_text("never")
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    expect(page.locator("#documents tbody tr")).to_contain_text("indexed")
    expect(page.locator("#documents")).not_to_contain_text("No documents match")
    assert page.evaluate("window.__notReloaded") is True
    assert page.evaluate("document.activeElement.id") == "id_q"
    shot(page, artifacts, "failures-05-kb-after-sync")


@pytest.fixture
def handbook(search_index, patient_search_client):  # noqa: F811
    """A knowledge base with one document, ingested before the browser's event loop runs here."""
    kb = new_kb("Staff handbook")
    ingest(kb, {"Vacation policy": "Every employee has 25 days of paid vacation a year."})
    return kb


def test_a_failed_answer_shows_why_and_is_asked_again_from_its_page(
    handbook, asgi_server, signed_in, artifacts  # noqa: F811
):
    page: Page = signed_in
    kb = handbook
    failed, _ = answer_submit(kb_slug=kb.slug, question="How many vacation days are there?")
    AnswerTask.objects.filter(pk=failed.pk).update(
        status=JobStatus.FAILED, attempts=3, finished_at=timezone.now(),
        error="the model server failed 3 times (HTTP 500):\nInternal Server Error",
    )
    page.goto(f"{asgi_server.url}/dashboard/search/ask/{failed.pk}/")
    panel = page.locator("[data-answer]")
    reason = panel.locator('[data-field="reason"]')
    expect(reason).to_have_text("the model server failed 3 times (HTTP 500): Internal Server Error")
    assert reason.evaluate("el => getComputedStyle(el).color") == RED
    shot(page, artifacts, "failures-06-answer-failed")

    page.get_by_role("button", name="Ask again").click()
    retried = AnswerTask.objects.exclude(pk=failed.pk).get()
    expect(page).to_have_url(f"{asgi_server.url}/dashboard/search/ask/{retried.pk}/")
    expect(page.locator(".messages")).to_contain_text(f"Answer {failed.pk} asked again as answer {retried.pk}")
    expect(panel.locator('[data-field="status"]')).to_have_text("queued")
    expect(reason).to_be_hidden()
    expect(page.get_by_role("button", name="Ask again")).to_be_hidden()

    # The answer (run in a thread of this process, as a worker would) arrives over the answer's
    # WebSocket; still no error.
    run_in_thread(retried.pk).join(timeout=60)
    expect(panel.locator('[data-field="status"]')).to_have_text("succeeded", timeout=30_000)
    expect(panel.locator('[data-field="answer"]')).not_to_be_empty()
    expect(reason).to_be_hidden()
    shot(page, artifacts, "failures-07-answer-asked-again")

    # Django admin's answers: both, found by their question, the failed one red with its reason.
    page.goto(f"{asgi_server.url}/admin/search/answertask/?q=vacation")
    expect(page.locator("#result_list tbody tr")).to_have_count(2)
    expect(page.locator("#result_list")).to_contain_text("the model server failed 3 times (HTTP 500)")
    shot(page, artifacts, "failures-12-admin-answers")
