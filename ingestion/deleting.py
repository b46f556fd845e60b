"""The delete job runners: documents, a source or a knowledge base.

Their rows are gone already (`ingestion.services`); the job deletes what follows them: their
chunks in the search index, then the stored bytes no other document shares.
"""

from __future__ import annotations

from ingestion.models import JobKind, Stage
from ingestion.runners import TRANSIENT, IngestionJobRunner
from kbportal.claiming import TransientError
from knowledge.services import remove_unreferenced_objects
from search.indexer import delete_document_chunks, delete_kb_chunks, delete_source_chunks


class DeleteRunner(IngestionJobRunner):
    """Deletes the chunks (`delete_chunks()`), then the unshared bytes listed in the payload."""

    def run(self) -> None:
        keys = self.job.payload.get("object_keys", [])
        self.job.total = self.item_count()
        self.set_stage(Stage.CLEANUP)
        try:
            chunks = self.delete_chunks()
            if self.job.kb_id:
                self.job.kb.bump_generation()
            self.job.payload["chunks_deleted"] = chunks
            self.job.payload["objects_deleted"] = remove_unreferenced_objects(keys=set(keys))
        except TRANSIENT as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}")
        self.job.done = self.job.total

    def item_count(self) -> int:
        """How many things the job deletes (its progress total): one source or knowledge base."""
        return 1

    def delete_chunks(self) -> int:  # pragma: no cover - abstract
        """Delete the chunks of what was deleted; returns how many."""
        raise NotImplementedError


class DeleteDocumentsRunner(DeleteRunner):
    kind = JobKind.DELETE_DOCUMENTS

    def item_count(self) -> int:
        return len(self.job.payload.get("document_ids", []))

    def delete_chunks(self) -> int:
        return delete_document_chunks(self.job.payload.get("document_ids", []), refresh=True)


class DeleteSourceRunner(DeleteRunner):
    kind = JobKind.DELETE_SOURCE

    def delete_chunks(self) -> int:
        return delete_source_chunks(self.job.payload["source_id"], refresh=True)


class DeleteKnowledgeBaseRunner(DeleteRunner):
    kind = JobKind.DELETE_KNOWLEDGE_BASE

    def delete_chunks(self) -> int:
        return delete_kb_chunks(self.job.payload["kb_id"], refresh=True)
