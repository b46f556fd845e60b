"""`manage.py bench_ingest`: the ingestion pipeline on CISI against its references (bench.ingest)."""

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bench import ingest
from bench.measuring import percentile
from search.evaluation import load_smart


class Command(BaseCommand):
    help = "Benchmark ingestion on CISI: pipeline vs bare embedder, 1 vs 2 workers, upload accept latency."

    def add_arguments(self, parser):
        parser.add_argument("--collection", type=Path, default=Path(settings.KB_DEMO_CISI_DIR))
        parser.add_argument("--docs", type=int, default=1460, help="how many CISI records to use")
        parser.add_argument("--embedder", default="minilm")
        parser.add_argument("--uploads", type=int, default=200)
        parser.add_argument("--sources", type=int, default=8, help="jobs the documents are split into for workers")
        parser.add_argument("--skip-workers", action="store_true")

    def handle(self, *args, **options):
        if not (options["collection"] / "CISI.ALL").exists():
            raise CommandError(f"No CISI collection in {options['collection']}.")
        documents = load_smart(options["collection"]).documents[: options["docs"]]
        embedder = options["embedder"]
        rows = []
        try:
            bare = ingest.bench_bare_embedder(embedder, documents)
            rows.append(bare)
            self.report_row(bare, bare)
            inline = ingest.bench_inline_pipeline(embedder, documents)
            rows.append(inline)
            self.report_row(inline, bare)
            latencies = []
            if not options["skip_workers"]:
                one, _ = ingest.bench_workers(embedder, documents, 1, options["sources"])
                self.report_row(one, bare)
                two, _ = ingest.bench_workers(embedder, documents, 2, options["sources"])
                self.report_row(two, bare)
                self.stdout.write(
                    f"2 workers / 1 worker: {two.docs_per_second / one.docs_per_second:.2f}x on {self.cores()} cores"
                )
                # Uploads while both workers are busy with another copy of the documents.
                _, latencies = ingest.bench_workers(
                    embedder,
                    documents,
                    2,
                    options["sources"],
                    during=lambda kb: ingest.bench_upload_accept(kb, options["uploads"]),
                )
            if latencies:
                self.stdout.write(
                    f"upload accept (202) while 2 workers run, {len(latencies)} uploads: "
                    f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms"
                )
        finally:
            ingest.drop_bench_kbs()

    def report_row(self, row, reference) -> None:
        ratio = row.docs_per_second / reference.docs_per_second if reference.docs_per_second else 0
        self.stdout.write(
            f"{row.name:<28} {row.documents:>6} docs {row.seconds:8.2f} s {row.docs_per_second:8.1f} docs/s "
            f"{100 * ratio:6.1f}% of bare embedder  {row.note}"
        )

    @staticmethod
    def cores() -> int:
        return os.cpu_count() or 1
