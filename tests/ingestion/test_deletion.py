"""Deleting content leaves nothing findable: a source deleted mid-sync with real workers, a knowledge
base deleted and its slug reused, every entry point (API, dashboard, CLI, admin), the orphan sweep."""

import os
import time
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from bench.processes import wait_until
from ingestion.models import IngestionJob, JobKind
from ingestion.orphans import sweep_orphans
from ingestion.services import knowledge_base_delete, source_add, source_delete, store_upload
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import FINISHED_STATUSES, JobStatus
from knowledge.models import Document, KnowledgeBase, Source
from knowledge.services import api_key_create, knowledge_base_create
from knowledge.storage import get_object_store
from search.client import get_client
from search.indexer import bulk_upsert
from tests.search.chunk_index import chunk, temporary_alias, vector
from tests.support import start_worker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

MODES = ("keyword", "semantic", "hybrid")


def indexed(**term) -> int:
    client = get_client()
    client.indices.refresh(index=settings.KB_ES_INDEX)
    ((field, value),) = term.items()
    return client.count(index=settings.KB_ES_INDEX, query={"term": {field: str(value)}})["count"]


def searcher(kb_slug: str) -> APIClient:
    _, raw = api_key_create(name="reader", kb_slugs=[kb_slug], scopes=["search"], rate="1000/s")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def hits(client: APIClient, kb_slug: str, query: str) -> dict[str, list[str]]:
    """Titles found for `query` in each mode."""
    found = {}
    for mode in MODES:
        response = client.get("/api/v1/search", {"q": query, "kb": kb_slug, "mode": mode})
        assert response.status_code == 200, response.content[:300]
        found[mode] = [hit["title"] for hit in response.json()["hits"]]
    return found


def finished(*job_ids: int) -> bool:
    return IngestionJob.objects.filter(pk__in=job_ids, status__in=FINISHED_STATUSES).count() == len(job_ids)


def many_files(kb, marker: str, count: int):
    files = [
        store_upload(data=f"{marker} page {n}: the {marker} lighthouse keeper log {n}.".encode(),
                     filename=f"{marker}-{n}.txt", content_type="text/plain")
        for n in range(count)
    ]
    return source_add(kb=kb, kind="file", name=f"{marker} files", config={"files": files})


@pytest.mark.parametrize("delete_after_batches", [0, 1, 3])
def test_a_source_deleted_while_its_sync_runs_leaves_no_chunk_behind(kb, delete_after_batches):
    """Two real workers: one indexes 40 one-document batches slowly, the other runs the delete as
    soon as it is asked, while the sync may be writing a batch."""
    source, sync = many_files(kb, "zephyrine", 40)
    workers = [start_worker("high", KB_EMBED_BATCH="1", KB_TEST_EMBED_DELAY="0.05") for _ in range(2)]
    try:
        wait_until(lambda: IngestionJob.objects.get(pk=sync.pk).status == JobStatus.RUNNING, timeout=60,
                   message="the sync to start")
        if delete_after_batches:
            wait_until(lambda: IngestionJob.objects.get(pk=sync.pk).done >= delete_after_batches, timeout=60,
                       message=f"{delete_after_batches} batches to be indexed")
        assert not finished(sync.pk)
        delete = source_delete(source=source)
        wait_until(lambda: finished(sync.pk, delete.pk), timeout=90, message="the sync and the delete to end")
    finally:
        for worker in workers:
            stop_worker(worker)
    sync.refresh_from_db()
    delete.refresh_from_db()
    assert delete.status == JobStatus.SUCCEEDED, delete.error
    assert sync.status == JobStatus.CANCELED and "deleted" in sync.error
    assert not Source.objects.filter(pk=source.pk).exists()
    assert not Document.objects.filter(source_id=source.pk).exists()
    assert indexed(source=source.pk) == 0
    time.sleep(1)  # a late write would land within the indexing thread's bulk timeout
    assert indexed(source=source.pk) == 0
    assert hits(searcher(kb.slug), kb.slug, "zephyrine lighthouse") == {mode: [] for mode in MODES}


