"""`manage.py jobs`: list ingestion jobs with their progress and failure reasons."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ingestion.models import JobKind
from ingestion.selectors import job_list
from kbportal.claiming import JobStatus


class Command(BaseCommand):
    help = "List ingestion jobs, newest first, with when each finished (or was created) and why it failed."

    def add_arguments(self, parser):
        parser.add_argument("--kb", help="knowledge base slug")
        parser.add_argument("--status", choices=JobStatus.values)
        parser.add_argument("--kind", choices=JobKind.values)
        parser.add_argument("--limit", type=int, default=50)

    def handle(self, *args, **options):
        try:
            jobs = job_list(filters={name: options[name] for name in ("kb", "status", "kind")})
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages))
        header = ("id", "kb", "kind", "status", "stage", "done", "skip", "fail", "total", "when", "error")
        self.stdout.write("{:>6} {:<12} {:<21} {:<10} {:<8} {:>6} {:>6} {:>6} {:>6} {:<19} {}".format(*header))
        for job in jobs[: options["limit"]]:
            when = timezone.localtime(job.finished_or_created_at).strftime("%Y-%m-%d %H:%M:%S")
            line = (
                f"{job.pk:>6} {job.kb_slug or '(deleted)':<12} {job.kind:<21} {job.status:<10} {job.stage:<8} "
                f"{job.done:>6} {job.skipped:>6} {job.failed:>6} {job.total:>6} {when:<19} {job.reason_line}"
            ).rstrip()
            self.stdout.write(self.style.ERROR(line) if job.status == JobStatus.FAILED else line)
