"""`manage.py ingest`: queue a sync of a source, optionally following it or running it inline."""

import time

from django.core.management.base import BaseCommand, CommandError

from ingestion.models import IngestionJob
from ingestion.services import job_state, source_sync
from ingestion.tasks import run_ingestion_job
from knowledge.models import Source


def progress_line(state: dict) -> str:
    width = 30
    filled = int(width * state["percent"] / 100)
    eta = f" eta {state['eta_seconds']:.0f}s" if state["eta_seconds"] else ""
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {state['percent']:5.1f}% {state['status']:<9} {state['stage']:<8} "
        f"done {state['done']} skipped {state['skipped']} failed {state['failed']} / {state['total']}"
        f" {state['rate']:.1f}/s{eta}"
    )


class Command(BaseCommand):
    help = "Queue a sync of a source; --wait follows it to the end, --inline runs it in this process."

    def add_arguments(self, parser):
        parser.add_argument("source_id", type=int)
        parser.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
        parser.add_argument("--inline", action="store_true", help="run the job here instead of in a worker")
        parser.add_argument("--reindex", action="store_true",
                            help="index unchanged documents too (after the search index lost them)")

    def handle(self, *args, **options):
        source = Source.objects.filter(pk=options["source_id"]).first()
        if source is None:
            raise CommandError(f"No source with id {options['source_id']}.")
        job = source_sync(source=source, reindex=options["reindex"])
        self.stdout.write(f"job {job.pk} queued")
        if options["inline"]:
            run_ingestion_job(job.pk)
        if options["wait"] or options["inline"]:
            job = self.follow(job)
            if job.status != "succeeded":
                raise CommandError(f"job {job.pk} ended {job.status}: {job.error}")

    def follow(self, job: IngestionJob) -> IngestionJob:
        while True:
            job = IngestionJob.objects.select_related("kb").get(pk=job.pk)
            line = progress_line(job_state(job))
            self.stdout.write("\r" + line, ending="")
            self.stdout.flush()
            if job.is_finished:
                self.stdout.write("")
                return job
            time.sleep(0.5)
