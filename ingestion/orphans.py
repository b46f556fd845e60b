"""The orphan sweep: search-index chunks and stored files that PostgreSQL no longer refers to.

Deleting a document, a source or a knowledge base removes its chunks and files by itself
(`ingestion.services`); the sweep catches what such a delete left when it was interrupted for
good, what was deleted outside the application (SQL, a shell) and what an older index holds:

- chunks whose document no longer exists are deleted;
- chunks filed under another knowledge base than their document's are filed under its id (an
  index written when chunks were filed by slug, which a new knowledge base could reuse);
- stored files that no document and no file source references are deleted once older than
  KB_ORPHAN_GRACE_SECONDS (an upload stores its files a moment before its source row exists).

`manage.py sweep_orphans` runs it now; the scheduler at KB_ORPHAN_SWEEP_CRON (hourly).
"""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from knowledge.models import Document, Source, SourceKind
from knowledge.storage import get_object_store
from search.indexer import chunk_owners, delete_document_chunks, rekey_document_chunks

BATCH = 1000


def sweep_orphans() -> dict[str, int]:
    """Sweep the index, then the object store; the counts of what was done."""
    return {**sweep_orphan_chunks(), "files_deleted": sweep_orphan_files()}


def sweep_orphan_chunks() -> dict[str, int]:
    counts = {"documents_seen": 0, "orphan_documents": 0, "chunks_deleted": 0, "chunks_refiled": 0}
    batch: list[tuple[str, str]] = []
    for owner in chunk_owners(page_size=BATCH):
        batch.append(owner)
        if len(batch) >= BATCH:
            _settle_chunks(batch, counts)
            batch = []
    _settle_chunks(batch, counts)
    return counts


def _settle_chunks(owners: list[tuple[str, str]], counts: dict[str, int]) -> None:
    """Delete the chunks of the documents that are gone; refile those under the wrong knowledge base."""
    if not owners:
        return
    ids = {int(document) for document, _ in owners if document.isdigit()}
    kb_of = {str(pk): str(kb_id) for pk, kb_id in
             Document.objects.filter(pk__in=ids).values_list("pk", "source__kb_id")}
    gone = sorted({document for document, _ in owners if document not in kb_of})
    misfiled = {document: kb_of[document] for document, kb in owners if document in kb_of and kb != kb_of[document]}
    counts["documents_seen"] += len({document for document, _ in owners})
    counts["orphan_documents"] += len(gone)
    counts["chunks_deleted"] += delete_document_chunks(gone)
    counts["chunks_refiled"] += rekey_document_chunks(misfiled)


def sweep_orphan_files() -> int:
    """Delete stored files nothing references and older than the grace period; return how many."""
    store = get_object_store()
    cutoff = timezone.now() - timedelta(seconds=settings.KB_ORPHAN_GRACE_SECONDS)
    in_sources = {
        entry["object_key"]
        for config in Source.objects.filter(kind=SourceKind.FILE).values_list("config", flat=True).iterator()
        for entry in (config or {}).get("files", [])
    }
    deleted = 0
    candidates: list[str] = []
    for key, written in store.stored():
        if written < cutoff and key not in in_sources:
            candidates.append(key)
        if len(candidates) >= BATCH:
            deleted += _delete_unreferenced(store, candidates)
            candidates = []
    return deleted + _delete_unreferenced(store, candidates)


def _delete_unreferenced(store, keys: list[str]) -> int:
    used = set(Document.objects.filter(object_key__in=keys).values_list("object_key", flat=True))
    unused = [key for key in keys if key not in used]
    for key in unused:
        store.delete(key)
    return len(unused)
