"""`manage.py delete`: delete a knowledge base, a source or documents, as the API and dashboard do."""

from django.core.management.base import BaseCommand, CommandError

from ingestion.services import documents_delete, knowledge_base_delete, source_delete
from knowledge.models import Document, KnowledgeBase, Source


class Command(BaseCommand):
    help = (
        "Delete a knowledge base (--kb), one of its sources (--kb --source) or documents (--kb --document, "
        "repeatable). The rows go at once; the job printed removes their chunks and unshared stored files."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kb", required=True, help="The knowledge base's slug.")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--source", type=int, help="Delete this source of the knowledge base (its id).")
        what.add_argument("--document", type=int, action="append", help="Delete this document (its id).")
        parser.add_argument("--yes", action="store_true", help="Delete a whole knowledge base without asking.")

    def handle(self, *args, **options):
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base {options['kb']!r}.")
        if options["source"] is not None:
            source = Source.objects.filter(kb=kb, pk=options["source"]).first()
            if source is None:
                raise CommandError(f"Knowledge base {kb.slug!r} has no source {options['source']}.")
            job, what = source_delete(source=source), f"source {source.pk} ({source.name})"
        elif options["document"]:
            documents = list(Document.objects.filter(source__kb=kb, pk__in=options["document"]))
            missing = sorted(set(options["document"]) - {document.pk for document in documents})
            if missing:
                raise CommandError(f"Knowledge base {kb.slug!r} has no document {', '.join(map(str, missing))}.")
            job, what = documents_delete(kb=kb, documents=documents), f"{len(documents)} document(s)"
        else:
            if not options["yes"] and input(f"Delete knowledge base {kb.slug!r} and everything in it? [y/N] ") != "y":
                raise CommandError("Nothing deleted.")
            job, what = knowledge_base_delete(kb=kb), f"knowledge base {kb.slug}"
        self.stdout.write(self.style.SUCCESS(f"deleted {what}; job {job.pk} removes its chunks and files"))
