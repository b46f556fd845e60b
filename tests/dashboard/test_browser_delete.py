"""Deleting in a real browser (Debian's chromium through Playwright) against daphne and an rq worker:
an operator deletes a source, then the whole knowledge base, each after a confirmation; the delete
jobs succeed, the deleted knowledge base's job history stays, and a new knowledge base with the same
slug finds nothing of the old one in the playground. Screenshots are saved under VAR_DIR/artifacts/."""

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from bench.processes import start_worker_process
from ingestion.models import IngestionJob, JobKind
from ingestion.services import source_add
from ingestion.tasks import run_ingestion_job
from knowledge.services import knowledge_base_create
from tests.dashboard.test_browser import (  # noqa: F401  (fixtures)
    SLOW_SEARCH_SERVER,
    artifacts,
    asgi_server,
    browser_page,
    patient_search_client,
    shot,
)
from tests.support import stop_worker, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_deletes_a_source_then_the_knowledge_base_and_reuses_its_slug(
    asgi_server, browser_page, artifacts, patient_search_client  # noqa: F811
):
    get_user_model().objects.create_user("operator", password="pw-operator-1", is_staff=True)
    kb = knowledge_base_create(slug="clients", name="Client files", embedder="hashing")
    for name, text in {"Contracts": "The Aldebaran contract renews every spring.",
                       "Invoices": "Invoice numbers of Aldebaran start with AX."}.items():
        _, job = source_add(kb=kb, kind="text", name=name, config={"text": text})
        assert run_ingestion_job(job.pk) == "succeeded"
    page = browser_page
    page.goto(f"{asgi_server.url}/accounts/login/?next=/dashboard/kbs/clients/")
    page.get_by_label("User name").fill("operator")
    page.get_by_label("Password").fill("pw-operator-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Client files")).to_be_visible()

    log = (artifacts / "worker-delete.log").open("ab")
    worker = start_worker_process(settings.KB_INGESTION_QUEUES, worker_env(**SLOW_SEARCH_SERVER), log=log)
    try:
        # A source: asked first, then gone from the page; its delete job succeeds live.
        page.get_by_role("link", name="Delete Invoices").click()
        expect(page.get_by_role("heading", name="Delete the source “Invoices”?")).to_be_visible()
        shot(page, artifacts, "delete-01-source-confirm")
        page.get_by_role("button", name="Delete source").click()
        expect(page.locator("#sources")).not_to_contain_text("Invoices")
        delete_row = page.locator("#jobs tr[data-job-id]").filter(has_text="Delete a source")
        expect(delete_row.locator('[data-field="status"]')).to_have_text("succeeded", timeout=60_000)
        shot(page, artifacts, "delete-02-source-deleted")

        # The knowledge base: the confirmation says what goes; the job page then shows the delete.
        page.get_by_role("link", name="Delete this knowledge base").click()
        expect(page.get_by_text("Its 1 source and 1 document")).to_be_visible()
        shot(page, artifacts, "delete-03-kb-confirm")
        page.get_by_role("button", name="Delete knowledge base").click()
        expect(page.get_by_text("clients (deleted)")).to_be_visible()
        expect(page.locator('[data-field="status"]')).to_have_text("succeeded", timeout=60_000)
        shot(page, artifacts, "delete-04-kb-delete-job")
    finally:
        stop_worker(worker)
        log.close()
    delete = IngestionJob.objects.get(kind=JobKind.DELETE_KNOWLEDGE_BASE)
    assert delete.payload["chunks_deleted"] == 1
    page.reload()
    expect(page.get_by_test_id("removed")).to_have_text(
        "Removed 1 chunk from the search index and 1 stored file nothing else uses.")

    # The history stays; the Overview no longer lists it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    expect(page.locator("tr[data-job-id]").filter(has_text="clients (deleted)")).to_have_count(4)
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("row", name="Client files")).to_have_count(0)

    # Same slug, new knowledge base: nothing of the old one in any mode.
    knowledge_base_create(slug="clients", name="New client files", embedder="hashing")
    page.goto(f"{asgi_server.url}/dashboard/search/?kb=clients&q=Aldebaran+contract")
    for mode in ("hybrid", "keyword", "semantic"):
        expect(page.locator(f'[data-mode="{mode}"]')).to_be_visible()
        expect(page.locator(f'[data-mode="{mode}"] .hits')).not_to_contain_text("Aldebaran")
    shot(page, artifacts, "delete-05-same-slug-finds-nothing")
