"""The ingestion pipeline: fetch → store → extract → chunk → embed → index → clean up.

Documents flow through in batches: chunks of several documents are embedded together (the
embedder is far faster on a full batch) and bulk-indexed with deterministic ids. A batch
boundary is where the job renews its view of the world: lease lost or cancel requested stop
it there, progress is saved and published there. Unchanged content (same sha256 as the indexed
document) stops after fetch and is counted as skipped, so a re-sync embeds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ingestion.chunking import chunk_text
from ingestion.extraction import ExtractionError, extract
from ingestion.models import IngestionJob, JobKind, Stage
from ingestion.services import job_state
from kbportal.claiming import JobRunner, JobStatus, TransientError
from kbportal.progress import ProgressThrottle
from knowledge.models import Document, DocumentStatus, Source, SourceKind
from knowledge.storage import ObjectNotFound, StorageError, get_object_store, sha256_hex
from search.client import SearchUnavailable
from search.embedders import EmbeddingUnavailable, get_embedder
from search.indexer import bulk_upsert, chunk_id, delete_document_chunks, delete_source_chunks, delete_stale_chunks

logger = logging.getLogger(__name__)

TRANSIENT = (StorageError, SearchUnavailable, EmbeddingUnavailable)


@dataclass
class RawItem:
    """One document's raw bytes as fetched from its source."""

    key: str
    data: bytes
    content_type: str
    title: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class PreparedDocument:
    document: Document
    previous_chunk_count: int
    chunks: list[dict]


def source_items(source: Source) -> Iterator[RawItem]:
    """Fetch stage for text and file sources (url sources are crawled, see `crawl_items`)."""
    if source.kind == SourceKind.TEXT:
        yield RawItem(key="text", data=source.config["text"].encode(), content_type="text/plain", title=source.name)
    elif source.kind == SourceKind.FILE:
        store = get_object_store()
        for entry in source.config["files"]:
            try:
                data = store.get(entry["object_key"])
            except ObjectNotFound:
                data = b""  # extraction fails this document with a clear reason
            yield RawItem(key=entry["filename"], data=data, content_type=entry["content_type"], title="")


def source_item_count(source: Source) -> int:
    if source.kind == SourceKind.FILE:
        return len(source.config["files"])
    return 1


