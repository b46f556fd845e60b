"""`manage.py sweep_jobs`: re-enqueue lost queued jobs and expired running ones."""

from django.core.management.base import BaseCommand

from ingestion.tasks import sweep_jobs


class Command(BaseCommand):
    help = "Re-enqueue queued jobs missing from Redis and running jobs whose lease expired."

    def handle(self, *args, **options):
        counts = sweep_jobs()
        self.stdout.write(f"requeued {counts['requeued']} queued job(s), {counts['expired']} expired lease(s)")
