"""rq queue statistics: what each queue holds and which workers listen to it (GET /api/v1/queues)."""

from __future__ import annotations

from typing import Any

import django_rq
from django.conf import settings
from rq import Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry


def queue_stats() -> list[dict[str, Any]]:
    """Per configured queue: queued, started, finished, failed and scheduled counts, and its workers.

    Finished and failed count what rq still keeps (result_ttl / failure_ttl), not all history:
    PostgreSQL holds the history of every job.
    """
    stats = []
    for name in settings.RQ_QUEUES:
        queue = django_rq.get_queue(name)
        workers = Worker.all(queue=queue)
        stats.append(
            {
                "name": name,
                "queued": queue.count,
                "started": StartedJobRegistry(queue=queue).count,
                "finished": FinishedJobRegistry(queue=queue).count,
                "failed": FailedJobRegistry(queue=queue).count,
                "scheduled": ScheduledJobRegistry(queue=queue).count,
                "workers": [
                    {"name": worker.name, "state": worker.get_state(), "pid": worker.pid,
                     "current_job": worker.get_current_job_id()}
                    for worker in sorted(workers, key=lambda w: w.name)
                ],
            }
        )
    return stats
