"""Periodic jobs for `manage.py scheduler ingestion/cron.py` (started by `make up`), enqueued
for the workers. The job sweeper is not among them: the scheduler runs it in its own process."""

from django.conf import settings
from rq import cron

from ingestion.orphans import sweep_orphans
from ingestion.tasks import enqueue_due_syncs
from search.asking.tasks import purge_answers

#: Seconds between looks for url sources whose re-sync schedule is due.
SCHEDULE_INTERVAL = 60

# On the high queue: it only writes rows; the syncs it queues go to "low".
cron.register(enqueue_due_syncs, queue_name="high", interval=SCHEDULE_INTERVAL, name="enqueue-due-syncs")
cron.register(sweep_orphans, queue_name="low", cron=settings.KB_ORPHAN_SWEEP_CRON, name="sweep-orphans")
cron.register(purge_answers, queue_name="low", interval=settings.KB_ANSWER_PURGE_INTERVAL, name="purge-answers")
