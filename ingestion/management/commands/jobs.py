from django.core.management.base import BaseCommand

from ingestion.models import IngestionJob


class Command(BaseCommand):
    help = "List ingestion jobs, newest first."

    def add_arguments(self, parser):
        parser.add_argument("--kb", help="knowledge base slug")
        parser.add_argument("--status", help="queued, running, succeeded, failed or canceled")
        parser.add_argument("--limit", type=int, default=50)

    def handle(self, *args, **options):
        jobs = IngestionJob.objects.select_related("kb")
        if options["kb"]:
            jobs = jobs.filter(kb__slug=options["kb"])
        if options["status"]:
            jobs = jobs.filter(status=options["status"])
        header = ("id", "kb", "kind", "status", "stage", "done", "skip", "fail", "total")
        self.stdout.write("{:>6} {:<12} {:<16} {:<10} {:<8} {:>6} {:>6} {:>6} {:>6}".format(*header))
        for job in jobs[: options["limit"]]:
            self.stdout.write(
                f"{job.pk:>6} {job.kb.slug:<12} {job.kind:<16} {job.status:<10} {job.stage:<8} "
                f"{job.done:>6} {job.skipped:>6} {job.failed:>6} {job.total:>6}"
            )
