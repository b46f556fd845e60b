"""`manage.py sweep_orphans`: remove index chunks and stored files nothing refers to."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingestion.orphans import sweep_orphans
from knowledge.storage import StorageError
from search.client import SearchError


class Command(BaseCommand):
    help = (
        "Delete search-index chunks whose document is gone, refile chunks under their document's knowledge "
        "base, and delete stored files nothing references (older than KB_ORPHAN_GRACE_SECONDS)."
    )

    def handle(self, *args, **options):
        try:
            counts = sweep_orphans()
        except SearchError as error:
            raise CommandError(f"Search server at {settings.KB_ES_URL} failed: {error}")
        except StorageError as error:
            raise CommandError(f"Object store failed: {error}")
        self.stdout.write(
            f"{counts['documents_seen']} indexed document(s) checked: {counts['orphan_documents']} gone, "
            f"{counts['chunks_deleted']} chunk(s) deleted, {counts['chunks_refiled']} refiled; "
            f"{counts['files_deleted']} unreferenced file(s) deleted"
        )
