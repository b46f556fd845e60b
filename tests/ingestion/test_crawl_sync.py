"""Url sources synced through the crawler and the pipeline (ingestion.crawl_sync), against sites
served on 127.0.0.1 by the tests (the SSRF allowlist admits 127.0.0.0/8 unless a test drops it)."""

import multiprocessing
import threading

import pytest
from django.conf import settings
from django.db import connection

from bench.localsite import LocalSite, article_text
from bench.processes import wait_until
from ingestion.models import IngestionJob
from ingestion.services import job_cancel, job_state, source_add, source_sync
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus
from knowledge.models import Document, DocumentStatus
from knowledge.storage import get_object_store
from search.client import get_client
from search.query import SearchRequest, search
from tests.ingestion.test_extraction import text_pdf
from tests.support import embedded_texts

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def site(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = ["127.0.0.0/8"]
    server = LocalSite().start()
    yield server
    server.stop()


def crawl_job(kb, site, **config):
    config = {"start_urls": [site.url("/")], "concurrency": 4, **config}
    return source_add(kb=kb, kind="url", name="site", config=config)


def run(job) -> IngestionJob:
    run_ingestion_job(job.pk)
    return IngestionJob.objects.select_related("kb").get(pk=job.pk)


def found(kb, words: str) -> set[str]:
    """Paths of the pages a keyword search for `words` finds in the KB."""
    get_client().indices.refresh(index=settings.KB_ES_INDEX)
    hits = search(SearchRequest(query=words, kbs=[str(kb.pk)], mode="keyword", size=50)).hits
    return {hit.url.split(":", 2)[2].split("/", 1)[1] for hit in hits}


def small_site(site, *, validators=True, articles=3):
    site.article("/", "Home", "Welcome to the site.", [f"/a{n}" for n in range(articles)], validators=validators)
    for n in range(articles):
        site.article(f"/a{n}", f"Article {n}", article_text(n), validators=validators)


def test_crawl_indexes_pages_and_search_finds_them(kb, site):
    small_site(site)
    source, job = crawl_job(kb, site)
    finished = run(job)
    assert (finished.status, finished.done, finished.failed) == (JobStatus.SUCCEEDED, 4, 0)
    assert found(kb, "marker1x2") == {"a1"}
    assert Document.objects.filter(source=source, status=DocumentStatus.INDEXED).count() == 4
    crawl = job_state(finished)["crawl"]
    assert (crawl["discovered"], crawl["fetched"], crawl["indexed"], crawl["unchanged"]) == (4, 4, 4, 0)
    assert finished.total == 4


def test_indexed_page_keeps_its_etag_and_last_modified(kb, site):
    small_site(site, articles=1)
    source, job = crawl_job(kb, site)
    run(job)
    metadata = Document.objects.get(source=source, key=site.url("/a0")).metadata
    assert metadata["etag"].startswith('"') and metadata["last_modified"] == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_etag_resync_is_answered_304_and_embeds_nothing(kb, site):
    site.validated("/", '<a href="/a">a</a><p>home page words</p>', etag='"h1"')
    site.validated("/a", "<p>an article about catalogues</p>", etag='"a1"')
    source, job = crawl_job(kb, site)
    run(job)
    embedded = len(embedded_texts())
    again = run(source_sync(source=source))
    assert (site.statuses[200], site.statuses[304]) == (2, 2)
    assert (again.status, again.done, again.skipped) == (JobStatus.SUCCEEDED, 0, 2)
    assert len(embedded_texts()) == embedded
    assert job_state(again)["crawl"]["unchanged"] == 2
    assert found(kb, "catalogues") == {"a"}


def test_last_modified_resync_is_answered_304_and_embeds_nothing(kb, site):
    site.validated("/", '<a href="/a">a</a><p>home page words</p>', last_modified=1_700_000_000)
    site.validated("/a", "<p>an article about thesauri</p>", last_modified=1_700_000_000)
    source, job = crawl_job(kb, site)
    run(job)
    embedded = len(embedded_texts())
    again = run(source_sync(source=source))
    assert (site.statuses[200], site.statuses[304]) == (2, 2)
    assert (again.done, again.skipped) == (0, 2)
    assert len(embedded_texts()) == embedded


def test_resync_follows_remembered_links_without_reading_stored_pages(kb, site):
    small_site(site, articles=2)
    source, job = crawl_job(kb, site)
    run(job)
    home = Document.objects.get(source=source, key=site.url("/"))
    assert home.metadata["links"] == [site.url("/a0"), site.url("/a1")]
    for document in Document.objects.filter(source=source):
        get_object_store().delete(document.object_key)  # a 304 must not need the stored bytes
    again = run(source_sync(source=source))
    assert (site.statuses[304], again.done, again.skipped) == (3, 0, 3)
    assert job_state(again)["crawl"]["retired"] == 0 and found(kb, "marker1x0") == {"a1"}


def test_resync_without_validators_skips_unchanged_pages_by_sha256(kb, site):
    small_site(site, validators=False, articles=2)
    source, job = crawl_job(kb, site)
    run(job)
    embedded = len(embedded_texts())
    again = run(source_sync(source=source))
    assert site.statuses[304] == 0 and (again.done, again.skipped) == (0, 3)
    assert len(embedded_texts()) == embedded


def test_changed_page_is_updated_in_the_index(kb, site):
    small_site(site, articles=2)
    source, job = crawl_job(kb, site)
    run(job)
    site.article("/a1", "Article 1", "Rewritten: now about zeppelins only.")
    again = run(source_sync(source=source))
    assert (again.done, again.skipped) == (1, 2)
    assert found(kb, "zeppelins") == {"a1"}
    assert "a1" not in found(kb, "marker1x0")


def test_page_answering_404_disappears_from_the_index(kb, site):
    small_site(site, articles=2)
    source, job = crawl_job(kb, site)
    run(job)
    gone = Document.objects.get(source=source, key=site.url("/a1"))
    assert found(kb, "marker1x0") == {"a1"}
    del site.routes["/a1"]
    again = run(source_sync(source=source))
    assert again.status == JobStatus.SUCCEEDED and job_state(again)["crawl"]["gone"] == 1
    assert found(kb, "marker1x0") == set()
    assert not Document.objects.filter(pk=gone.pk).exists()
    assert not get_object_store().exists(gone.object_key)


def test_page_no_longer_linked_disappears_after_the_sync(kb, site):
    small_site(site, articles=2)
    source, job = crawl_job(kb, site)
    run(job)
    site.article("/", "Home", "Welcome to the site.", ["/a0"])
    again = run(source_sync(source=source))
    assert site.hits["/a1"] == 1  # never asked for again
    assert job_state(again)["crawl"]["retired"] == 1
    assert found(kb, "marker1x0") == set()
    assert not Document.objects.filter(source=source, key=site.url("/a1")).exists()


def test_unlinked_page_is_kept_when_max_pages_cut_the_crawl(kb, site):
    small_site(site, articles=3)
    source, job = crawl_job(kb, site, concurrency=1)
    run(job)
    source.config = {**source.config, "max_pages": 2}
    source.save()
    run(source_sync(source=source))
    assert Document.objects.filter(source=source).count() == 4
    assert found(kb, "marker2x0") == {"a2"}


def test_pages_behind_a_failed_fetch_are_kept(kb, site):
    site.article("/", "Home", "Welcome.", ["/hub"])
    site.article("/hub", "Hub", "The hub.", ["/leaf"])
    site.article("/leaf", "Leaf", "A leaf about ornithology.")
    source, job = crawl_job(kb, site)
    run(job)
    site.page("/hub", "down for maintenance", "text/plain", status=503)
    again = run(source_sync(source=source))
    hub = Document.objects.get(source=source, key=site.url("/hub"))
    assert (hub.status, hub.error) == (DocumentStatus.FAILED, "HTTP 503 Service Unavailable")
    assert again.failed == 1 and found(kb, "ornithology") == {"leaf"}


def test_text_and_pdf_files_linked_from_the_site_are_indexed(kb, site):
    site.article("/", "Home", "Downloads.", ["/notes.txt", "/report.pdf"])
    site.page("/notes.txt", "Plain notes mentioning hydrography.", "text/plain")
    site.page("/report.pdf", text_pdf(["A report on glaciology."]), "application/pdf")
    _, job = crawl_job(kb, site)
    assert run(job).done == 3
    assert found(kb, "hydrography") == {"notes.txt"}
    assert found(kb, "glaciology") == {"report.pdf"}


def test_refused_redirect_is_recorded_on_its_document(kb, site):
    site.article("/", "Home", "Welcome.", ["/metadata"])
    site.redirect("/metadata", "http://169.254.169.254/latest/meta-data/")
    source, job = crawl_job(kb, site, allowed_domains=["127.0.0.1", "169.254.169.254"])
    finished = run(job)
    refused = Document.objects.get(source=source, key="http://169.254.169.254/latest/meta-data/")
    assert refused.status == DocumentStatus.FAILED
    assert refused.error == "refused: 169.254.169.254 is a link-local address"
    assert (finished.status, finished.done, finished.failed) == (JobStatus.SUCCEEDED, 1, 1)
    assert job_state(finished)["crawl"]["refused"] == 1


def test_page_that_turns_into_a_refused_redirect_leaves_the_index(kb, site):
    small_site(site, articles=1)
    source, job = crawl_job(kb, site)
    run(job)
    site.redirect("/a0", "http://10.0.0.7/")
    run(source_sync(source=source.__class__.objects.get(pk=source.pk)))
    assert found(kb, "marker0x0") == set()


def test_loopback_site_is_refused_without_the_allowlist(kb, site, settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = []
    small_site(site)
    source, job = crawl_job(kb, site)
    finished = run(job)
    assert finished.status == JobStatus.FAILED and finished.failed == 1
    document = Document.objects.get(source=source)
    assert (document.key, document.error) == (site.url("/"), "refused: 127.0.0.1 is a loopback address")
    assert sum(site.hits.values()) == 0


def test_loopback_site_indexed_before_is_emptied_once_refused(kb, site, settings):
    small_site(site, articles=2)
    source, job = crawl_job(kb, site)
    run(job)
    settings.KB_CRAWLER_ALLOW_PRIVATE = []
    run(source_sync(source=source))
    assert found(kb, "marker1x0") == set() and found(kb, "welcome") == set()
    assert Document.objects.get(source=source).error == "refused: 127.0.0.1 is a loopback address"


def test_cancel_mid_crawl_stops_it(kb, site, settings):
    settings.KB_JOB_LEASE_SECONDS = 1
    site.article("/", "Home", "Many pages.", [f"/a{n}" for n in range(200)])
    for n in range(200):
        site.article(f"/a{n}", f"Article {n}", article_text(n), latency=0.05)
    _, job = crawl_job(kb, site, concurrency=2)

    def cancel_once_crawling():
        try:
            wait_until(lambda: site.statuses[200] >= 5, timeout=60, interval=0.02)
            job_cancel(job=IngestionJob.objects.get(pk=job.pk))
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_once_crawling)
    canceller.start()
    finished = run(job)
    canceller.join()
    requested = sum(site.hits.values())
    assert finished.status == JobStatus.CANCELED and "cancel" in finished.error
    assert requested < 60
    threading.Event().wait(0.3)
    assert sum(site.hits.values()) == requested  # the crawl process is gone, nothing fetches any more


def test_crawl_process_that_dies_leaves_the_job_to_a_retry(kb, site):
    site.article("/", "Home", "Many pages.", [f"/a{n}" for n in range(100)])
    for n in range(100):
        site.article(f"/a{n}", f"Article {n}", article_text(n), latency=0.05)
    _, job = crawl_job(kb, site, concurrency=2)

    def kill_the_crawl_process():
        wait_until(lambda: site.statuses[200] >= 5, timeout=60, interval=0.02)
        for child in multiprocessing.active_children():
            if child.name == "crawl":
                child.kill()

    killer = threading.Thread(target=kill_the_crawl_process)
    killer.start()
    finished = run(job)
    killer.join()
    assert finished.status == JobStatus.QUEUED
    assert finished.error == "the crawl process ended unexpectedly (exit code -9)"

