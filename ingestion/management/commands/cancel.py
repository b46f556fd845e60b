"""`manage.py cancel`: cancel an ingestion job."""

from django.core.management.base import BaseCommand, CommandError

from ingestion.models import IngestionJob
from ingestion.services import job_cancel


class Command(BaseCommand):
    help = "Cancel an ingestion job: a queued one never starts, a running one stops at its next batch."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)

    def handle(self, *args, **options):
        job = IngestionJob.objects.filter(pk=options["job_id"]).first()
        if job is None:
            raise CommandError(f"No job with id {options['job_id']}.")
        if job.is_finished:
            raise CommandError(f"Job {job.pk} already ended {job.status}.")
        job = job_cancel(job=job)
        state = "canceled" if job.status == "canceled" else "cancel requested; it stops at its next batch"
        self.stdout.write(self.style.SUCCESS(f"job {job.pk}: {state}"))
