"""`manage.py search_index`: create, inspect or rebuild the search index behind its alias."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from search.client import SearchError, SearchUnavailable
from search.index import DEFAULT_DIMS, ensure_index, index_status, rebuild_index


class Command(BaseCommand):
    help = "Create, inspect or rebuild the search index behind its alias (KB_ES_INDEX)."

    def add_arguments(self, parser):
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--create", action="store_true", help="Create the index and alias if missing.")
        action.add_argument("--status", action="store_true", help="Show alias, concrete index, chunk count, dims.")
        action.add_argument(
            "--rebuild", action="store_true", help="Copy all chunks into a new index and swap the alias."
        )
        parser.add_argument("--dims", type=int, help=f"Vector dimensions (default {DEFAULT_DIMS}, or the current).")

    def handle(self, *args, **options):
        dims = options["dims"]
        if dims is not None and not 1 <= dims <= 4096:
            raise CommandError("--dims must be between 1 and 4096.")
        try:
            if options["create"]:
                index = ensure_index(dims or DEFAULT_DIMS)
                self.stdout.write(self.style.SUCCESS(f"Index ready: {index}"))
            elif options["rebuild"]:
                result = rebuild_index(dims)
                self.stdout.write(self.style.SUCCESS(
                    f"Rebuilt {result['alias']}: {result['old_index']} -> {result['index']}, "
                    f"{result['copied']} chunks copied, dims {result['dims']}."
                ))
                if result["reembed_required"]:
                    self.stdout.write(self.style.WARNING(
                        "Dimensions changed: chunks were copied without vectors; re-embed every document."
                    ))
            status = index_status()
        except SearchUnavailable as error:
            raise CommandError(f"Search server at {settings.KB_ES_URL} unreachable or failing: {error}")
        except SearchError as error:
            raise CommandError(f"Search server refused the request: {error}")
        self.stdout.write(
            f"alias={status['alias']} index={status['index'] or '-'} docs={status['docs']} dims={status['dims'] or '-'}"
        )
