"""Writes that create ingestion work: sources, uploads, syncs, deletes, cancels.

Every function writes PostgreSQL rows in one transaction and enqueues the job's rq doorbell
in `transaction.on_commit`, so a worker is never told about a row it cannot see yet.
"""

from __future__ import annotations

from typing import IO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingestion.extraction import may_need_ocr
from ingestion.models import IngestionJob, JobKind
from ingestion.uploads import check_uploads, safe_filename
from kbportal.claiming import JobStatus, Priority, enqueue_on_commit, request_cancel
from kbportal.errors import DomainError
from kbportal.progress import group_name, send_to_groups
from knowledge.models import Document, DocumentStatus, KnowledgeBase, Source, SourceKind
from knowledge.services import source_create
from knowledge.storage import StorageError, get_object_store

ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


def job_create(
    *,
    kb: KnowledgeBase | None,
    kind: str = JobKind.SYNC,
    source: Source | None = None,
    priority: str = Priority.HIGH,
    payload: dict | None = None,
) -> IngestionJob:
    """Write a job row and enqueue it after commit.

    A source never has two sync jobs at once: asking again while one is queued or running
    returns that job (the source row lock makes concurrent asks agree).
    """
    payload = dict(payload or {})
    if source is not None and kind == JobKind.SYNC and source_may_need_ocr(source=source):
        payload["ocr"] = True
    with transaction.atomic():
        if source is not None and kind == JobKind.SYNC:
            Source.objects.select_for_update().filter(pk=source.pk).first()
            active = IngestionJob.objects.filter(source=source, kind=JobKind.SYNC, status__in=ACTIVE_STATUSES).first()
            if active is not None:
                return active
        job = IngestionJob.objects.create(
            kb=kb,
            kind=kind,
            source=source,
            priority=priority,
            payload=payload,
            max_attempts=settings.KB_JOB_MAX_ATTEMPTS,
        )
        enqueue_on_commit(job)
        return job


def source_may_need_ocr(*, source: Source) -> bool:
    """Whether a sync of this source may OCR: a file source holding images or PDFs (a PDF's pages
    without a text layer are OCR'd). Such syncs go to the `ocr` queue."""
    if source.kind != SourceKind.FILE:
        return False
    return any(may_need_ocr(entry.get("content_type", ""), entry.get("filename", ""))
               for entry in source.config.get("files", []))


def source_add(
    *, kb: KnowledgeBase, kind: str, name: str, config: dict, priority: str = Priority.HIGH
) -> tuple[Source, IngestionJob]:
    """Register a source and queue its first sync."""
    with transaction.atomic():
        source = source_create(kb=kb, kind=kind, name=name, config=config)
        job = job_create(kb=kb, source=source, priority=priority)
    return source, job


def source_sync(*, source: Source, priority: str = Priority.HIGH, reindex: bool = False) -> IngestionJob:
    """Queue a sync. `reindex`: index unchanged documents too (after the search index lost them)."""
    return job_create(kb=source.kb, source=source, priority=priority, payload={"reindex": True} if reindex else None)


def store_upload(*, data: IO[bytes] | bytes, filename: str, content_type: str) -> dict:
    """Store uploaded bytes (content-addressed) and describe them as a file-source entry."""
    raw = data if isinstance(data, bytes) else data.read()
    object_key = get_object_store().put(raw, content_type)
    return {"object_key": object_key, "filename": filename, "content_type": content_type, "size": len(raw)}


def upload_add(
    *, kb: KnowledgeBase, files: list[dict], name: str = "", priority: str = Priority.HIGH
) -> tuple[Source, IngestionJob]:
    """A file source over already stored files (see `store_upload`), with its sync queued."""
    name = name or (files[0]["filename"] if len(files) == 1 else f"{len(files)} files")
    return source_add(kb=kb, kind=SourceKind.FILE, name=name, config={"files": files}, priority=priority)