class IngestionRunner(JobRunner):
    model = IngestionJob
    job: IngestionJob

    def __init__(self, job, keeper):
        super().__init__(job, keeper)
        self.progress = ProgressThrottle([f"job-{job.pk}", f"kb-{job.kb.slug}"])
        self.pending: list[PreparedDocument] = []
        self.pending_chunks = 0
        self.batch_size = settings.KB_EMBED_BATCH

    # -- lifecycle -----------------------------------------------------------------------
    def run(self) -> None:
        job = self.job
        if job.kind == JobKind.SYNC:
            self.run_sync()
        elif job.kind == JobKind.DELETE_DOCUMENTS:
            self.run_delete_documents(job.payload.get("document_ids", []))
        elif job.kind == JobKind.DELETE_SOURCE:
            self.run_delete_source(job.payload["source_id"])

    def outcome(self) -> tuple[str, str]:
        job = self.job
        if job.kind == JobKind.SYNC and job.failed and not job.done and not job.skipped:
            return JobStatus.FAILED, f"all {job.failed} document(s) failed; first: {job.recent_errors[:1]}"
        return JobStatus.SUCCEEDED, ""

    def final_fields(self) -> dict:
        job = self.job
        return {
            "stage": Stage.DONE,
            "total": job.total,
            "done": job.done,
            "failed": job.failed,
            "skipped": job.skipped,
            "recent_errors": job.recent_errors[-20:],
        }

    def on_finish(self, status: str) -> None:
        job = IngestionJob.objects.select_related("kb").get(pk=self.job.pk)
        if job.kind == JobKind.SYNC and job.source_id and job.is_finished:
            outcome = f"{job.status}: {job.done} indexed, {job.skipped} unchanged, {job.failed} failed"
            Source.objects.filter(pk=job.source_id).update(last_synced_at=timezone.now(), last_sync_outcome=outcome)
        self.progress.publish(job_state(job), final=True)

    # -- progress ------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        self.job.stage = stage
        self.save_progress()

    def save_progress(self) -> None:
        job = self.job
        IngestionJob.objects.filter(pk=job.pk, lease_owner=job.lease_owner).update(
            stage=job.stage,
            total=job.total,
            done=job.done,
            failed=job.failed,
            skipped=job.skipped,
            recent_errors=job.recent_errors[-20:],
            updated_at=timezone.now(),
        )
        self.progress.publish(job_state(job))

    def record_failure(self, document: Document | None, key: str, reason: str) -> None:
        self.job.failed += 1
        self.job.recent_errors = [*self.job.recent_errors[-19:], {"document": key, "error": reason[:500]}]
        if document is not None:
            Document.objects.filter(pk=document.pk).update(
                status=DocumentStatus.FAILED, error=reason[:2000], updated_at=timezone.now()
            )

    # -- sync ----------------------------------------------------------------------------
    def run_sync(self) -> None:
        source = Source.objects.select_related("kb").get(pk=self.job.source_id)
        if not source.enabled:
            self.job.error = "source is disabled"
            return
        embedder = get_embedder(source.kb.embedder)
        self.job.total = source_item_count(source)
        self.set_stage(Stage.FETCH)
        self.check()
        try:
            for item in source_items(source):
                self.take(source, item, embedder)
            self.flush(embedder)
        except TRANSIENT as exc:
            self.save_progress()
            raise TransientError(f"{type(exc).__name__}: {exc}")

    def take(self, source: Source, item: RawItem, embedder) -> None:
        """Prepare one fetched document, flushing a batch when enough chunks are waiting."""
        prepared = self.prepare(source, item)
        if prepared is not None:
            self.pending.append(prepared)
            self.pending_chunks += len(prepared.chunks)
        if self.pending_chunks >= self.batch_size:
            self.flush(embedder)
        elif prepared is None:
            self.save_progress()

    def prepare(self, source: Source, item: RawItem) -> PreparedDocument | None:
        sha = sha256_hex(item.data)
        document, _ = Document.objects.get_or_create(source=source, key=item.key[:2000])
        if document.sha256 == sha and document.status == DocumentStatus.INDEXED:
            self.job.skipped += 1
            return None
        if not item.data:
            self.record_failure(document, item.key, "empty document: no bytes to index")
            return None
        object_key = get_object_store().put(item.data, item.content_type)
        try:
            extracted = extract(item.data, item.content_type, item.key)
        except ExtractionError as exc:
            Document.objects.filter(pk=document.pk).update(sha256=sha, object_key=object_key, size=len(item.data))
            self.record_failure(document, item.key, str(exc))
            return None
        title = (item.title or extracted.title or item.key)[:500]
        chunks = chunk_text(extracted.text, title)
        if not chunks:
            self.record_failure(document, item.key, "no text left after extraction")
            return None
        previous_chunk_count = document.chunk_count
        document.title = title
        document.sha256 = sha
        document.object_key = object_key
        document.size = len(item.data)
        document.content_type = extracted.content_type or item.content_type
        document.metadata = {**document.metadata, **item.metadata}
        now = timezone.now().isoformat()
        bodies = [
            {
                "_id": chunk_id(document.pk, chunk.position),
                "kb": source.kb.slug,
                "source": str(source.pk),
                "document": str(document.pk),
                "tags": item.metadata.get("tags", []),
                "title": title,
                "url": item.key,
                "content": chunk.text,
                "position": chunk.position,
                "created": now,
            }
            for chunk in chunks
        ]
        return PreparedDocument(document, previous_chunk_count, bodies)

    def flush(self, embedder) -> None:
        """Embed, index and mark one batch of documents; then check lease and cancel."""
        if not self.pending:
            self.save_progress()
            self.check()
            return
        batch, self.pending, self.pending_chunks = self.pending, [], 0
        bodies = [body for prepared in batch for body in prepared.chunks]
        self.set_stage(Stage.EMBED)
        vectors = embedder.embed([f"{body['title']}\n{body['content']}" for body in bodies])
        for body, vector in zip(bodies, vectors, strict=True):
            body["embedding"] = vector
        self.job.stage = Stage.INDEX
        bulk_upsert(bodies)
        for prepared in batch:
            if prepared.previous_chunk_count > len(prepared.chunks):
                delete_stale_chunks(prepared.document.pk, len(prepared.chunks))
        now = timezone.now()
        with transaction.atomic():
            for prepared in batch:
                doc = prepared.document
                doc.status = DocumentStatus.INDEXED
                doc.chunk_count = len(prepared.chunks)
                doc.error = ""
                doc.indexed_at = now
                doc.save()
        self.job.done += len(batch)
        self.job.kb.bump_generation()
        self.job.stage = Stage.FETCH
        self.save_progress()
        self.check()

    # -- deletes -------------------------------------------------------------------------
    def run_delete_documents(self, document_ids: list[int]) -> None:
        self.job.total = len(document_ids)
        self.set_stage(Stage.CLEANUP)
        documents = list(Document.objects.filter(pk__in=document_ids))
        try:
            delete_document_chunks([doc.pk for doc in documents])
            self.job.kb.bump_generation()
            remove_unreferenced_objects({doc.object_key for doc in documents}, exclude_documents=document_ids)
        except TRANSIENT as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}")
        Document.objects.filter(pk__in=document_ids).delete()
        self.job.done = len(documents)

    def run_delete_source(self, source_id: int) -> None:
        source = Source.objects.filter(pk=source_id).first()
        self.set_stage(Stage.CLEANUP)
        if source is None:
            return
        documents = list(source.documents.all())
        self.job.total = len(documents)
        keys = {doc.object_key for doc in documents} | {entry["object_key"] for entry in source.config.get("files", [])}
        try:
            delete_source_chunks(source.pk)
            self.job.kb.bump_generation()
            remove_unreferenced_objects(keys, exclude_documents=[doc.pk for doc in documents], exclude_source=source.pk)
        except TRANSIENT as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}")
        self.job.done = len(documents)
        source.delete()


def remove_unreferenced_objects(
    keys: set[str], *, exclude_documents: list[int], exclude_source: int | None = None
) -> int:
    """Delete stored bytes that no other document or file source still references."""
    store = get_object_store()
    removed = 0
    for key in filter(None, keys):
        in_documents = Document.objects.filter(object_key=key).exclude(pk__in=exclude_documents).exists()
        in_sources = (
            Source.objects.filter(kind=SourceKind.FILE, config__files__contains=[{"object_key": key}])
            .exclude(pk=exclude_source)
            .exists()
        )
        if not in_documents and not in_sources:
            try:
                store.delete(key)
                removed += 1
            except ObjectNotFound:
                pass
    return removed
