"""`manage.py scheduler`: runs the periodic jobs of a cron file, and the job sweeper."""

from django.conf import settings
from django.core.management.base import BaseCommand

from ingestion.tasks import sweep_jobs
from kbportal.worker import CronScheduler, Every


class Command(BaseCommand):
    help = (
        "Run the periodic jobs of a cron file (e.g. ingestion/cron.py) like rqcron, riding out Redis outages, "
        "and sweep the jobs every KB_SWEEP_INTERVAL seconds in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("config_path", help="cron configuration file or module, e.g. ingestion/cron.py")

    def handle(self, *args, **options):
        scheduler = CronScheduler()
        scheduler.load_config_from_file(options["config_path"])
        sweeper = Every(sweep_jobs, seconds=settings.KB_SWEEP_INTERVAL, name="job sweeper")
        sweeper.start()
        try:
            scheduler.start()
        finally:
            sweeper.stop()
