"""`manage.py search KB QUERY`: the search API's answer (same validation, service and result cache), as text."""

import html
import re

from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from kbportal.errors import DomainError
from search.api import search_response, validated_search_input
from search.query import MAX_SIZE, MODES

MARK = re.compile(r"</?mark>")


def plain_text(snippet: str) -> str:
    """A snippet for a terminal: highlight tags removed, HTML entities decoded."""
    return html.unescape(MARK.sub("", snippet))


def field_errors(detail: dict) -> str:
    """Field errors on one line: "q: The query must not be empty.; size: ..."."""
    def messages(errors) -> list[str]:
        if isinstance(errors, dict):  # a list field's errors by item
            return [message for item in errors.values() for message in messages(item)]
        return [str(message) for message in errors]

    return "; ".join(f"{field}: {' '.join(messages(errors))}" for field, errors in detail.items())


class Command(BaseCommand):
    help = "Search a knowledge base through the query service the API uses and print the ranked hits."

    def add_arguments(self, parser):
        parser.add_argument("kb", help="Knowledge base slug (several: comma-separated).")
        parser.add_argument("query", help="Query text.")
        parser.add_argument("--mode", choices=MODES, default="hybrid")
        parser.add_argument("--size", type=int, default=10, help=f"Hits to show (1-{MAX_SIZE}).")
        parser.add_argument("--chunks", action="store_true", help="One line per chunk, not per document.")

    def handle(self, *args, **options):
        kb_slugs = [slug for slug in options["kb"].split(",") if slug]
        if not kb_slugs:
            raise CommandError("Name at least one knowledge base.")
        try:
            values = validated_search_input({
                "q": options["query"], "kb": kb_slugs, "mode": options["mode"], "size": options["size"],
                "chunks": options["chunks"],
            })
            result = search_response(values, api_key=None)
        except ValidationError as exc:
            raise CommandError(field_errors(exc.detail))
        except DomainError as exc:
            raise CommandError(field_errors(exc.fields) if exc.fields else exc.detail)
        flags = " (degraded: served from cache)" if result["degraded"] else ""
        self.stdout.write(
            f"{len(result['hits'])} of {result['total']} hits, {result['mode']}, "
            f"{result['took_ms']:.1f} ms, cache {result['cache']}{flags}"
        )
        for rank, hit in enumerate(result["hits"], start=1):
            self.stdout.write(self.style.SUCCESS(f"{rank:>3}. {hit['title'] or hit['url']}")
                              + f"  [document {hit['document_id']}, chunk {hit['position']}, score {hit['score']:.4f}]")
            self.stdout.write(f"     {plain_text(hit['snippet'])}")
