"""`manage.py load_demo`: the demo knowledge base (CISI abstracts) and its API key."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingestion.selectors import index_lost
from ingestion.services import collection_source
from knowledge.models import KnowledgeBase
from knowledge.services import api_key_create, knowledge_base_create
from search.evaluation import load_smart

DEMO_PARTS = 4


class Command(BaseCommand):
    help = "Create the demo knowledge base from the CISI collection (once) and a demo API key."

    def add_arguments(self, parser):
        parser.add_argument("--collection", type=Path, default=Path(settings.KB_DEMO_CISI_DIR))
        parser.add_argument("--key-file", type=Path, default=settings.VAR_DIR / "demo-api-key")

    def handle(self, *args, **options):
        directory: Path = options["collection"]
        if not (directory / "CISI.ALL").exists():
            raise CommandError(f"No CISI collection in {directory} (set KB_DEMO_CISI_DIR).")
        kb = KnowledgeBase.objects.filter(slug="demo").first() or knowledge_base_create(
            slug="demo", name="Demo: CISI abstracts", description="Library and information science abstracts (CISI)."
        )
        documents = load_smart(directory).documents
        lost = index_lost(kb=kb)
        # Several sources, so every worker takes a share of the demo at once.
        size = -(-len(documents) // DEMO_PARTS)
        jobs = [
            collection_source(kb=kb, name=f"CISI part {n + 1}", documents=documents[n * size : (n + 1) * size],
                              reindex=lost)[1]
            for n in range(DEMO_PARTS)
        ]
        queued = [job.pk for job in jobs if job is not None]
        if not queued:
            self.stdout.write("demo knowledge base is up to date")
        else:
            self.stdout.write(f"demo: ingesting {len(documents)} CISI records as jobs {queued} (jobs --kb demo)")
        key_file: Path = options["key_file"]
        if not key_file.exists():
            _, raw = api_key_create(name="demo", kb_slugs=["demo"], scopes=["search", "ask", "ingest"], rate="50/s")
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(raw + "\n")
            key_file.chmod(0o600)
        self.stdout.write(f"demo API key in {key_file}")