class ObjectStoreDown(DomainError):
    """The object store cannot take an upload's bytes now: nothing was accepted; retry shortly."""

    status_code = 503
    code = "service_unavailable"


def uploads_add(*, kb: KnowledgeBase, uploads: list, name: str = "") -> tuple[Source, IngestionJob]:
    """A file source over uploaded files (Django's uploaded files), stored first, with its sync queued.

    All or nothing: `UploadRefused` when any file cannot be accepted (`ingestion.uploads`), and
    `ObjectStoreDown` when their bytes cannot be stored, since nothing is accepted without them.
    """
    check_uploads(uploads)
    try:
        files = [
            store_upload(data=upload, filename=safe_filename(upload.name), content_type=upload.content_type or "")
            for upload in uploads
        ]
    except StorageError as exc:
        raise ObjectStoreDown(f"The object store is unavailable; try again shortly. ({exc})", retry_after=5) from exc
    return upload_add(kb=kb, files=files, name=name)


def job_cancel(*, job: IngestionJob) -> IngestionJob:
    job = request_cancel(IngestionJob, job.pk)
    if job.status == JobStatus.CANCELED:
        send_to_groups(job_groups(job), job_state(job))
    return job


def job_retry(*, job: IngestionJob) -> IngestionJob:
    """Run a finished job's work again as a new job."""
    return job_create(kb=job.kb, kind=job.kind, source=job.source, priority=Priority.HIGH, payload=job.payload)


# Deleting: the rows go at once, in the caller's transaction; a job then removes the chunks from the
# index and the stored bytes nothing references any more. The rows are locked first (FOR UPDATE):
# a sync indexing a batch holds its source and documents locked until its chunks are written
# (`ingestion.pipeline.lock_for_indexing`), so the delete waits for that batch, and every later
# batch finds its rows gone and writes nothing. The job's chunk delete thus sees every chunk.


def _object_keys(documents, sources) -> list[str]:
    keys = {document.object_key for document in documents}
    keys |= {entry["object_key"] for source in sources for entry in (source.config or {}).get("files", [])}
    return sorted(filter(None, keys))


def _cancel_active_jobs(jobs) -> None:
    for job in jobs.filter(status__in=ACTIVE_STATUSES).exclude(kind__startswith="delete"):
        request_cancel(IngestionJob, job.pk)


def documents_delete(*, kb: KnowledgeBase, documents: list[Document]) -> IngestionJob:
    """Delete documents (rows now, their chunks and unshared bytes by a job)."""
    with transaction.atomic():
        locked = list(Document.objects.select_for_update().filter(pk__in=[doc.pk for doc in documents], source__kb=kb))
        Document.objects.filter(pk__in=[doc.pk for doc in locked]).delete()
        payload = {"document_ids": [doc.pk for doc in locked], "object_keys": _object_keys(locked, [])}
        return job_create(kb=kb, kind=JobKind.DELETE_DOCUMENTS, payload=payload)


def source_delete(*, source: Source) -> IngestionJob:
    """Delete a source with its documents (rows now, chunks and unshared bytes by a job); its
    running sync stops at its next batch."""
    with transaction.atomic():
        source = Source.objects.select_for_update().select_related("kb").get(pk=source.pk)
        _cancel_active_jobs(IngestionJob.objects.filter(source=source))
        payload = {
            "source_id": source.pk,
            "source_name": source.name,
            "object_keys": _object_keys(source.documents.only("object_key"), [source]),
        }
        source.delete()
        return job_create(kb=source.kb, kind=JobKind.DELETE_SOURCE, payload=payload)


