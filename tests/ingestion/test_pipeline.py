"""The pipeline run in-process (`ingest --inline` path): skips, updates, deletes, cancel."""

import threading

import django_rq
import pytest
from django.conf import settings
from django.db import connection, transaction

from bench.processes import wait_until
from ingestion.deleting import DeleteDocumentsRunner, DeleteSourceRunner
from ingestion.models import IngestionJob
from ingestion.pipeline import SyncRunner, lock_for_indexing
from ingestion.services import documents_delete, job_cancel, source_add, source_delete, source_sync, store_upload
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus
from knowledge.models import Document, Source
from knowledge.storage import get_object_store
from search.client import get_client
from search.indexer import delete_source_chunks
from tests.support import embedded_texts

pytestmark = pytest.mark.django_db(transaction=True)

LONG = "\n\n".join(f"Paragraph {n} talks about topic {n} in enough words to fill a chunk. " * 12 for n in range(8))


def run(job) -> IngestionJob:
    run_ingestion_job(job.pk)
    return IngestionJob.objects.get(pk=job.pk)


def chunks_of(document_id: int) -> int:
    client = get_client()
    client.indices.refresh(index=settings.KB_ES_INDEX)
    return client.count(index=settings.KB_ES_INDEX, query={"term": {"document": str(document_id)}})["count"]


def file_source(kb, contents: dict[str, bytes]):
    files = [store_upload(data=data, filename=name, content_type="text/plain") for name, data in contents.items()]
    return source_add(kb=kb, kind="file", name="files", config={"files": files})


def test_reingest_of_unchanged_content_embeds_nothing(kb):
    source, job = file_source(kb, {"a.txt": b"alpha text", "b.txt": b"beta text", "c.txt": LONG.encode()})
    assert run(job).done == 3
    embedded_before = len(embedded_texts())
    again = run(source_sync(source=source))
    assert (again.status, again.skipped, again.done) == (JobStatus.SUCCEEDED, 3, 0)
    assert len(embedded_texts()) == embedded_before


def test_a_reindex_sync_indexes_unchanged_documents_the_index_lost(kb):
    source, job = file_source(kb, {"a.txt": b"alpha text", "b.txt": b"beta text"})
    run(job)
    documents = list(source.documents.values_list("pk", flat=True))
    delete_source_chunks(source.pk, refresh=True)  # a search node that lost its data
    assert run(source_sync(source=source)).skipped == 2 and sum(map(chunks_of, documents)) == 0
    again = run(source_sync(source=source, reindex=True))
    assert (again.status, again.skipped, again.done) == (JobStatus.SUCCEEDED, 0, 2)
    assert all(chunks_of(pk) == 1 for pk in documents)


def test_changed_document_alone_is_reembedded_and_its_stale_chunks_vanish(kb):
    source, job = file_source(kb, {"a.txt": b"alpha text", "long.txt": LONG.encode()})
    run(job)
    long_doc = Document.objects.get(source=source, key="long.txt")
    assert long_doc.chunk_count > 1 and chunks_of(long_doc.pk) == long_doc.chunk_count
    files = source.config["files"]
    files[1] = store_upload(data=b"now a short text", filename="long.txt", content_type="text/plain")
    source.config = {"files": files}
    source.save()
    before = len(embedded_texts())
    again = run(source_sync(source=source))
    assert (again.done, again.skipped) == (1, 1)
    (reembedded,) = embedded_texts()[before:]
    assert reembedded.endswith("now a short text")
    long_doc.refresh_from_db()
    assert long_doc.chunk_count == 1
    assert chunks_of(long_doc.pk) == 1


def test_deleting_a_document_removes_its_chunks_and_unshared_bytes(kb):
    source, job = file_source(kb, {"a.txt": b"alpha only here", "b.txt": b"beta"})
    run(job)
    doc = Document.objects.get(source=source, key="a.txt")
    # the bytes are still referenced by the file source config; drop that reference first
    source.config = {"files": [f for f in source.config["files"] if f["filename"] == "b.txt"]}
    source.save()
    delete_job = documents_delete(kb=kb, documents=[doc])
    assert not Document.objects.filter(pk=doc.pk).exists()
    assert chunks_of(doc.pk) > 0  # until the job runs
    assert run(delete_job).status == JobStatus.SUCCEEDED
    assert chunks_of(doc.pk) == 0
    assert not get_object_store().exists(doc.object_key)


