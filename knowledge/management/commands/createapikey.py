"""`manage.py createapikey`: create an API key and print it once."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from knowledge.models import Scope
from knowledge.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for one or more knowledge bases and print it once."

    def add_arguments(self, parser):
        parser.add_argument("--kb", action="append", required=True, metavar="SLUG", help="Knowledge base (repeatable).")
        parser.add_argument("--scopes", default="search", help=f"Comma-separated, among {', '.join(Scope.values)}.")
        parser.add_argument("--rate", default=None, help="Such as 50/s or 600/m (default: KB_DEFAULT_KEY_RATE).")
        parser.add_argument("--name", default="", help="A label for the key (default: derived from the KBs).")

    def handle(self, *args, **options):
        scopes = [scope.strip() for scope in options["scopes"].split(",") if scope.strip()]
        name = options["name"] or f"cli:{','.join(options['kb'])}"
        try:
            key, full_key = api_key_create(name=name, kb_slugs=options["kb"], scopes=scopes, rate=options["rate"])
        except ValidationError as exc:
            options_by_field = {"kb_slugs": "--kb", "scopes": "--scopes", "rate": "--rate", "name": "--name"}
            messages = [
                f"{options_by_field.get(field, field)}: {' '.join(errors)}"
                for field, errors in exc.message_dict.items()
            ]
            raise CommandError("; ".join(messages))
        scopes_text = ", ".join(key.scopes)
        self.stdout.write(self.style.SUCCESS(f"Created API key {key.prefix} ({key.name}); scopes: {scopes_text}."))
        self.stdout.write("Store it now, it is not shown again:")
        self.stdout.write(full_key)
