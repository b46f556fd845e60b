"""`manage.py scheduler`: runs the periodic jobs of a cron file."""

from django.core.management.base import BaseCommand

from kbportal.worker import CronScheduler


class Command(BaseCommand):
    help = "Run the periodic jobs of a cron file (e.g. ingestion/cron.py) like rqcron, riding out Redis outages."

    def add_arguments(self, parser):
        parser.add_argument("config_path", help="cron configuration file or module, e.g. ingestion/cron.py")

    def handle(self, *args, **options):
        scheduler = CronScheduler()
        scheduler.load_config_from_file(options["config_path"])
        scheduler.start()