def test_deleting_a_source_removes_everything_it_indexed(kb):
    source, job = file_source(kb, {"a.txt": b"alpha", "b.txt": b"beta"})
    run(job)
    doc_ids = list(source.documents.values_list("pk", flat=True))
    assert run(source_delete(source=source)).status == JobStatus.SUCCEEDED
    assert all(chunks_of(pk) == 0 for pk in doc_ids)
    assert not Document.objects.filter(pk__in=doc_ids).exists()


def test_a_runner_never_claims_a_job_of_another_kind(kb):
    source, job = file_source(kb, {"a.txt": b"alpha"})
    run(job)
    delete_job = source_delete(source=source)
    assert SyncRunner.execute(delete_job.pk) is None
    assert DeleteDocumentsRunner.execute(delete_job.pk) is None
    assert IngestionJob.objects.get(pk=delete_job.pk).status == JobStatus.QUEUED
    assert DeleteSourceRunner.execute(delete_job.pk) == JobStatus.SUCCEEDED


def test_bytes_shared_with_another_document_survive_a_delete(kb):
    _, job_a = file_source(kb, {"same.txt": b"identical bytes"})
    source_b, job_b = file_source(kb, {"copy.txt": b"identical bytes"})
    run(job_a)
    run(job_b)
    run(source_delete(source=source_b))
    assert get_object_store().exists(Document.objects.get(key="same.txt").object_key)


def test_cancel_of_a_running_job_stops_it_at_a_batch_boundary(kb, settings, monkeypatch):
    settings.KB_EMBED_BATCH = 1
    settings.KB_JOB_LEASE_SECONDS = 1
    monkeypatch.setenv("KB_TEST_EMBED_DELAY", "0.2")
    _, job = file_source(kb, {f"f{n}.txt": f"document number {n}".encode() for n in range(40)})

    def cancel_once_started():
        try:
            wait_until(lambda: IngestionJob.objects.get(pk=job.pk).done >= 2, timeout=60, interval=0.05)
            job_cancel(job=IngestionJob.objects.get(pk=job.pk))
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_once_started)
    canceller.start()
    finished = run(job)
    canceller.join()
    assert finished.status == JobStatus.CANCELED
    assert 2 <= finished.done < 40
    assert "cancel" in finished.error


def test_search_server_outage_retries_with_backoff_then_succeeds(kb, settings):
    from django.utils import timezone
    from rq.registry import ScheduledJobRegistry

    from search.client import reset_client
    from search.indexer import forget_ensured

    _, job = file_source(kb, {"a.txt": b"retry me"})
    good_url = settings.KB_ES_URL
    settings.KB_ES_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    reset_client()
    forget_ensured()
    try:
        retried = run(job)
    finally:
        settings.KB_ES_URL = good_url
        reset_client()
    assert (retried.status, retried.attempts) == (JobStatus.QUEUED, 1)
    assert "SearchUnavailable" in retried.error
    assert retried.not_before > timezone.now()
    scheduled = ScheduledJobRegistry(queue=django_rq.get_queue(retried.queue_name))
    assert retried.rq_job_id in scheduled.get_job_ids()
    IngestionJob.objects.filter(pk=job.pk).update(not_before=None)
    finished = run(job)
    assert (finished.status, finished.attempts, finished.done) == (JobStatus.SUCCEEDED, 2, 1)


def test_indexing_locks_of_two_sources_of_one_knowledge_base_do_not_wait_for_each_other(kb):
    """Each batch holds its source and documents locked while it writes; syncs of other sources of
    the same knowledge base must not queue behind it (their locks share no row)."""
    sources = [
        Source.objects.create(kb=kb, kind="text", name=f"s{n}", config={"text": "x"}) for n in range(2)
    ]
    documents = [Document.objects.create(source=source, key=f"k{n}") for n, source in enumerate(sources)]
    holding, release = threading.Event(), threading.Event()

    def hold_first_batch():
        try:
            with transaction.atomic():
                lock_for_indexing(source_id=sources[0].pk, document_ids=[documents[0].pk])
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_first_batch)
    holder.start()
    try:
        assert holding.wait(10)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '2s'")  # waiting on the other batch's lock errors out
            locked = lock_for_indexing(source_id=sources[1].pk, document_ids=[documents[1].pk])
        assert locked == {documents[1].pk}
    finally:
        release.set()
        holder.join()
