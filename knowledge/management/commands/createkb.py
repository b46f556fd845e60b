"""`manage.py createkb`: create a knowledge base."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from knowledge.models import Language
from knowledge.services import KB_SLUG_HELP, knowledge_base_create


class Command(BaseCommand):
    help = "Create a knowledge base."

    def add_arguments(self, parser):
        parser.add_argument("slug", help=KB_SLUG_HELP)
        parser.add_argument("--name", default="")
        parser.add_argument("--description", default="")
        parser.add_argument("--embedder", default=None, help="minilm (default setting), hashing or http")
        parser.add_argument("--language", default=Language.ENGLISH, choices=Language.values,
                            help="how keyword search splits and stems the text (default english)")
        parser.add_argument("--ocr-languages", default="",
                            help='Tesseract languages for scans and photos, e.g. eng+chi_sim (default: KB_OCR_LANGS)')

    def handle(self, *args, **options):
        try:
            kb = knowledge_base_create(
                slug=options["slug"],
                name=options["name"] or options["slug"],
                description=options["description"],
                embedder=options["embedder"],
                language=options["language"],
                ocr_languages=options["ocr_languages"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()))
        self.stdout.write(
            self.style.SUCCESS(
                f"created knowledge base {kb.slug} (embedder {kb.embedder}, {kb.dimensions} dims, {kb.language})"
            )
        )