def knowledge_base_delete(*, kb: KnowledgeBase) -> IngestionJob:
    """Delete a knowledge base with everything in it (rows now, chunks and unshared bytes by a job).

    Its slug is free at once: the index files chunks under the knowledge base's id, which a new
    knowledge base never gets, so a new one with the same slug cannot see the old one's chunks.
    Its jobs stay as history (without their knowledge base).
    """
    with transaction.atomic():
        sources = list(Source.objects.select_for_update().filter(kb=kb))
        kb = KnowledgeBase.objects.select_for_update().get(pk=kb.pk)
        _cancel_active_jobs(IngestionJob.objects.filter(kb=kb))
        history = list(IngestionJob.objects.filter(kb=kb).only("pk", "payload"))
        for job in history:  # they lose their knowledge base: keep its name
            job.payload = {**(job.payload or {}), "kb_slug": kb.slug}
        IngestionJob.objects.bulk_update(history, ["payload"], batch_size=500)
        payload = {
            "kb_id": kb.pk,
            "kb_slug": kb.slug,
            "object_keys": _object_keys(Document.objects.filter(source__kb=kb).only("object_key"), sources),
        }
        kb.delete()
        return job_create(kb=None, kind=JobKind.DELETE_KNOWLEDGE_BASE, payload=payload)


def job_groups(job: IngestionJob) -> list[str]:
    """The WebSocket groups that hear about this job: its own and its knowledge base's."""
    return [group_name("job", job.pk), group_name("kb", job.kb_slug)]


def job_state(job: IngestionJob) -> dict:
    """The job's numbers as sent to WebSocket subscribers and returned by the API."""
    processed = job.done + job.failed + job.skipped
    elapsed = None
    if job.started_at:
        end = job.finished_at or timezone.now()
        elapsed = max((end - job.started_at).total_seconds(), 0.001)
    rate = processed / elapsed if elapsed and processed else 0.0
    remaining = max(job.total - processed, 0)
    eta = remaining / rate if rate and not job.is_finished else None
    return {
        "type": "job",
        "id": job.pk,
        "kb": job.kb_slug or None,
        "source": job.source_id,
        "kind": job.kind,
        "status": job.status,
        "stage": job.stage,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "skipped": job.skipped,
        "percent": round(100 * processed / job.total, 1) if job.total else (100.0 if job.is_finished else 0.0),
        "rate": round(rate, 2),
        "eta_seconds": round(eta, 1) if eta is not None else None,
        "attempts": job.attempts,
        "error": job.error,
        # One line each: why it failed or was canceled; the previous attempt's error while retrying.
        "reason": job.reason,
        "retry_reason": job.retry_reason,
        "recent_errors": job.recent_errors[-10:],
        # Page counters of a url source's sync (ingestion.crawl_sync), else None.
        "crawl": (job.payload or {}).get("crawl"),
        # The document being OCR'd and its pages done, else None (ingestion.pipeline).
        "ocr": (job.payload or {}).get("ocr_progress"),
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def collection_source(
    *, kb: KnowledgeBase, name: str, documents: list, reindex: bool = False
) -> tuple[Source, IngestionJob | None]:
    """A file source holding a test collection, one Markdown file per record.

    Reused when unchanged: the same files give the same content addresses, so an existing
    source with the same config gets no new job at all, unless `reindex` asks for its documents
    to be indexed again.
    """
    files = [
        store_upload(
            data=f"# {doc.title}\n\n{doc.text}".encode(), filename=f"{doc.key}.md", content_type="text/markdown"
        )
        for doc in documents
    ]
    existing = Source.objects.filter(kb=kb, name=name, kind=SourceKind.FILE).first()
    if existing is None:
        return upload_add(kb=kb, files=files, name=name, priority=Priority.DEFAULT)
    if existing.config == {"files": files} and not existing.documents.exclude(status=DocumentStatus.INDEXED).exists():
        return existing, (source_sync(source=existing, priority=Priority.DEFAULT, reindex=True) if reindex else None)
    existing.config = {"files": files}
    existing.save(update_fields=["config", "updated_at"])
    return existing, source_sync(source=existing, priority=Priority.DEFAULT)
