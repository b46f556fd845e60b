import html
import re

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import APIException

from search.query import MAX_SIZE, MODES
from search.services import search_knowledge

MARK = re.compile(r"</?mark>")


def plain_text(snippet: str) -> str:
    """A snippet for a terminal: highlight tags removed, HTML entities decoded."""
    return html.unescape(MARK.sub("", snippet))


class Command(BaseCommand):
    help = "Search a knowledge base through the query service the API uses and print the ranked hits."

    def add_arguments(self, parser):
        parser.add_argument("kb", help="Knowledge base slug (several: comma-separated).")
        parser.add_argument("query", help="Query text.")
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--size", type=int, default=10, help=f"Hits to show (1-{MAX_SIZE}).")
        parser.add_argument("--chunks", action="store_true", help="One line per chunk, not per document.")

    def handle(self, *args, **options):
        try:
            result = search_knowledge(
                kb_slugs=[slug for slug in options["kb"].split(",") if slug],
                query=options["query"],
                mode=options["mode"],
                size=options["size"],
                collapse=not options["chunks"],
            )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
                               if hasattr(exc, "error_dict") else " ".join(exc.messages))
        except APIException as exc:
            raise CommandError(str(exc.detail))
        flags = " (degraded: served from cache)" if result["degraded"] else ""
        self.stdout.write(
            f"{len(result['hits'])} of {result['total']} hits, {result['mode']}, "
            f"{result['took_ms']:.1f} ms, cache {result['cache']}{flags}"
        )
        for rank, hit in enumerate(result["hits"], start=1):
            self.stdout.write(self.style.SUCCESS(f"{rank:>3}. {hit['title'] or hit['url']}")
                              + f"  [document {hit['document_id']}, chunk {hit['position']}, score {hit['score']:.4f}]")
            self.stdout.write(f"     {plain_text(hit['snippet'])}")
