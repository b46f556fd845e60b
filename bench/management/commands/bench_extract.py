"""`manage.py bench_extract`: pages per second by document kind, and OCR's share of a sync (bench.extract)."""

from django.core.management.base import BaseCommand

from bench import extract
from bench.ingest import drop_bench_kbs


class Command(BaseCommand):
    help = "Benchmark extraction: pages/s by kind (text PDF, Word, PowerPoint, Excel, OCR'd scans) and OCR's share."

    def add_arguments(self, parser):
        parser.add_argument("--pages", type=int, default=50, help="pages of each text-based document")
        parser.add_argument("--scans", type=int, default=3, help="scanned pages to OCR")
        parser.add_argument("--texts", type=int, default=50, help="text files in the sync of the OCR-share run")
        parser.add_argument("--rounds", type=int, default=3)

    def handle(self, *args, **options):
        rows = extract.bench_kinds(pages=options["pages"], scans=options["scans"], rounds=options["rounds"])
        self.stdout.write(f"{'kind':<34} {'pages':>6} {'median s':>9} {'pages/s':>9}")
        for row in rows:
            self.stdout.write(f"{row.kind:<34} {row.pages:>6} {row.seconds:9.3f} {row.pages_per_second:9.1f}")
        try:
            plain, with_scans = extract.bench_ocr_share(
                texts=options["texts"], scans=options["scans"], rounds=options["rounds"]
            )
        finally:
            drop_bench_kbs()
        share = (with_scans - plain) / with_scans if with_scans else 0.0
        self.stdout.write(
            f"inline sync of {options['texts']} text files: {plain:.2f} s; with {options['scans']} scanned pages "
            f"added: {with_scans:.2f} s; OCR's share of the worker's time: {100 * share:.0f}%"
        )