def test_a_deleted_knowledge_base_stays_invisible_to_a_new_one_with_its_slug(search_index):
    old = knowledge_base_create(slug="tenant-reused", name="Old tenant", embedder="hashing")
    _, sync = source_add(kb=old, kind="text", name="secret",
                         config={"text": "The quarterly merger plan of Old tenant."})
    run_ingestion_job(sync.pk)
    reader = searcher(old.slug)
    assert hits(reader, old.slug, "quarterly merger plan")["keyword"] == ["secret"]  # and now cached

    delete = knowledge_base_delete(kb=old)
    assert not KnowledgeBase.objects.filter(pk=old.pk).exists()
    assert IngestionJob.objects.get(pk=sync.pk).kb_id is None  # history stays, without its knowledge base
    new = knowledge_base_create(slug="tenant-reused", name="New tenant", embedder="hashing")
    # The old chunks are still in the index until the job runs: filed under the old id, not the slug.
    assert indexed(kb=old.pk) > 0
    new_reader = searcher(new.slug)
    assert hits(new_reader, new.slug, "quarterly merger plan") == {mode: [] for mode in MODES}

    run_ingestion_job(delete.pk)
    delete.refresh_from_db()
    assert delete.status == JobStatus.SUCCEEDED, delete.error
    assert delete.payload["chunks_deleted"] > 0
    assert indexed(kb=old.pk) == 0
    assert hits(new_reader, new.slug, "quarterly merger plan") == {mode: [] for mode in MODES}
    assert reader.get("/api/v1/search", {"q": "merger", "kb": "tenant-reused"}).status_code == 403


def test_deleting_a_knowledge_base_stops_its_running_sync(kb):
    source, sync = many_files(kb, "quillonite", 30)
    workers = [start_worker("high", KB_EMBED_BATCH="1", KB_TEST_EMBED_DELAY="0.05") for _ in range(2)]
    try:
        wait_until(lambda: IngestionJob.objects.get(pk=sync.pk).done >= 2, timeout=60, message="two batches")
        delete = knowledge_base_delete(kb=kb)
        wait_until(lambda: finished(sync.pk, delete.pk), timeout=90, message="the sync and the delete to end")
    finally:
        for worker in workers:
            stop_worker(worker)
    assert IngestionJob.objects.get(pk=sync.pk).status == JobStatus.CANCELED
    assert IngestionJob.objects.get(pk=delete.pk).status == JobStatus.SUCCEEDED
    assert indexed(kb=kb.pk) == 0
    assert indexed(source=source.pk) == 0


def test_the_api_deletes_a_knowledge_base_through_a_job_for_staff_only(kb):
    _, raw = api_key_create(name="owner", kb_slugs=[kb.slug], scopes=["ingest"], rate="100/s")
    key_client = APIClient()
    key_client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    refused = key_client.delete(f"/api/v1/kbs/{kb.slug}/")
    assert refused.status_code == 403 and "Only staff" in refused.json()["detail"]
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("ops", password="pw", is_staff=True))
    response = client.delete(f"/api/v1/kbs/{kb.slug}/")
    assert response.status_code == 202
    assert response.json()["job"]["kind"] == JobKind.DELETE_KNOWLEDGE_BASE
    assert response.json()["job"]["kb"] == kb.slug
    assert client.get(f"/api/v1/kbs/{kb.slug}/").status_code == 404


def test_the_dashboard_asks_before_deleting_a_knowledge_base(kb, client):
    staff = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(staff)
    source_add(kb=kb, kind="text", name="notes", config={"text": "some notes"})
    page = client.get(f"/dashboard/kbs/{kb.slug}/delete/")
    assert page.status_code == 200
    assert "1 source and 0 documents" in page.content.decode()
    assert KnowledgeBase.objects.filter(pk=kb.pk).exists()
    response = client.post(f"/dashboard/kbs/{kb.slug}/delete/")
    job = IngestionJob.objects.get(kind=JobKind.DELETE_KNOWLEDGE_BASE, payload__kb_id=kb.pk)
    assert response.status_code == 302 and response.url == f"/dashboard/jobs/{job.pk}/"
    assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()
    assert f"{kb.slug} (deleted)" in client.get(response.url).content.decode()


