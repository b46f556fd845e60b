"""Periodic work for `manage.py rqcron ingestion/cron.py` (started by `make up`)."""

from django.conf import settings
from rq import cron

from ingestion.tasks import sweep_jobs

cron.register(sweep_jobs, queue_name="high", interval=settings.KB_SWEEP_INTERVAL, name="sweep-jobs")
