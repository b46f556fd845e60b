"""`manage.py addsource`: add a source to a knowledge base and queue its first sync."""

import mimetypes
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ingestion.services import source_add, store_upload, upload_add
from ingestion.uploads import LocalFile, UploadRefused, check_uploads
from knowledge.models import KnowledgeBase


class Command(BaseCommand):
    help = "Add a text, file or URL source to a knowledge base and queue its first sync; prints the source id."

    def add_arguments(self, parser):
        parser.add_argument("kb", help="knowledge base slug")
        kind = parser.add_mutually_exclusive_group(required=True)
        kind.add_argument("--text")
        kind.add_argument("--file", type=Path)
        kind.add_argument("--url")
        parser.add_argument("--name", default="")

    def handle(self, *args, **options):
        kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
        if kb is None:
            raise CommandError(f"No knowledge base {options['kb']!r}; create it with `manage.py createkb`.")
        try:
            if options["file"] is not None:
                path: Path = options["file"]
                if not path.is_file():
                    raise CommandError(f"No such file: {path}")
                content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                data = path.read_bytes()
                try:
                    check_uploads([LocalFile(path.name, content_type, len(data))])
                except UploadRefused as refused:
                    raise CommandError(str(refused)) from refused
                entry = store_upload(data=data, filename=path.name, content_type=content_type)
                source, job = upload_add(kb=kb, files=[entry], name=options["name"])
            elif options["url"] is not None:
                name = options["name"] or options["url"]
                source, job = source_add(kb=kb, kind="url", name=name, config={"start_urls": [options["url"]]})
            else:
                source, job = source_add(
                    kb=kb, kind="text", name=options["name"] or "text", config={"text": options["text"]}
                )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {v}" for k, v in exc.message_dict.items()))
        self.stdout.write(str(source.pk))
        self.stderr.write(f"source {source.pk} added; sync job {job.pk} queued")