def test_the_delete_command_deletes_a_source_and_refuses_unknown_ones(kb):
    source, _ = source_add(kb=kb, kind="text", name="notes", config={"text": "some notes"})
    out = StringIO()
    call_command("delete", "--kb", kb.slug, "--source", str(source.pk), stdout=out)
    assert "deleted source" in out.getvalue() and not Source.objects.filter(pk=source.pk).exists()
    with pytest.raises(Exception, match="has no source"):
        call_command("delete", "--kb", kb.slug, "--source", str(source.pk))
    with pytest.raises(Exception, match="No knowledge base 'nope'"):
        call_command("delete", "--kb", "nope", "--yes")
    call_command("delete", "--kb", kb.slug, "--yes", stdout=out)
    assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()


def test_admin_deletes_go_through_jobs(kb, client):
    admin_user = get_user_model().objects.create_superuser("root", password="pw")
    client.force_login(admin_user)
    source, sync = source_add(kb=kb, kind="text", name="notes", config={"text": "admin notes"})
    run_ingestion_job(sync.pk)
    response = client.post(f"/admin/knowledge/source/{source.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Source.objects.filter(pk=source.pk).exists()
    job = IngestionJob.objects.get(kind=JobKind.DELETE_SOURCE, payload__source_id=source.pk)
    run_ingestion_job(job.pk)
    assert indexed(source=source.pk) == 0
    client.post("/admin/knowledge/knowledgebase/", {"action": "delete_selected", "_selected_action": [kb.pk],
                                                     "post": "yes"})
    assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()
    assert IngestionJob.objects.filter(kind=JobKind.DELETE_KNOWLEDGE_BASE, payload__kb_id=kb.pk).exists()


@pytest.fixture
def own_index_and_store(settings, tmp_path):
    """An index alias and an object store of this test's own: the sweep looks at everything in them."""
    settings.KB_STORAGE_DIR = tmp_path
    get_object_store.cache_clear()
    with temporary_alias("sweep"):
        yield
    get_object_store.cache_clear()


def test_the_orphan_sweep_removes_what_no_row_refers_to_and_refiles_misfiled_chunks(kb, settings,
                                                                                    own_index_and_store):
    _, sync = source_add(kb=kb, kind="text", name="kept", config={"text": "kept text about herons"})
    run_ingestion_job(sync.pk)
    kept = Document.objects.get(source__kb=kb)
    # Chunks of a document that does not exist, and the kept document's chunk filed under its slug.
    bulk_upsert([chunk(987654321, kb=str(kb.pk), embedding=vector(1.0, dims=384)),
                 chunk(kept.pk, 1, kb=kb.slug, source=kept.source_id, embedding=vector(1.0, dims=384))],
                refresh=True)
    store = get_object_store()
    stray = store.put(b"bytes nothing refers to", "text/plain")
    fresh = store.put(b"bytes an upload is about to refer to", "text/plain")
    old = time.time() - 2 * settings.KB_ORPHAN_GRACE_SECONDS
    os.utime(store.root / stray, (old, old))

    counts = sweep_orphans()

    assert counts["orphan_documents"] == 1 and counts["chunks_deleted"] == 1
    assert counts["chunks_refiled"] == 1
    assert indexed(document=987654321) == 0
    assert indexed(kb=kb.slug) == 0 and indexed(document=kept.pk) == 2
    assert counts["files_deleted"] == 1
    assert not store.exists(stray) and store.exists(fresh) and store.exists(kept.object_key)
    assert sweep_orphans() == {"documents_seen": 1, "orphan_documents": 0, "chunks_deleted": 0, "chunks_refiled": 0,
                               "files_deleted": 0}
