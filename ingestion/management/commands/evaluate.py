"""`manage.py evaluate`: retrieval quality of the search engine on a judged test collection."""

import json
import threading
import time
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test.utils import override_settings
from django.utils.text import slugify

from ingestion.management.commands.ingest import progress_line
from ingestion.models import IngestionJob
from ingestion.selectors import index_lost
from ingestion.services import collection_source, job_state
from ingestion.tasks import run_ingestion_job
from kbportal.claiming import JobStatus
from knowledge.models import KnowledgeBase
from knowledge.services import knowledge_base_create
from search.client import SearchUnavailable, get_client, reset_client
from search.evaluation import METRICS, Collection, load_beir, load_smart, run_evaluation
from search.index import alias_name
from search.query import MODES

LOADERS = {"smart": load_smart, "beir": load_beir}
SOURCE_NAME = "evaluation collection"


class Command(BaseCommand):
    help = "Ingest a judged test collection into its own knowledge base and report nDCG@10, MAP and recall@100."

    def add_arguments(self, parser):
        parser.add_argument("--collection", type=Path, required=True, help="directory of the collection")
        parser.add_argument("--format", required=True, help="smart (CISI files) or beir (corpus.jsonl, ...)")
        parser.add_argument("--mode", default="all", help=f"{', '.join(MODES)} or all (default)")
        parser.add_argument("--kb", help="knowledge base slug (default: eval-<directory name>)")
        parser.add_argument("--embedder", help="embedder of a new knowledge base (default: KB_EMBEDDER)")
        parser.add_argument("--json", action="store_true", help="end with one line of JSON: mode -> metrics")
        parser.add_argument(
            "--timeout", type=float, default=30.0,
            help="seconds to wait for each search-server call (default 30; the API's KB_ES_TIMEOUT is far shorter)",
        )

    def handle(self, *args, **options):
        directory: Path = options["collection"]
        if not directory.is_dir():
            raise CommandError(f"No collection directory at {directory}.")
        fmt = options["format"].lower()
        if fmt not in LOADERS:
            raise CommandError(f"Unknown format {options['format']!r}: use smart or beir.")
        mode = options["mode"]
        if mode != "all" and mode not in MODES:
            raise CommandError(f"Unknown mode {mode!r}: use {', '.join(MODES)} or all.")
        modes = list(MODES) if mode == "all" else [mode]

        collection = self.load(LOADERS[fmt], directory, fmt)
        default_slug = "eval-" + slugify(directory.resolve().name).replace("_", "-")
        kb = self.knowledge_base(options["kb"] or default_slug, options["embedder"])
        # A batch run may wait for a busy search server; API requests must not, hence their short timeout.
        with override_settings(KB_ES_TIMEOUT=options["timeout"]):
            reset_client()
            try:
                self.ingest(kb, collection)
                self.stdout.write(f"running {len(collection.judged_queries)} judged queries, modes: {', '.join(modes)}")
                results = run_evaluation(kb, collection, modes, progress=self.query_progress)
            except SearchUnavailable as exc:
                raise CommandError(f"The search server did not answer: {exc}")
            finally:
                reset_client()
        self.stdout.write("")
        self.print_table(results)
        if options["json"]:
            self.stdout.write(json.dumps({name: {m: scores[m] for m in METRICS} for name, scores in results.items()}))

    def load(self, loader, directory: Path, fmt: str) -> Collection:
        try:
            collection = loader(directory)
        except (FileNotFoundError, StopIteration, KeyError, ValueError) as exc:
            raise CommandError(f"{directory} is not a {fmt} collection: {type(exc).__name__}: {exc}")
        if not collection.documents or not collection.judged_queries:
            raise CommandError(f"{directory} holds no documents or no judged queries in {fmt} format.")
        return collection

    def knowledge_base(self, slug: str, embedder: str | None) -> KnowledgeBase:
        kb = KnowledgeBase.objects.filter(slug=slug).first()
        if kb is None:
            try:
                return knowledge_base_create(slug=slug, name=f"Evaluation: {slug}", embedder=embedder)
            except ValidationError as exc:
                raise CommandError(f"Cannot create knowledge base {slug!r}: {'; '.join(exc.messages)}")
        if embedder and kb.embedder != embedder:
            raise CommandError(
                f"Knowledge base {slug!r} embeds with {kb.embedder}, not {embedder}: pass another --kb."
            )
        return kb

    def ingest(self, kb: KnowledgeBase, collection: Collection) -> None:
        """Ingest through the real pipeline, in this process; an unchanged collection is reused as is."""
        _, job = collection_source(
            kb=kb, name=SOURCE_NAME, documents=collection.documents, reindex=index_lost(kb=kb)
        )
        if job is None:
            self.stdout.write(f"knowledge base {kb.slug} is up to date ({len(collection.documents)} documents)")
            return
        self.stdout.write(f"ingesting {len(collection.documents)} documents into {kb.slug} as job {job.pk}")
        stop = threading.Event()
        watcher = threading.Thread(target=self.watch, args=(job.pk, stop), daemon=True)
        watcher.start()
        try:
            # None when a running worker claimed the job first: then it is followed to its end.
            run_ingestion_job(job.pk)
            job = self.wait(job.pk)
        finally:
            stop.set()
            watcher.join()
        self.stdout.write("\n" + progress_line(job_state(job)))
        if job.status != JobStatus.SUCCEEDED:
            raise CommandError(f"ingestion job {job.pk} ended {job.status}: {job.error}")
        if job.failed:
            self.stderr.write(f"warning: {job.failed} document(s) failed to ingest and count as never found")
        get_client().indices.refresh(index=alias_name())

    def wait(self, pk: int) -> IngestionJob:
        while True:
            job = IngestionJob.objects.select_related("kb").get(pk=pk)
            if job.is_finished:
                return job
            time.sleep(0.5)

    def watch(self, pk: int, stop: threading.Event) -> None:
        """Print the job's progress line while it runs (its own thread, its own connection)."""
        shown = None
        try:
            while not stop.wait(1.0):
                job = IngestionJob.objects.select_related("kb").get(pk=pk)
                # A log gets a line when the job moved on, not one a second.
                if self.stdout.isatty() or (job.stage, job.done, job.failed, job.skipped) != shown:
                    shown = (job.stage, job.done, job.failed, job.skipped)
                    self.overwrite(progress_line(job_state(job)))
        finally:
            connection.close()

    def query_progress(self, mode: str, done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            self.overwrite(f"{mode:<8} {done}/{total} queries")

    def overwrite(self, line: str) -> None:
        # A terminal gets one line rewritten in place; a log gets one line per update.
        if self.stdout.isatty():
            self.stdout.write("\r" + line.ljust(100), ending="")
            self.stdout.flush()
        else:
            self.stdout.write(line)

    def print_table(self, results: dict) -> None:
        self.stdout.write(f"{'mode':<10}" + "".join(f"{metric:>12}" for metric in METRICS) + f"{'queries':>9}")
        for name, scores in results.items():
            self.stdout.write(
                f"{name:<10}" + "".join(f"{scores[metric]:>12.4f}" for metric in METRICS) + f"{scores['queries']:>9}"
            )
