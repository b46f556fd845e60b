"""The rq worker class `make up` runs: one process that keeps its embedding model.

rq's default Worker forks a work horse per job, so a model loaded inside a job would be loaded
again for every job. This worker runs jobs in its own process (rq's SimpleWorker) and calls the
KB_PRELOAD hooks once at start-up, so the model is loaded once per worker process.

Graceful shutdown: rq's warm shutdown (first SIGTERM or SIGINT) lets the current job run to its
end, which for a long ingestion can be far longer than any stop deadline. This worker also
raises the process-wide stop flag (`kbportal.claiming.request_worker_stop`): the running job
stops at its next batch boundary (the batch in flight is indexed and counted), `JobRunner`
releases the row, which is queued again at once for another worker, and rq then exits because
its warm shutdown was requested. A second signal is rq's cold shutdown (immediate exit; the
job is still released on the way out).

Redis outages: rq ends its work loop on a Redis error met anywhere but in its wait for a job;
`Worker.work` waits for Redis and starts the loop again, as a supervisor would restart it.

`CronScheduler` is the scheduler `manage.py scheduler` runs: rq's cron scheduler, which would
exit on the first Redis error, made to wait for Redis and go on (see its docstring). `Every` runs
a function beside it, in the scheduler's own process, for periodic work that must not wait in a
queue for a free worker.
"""

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from django.conf import settings
from django.db import close_old_connections
from django.utils.module_loading import import_string
from django_rq.cron import DjangoCronScheduler
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import StopRequested
from rq.worker import SimpleWorker

from kbportal.claiming import request_worker_stop, worker_stop_requested

logger = logging.getLogger(__name__)


def run_preload_hooks() -> None:
    """Call the KB_PRELOAD hooks once per process (web and worker start-up), then freeze the heap.

    Django, DRF and the embedding model (torch, transformers) leave about half a million objects
    that live as long as the process. Python's full collection walks all of them: about 300 ms
    during which a web process answers nothing, every thousand or so requests under load (seen as
    a p99 of 300-400 ms for cached searches). `gc.freeze()` moves what start-up made out of the
    collector's sight, so a full collection only walks what requests made since.
    """
    for path in settings.KB_PRELOAD:
        try:
            import_string(path)()
        except Exception:
            logger.exception("preload %s failed; it will load on first use", path)
    gc.freeze()


class Worker(SimpleWorker):
    #: rq doubles its wait between Redis reconnection attempts up to 60 s, so after an outage of
    #: half a minute a worker could sit idle for a minute with Redis back. At most 5 s here.
    max_connection_wait_time = 5.0

    #: Seconds between attempts while Redis does not answer, before rq's loop starts again.
    retry_seconds = 2.0

    def work(self, *args, burst: bool = False, **kwargs):
        """rq's work loop, started again when a Redis error (not a stop request) ended it.

        rq quits its loop on any Redis error outside its wait for a job: one that ends a job's
        bookkeeping, a heartbeat, a timeout. A Redis restart would then leave this process
        running but working no more, so the loop waits for Redis and goes on instead, as a
        supervisor would restart it. Burst runs and runs bounded by job count or idle time end
        as rq ends them.
        """
        if settings.KB_WORKER_NICE:
            # Background work yields the CPU to the web processes: accepting an upload must
            # not wait behind an embedding batch on a small machine.
            os.nice(settings.KB_WORKER_NICE)
        run_preload_hooks()
        bounded = burst or kwargs.get("max_jobs") is not None or kwargs.get("max_idle_time") is not None
        while True:
            try:
                worked = super().work(*args, burst=burst, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as exc:  # from rq's teardown
                logger.warning("worker %s: Redis failed while stopping (%s)", self.name, exc)
                worked = False
            if bounded or worker_stop_requested():  # a signal (see handle_warm_shutdown_request)
                return worked
            logger.warning("worker %s: rq's loop ended on an error; starting it again once Redis answers", self.name)
            try:
                self.wait_for_redis()
            except StopRequested:  # SIGTERM/SIGINT while waiting (rq's handler is still installed)
                return worked

    def wait_for_redis(self) -> None:
        """Wait until Redis answers, then clear what the interrupted loop left registered."""
        while True:
            try:
                self.connection.ping()
                break
            except (RedisConnectionError, RedisTimeoutError):
                time.sleep(self.retry_seconds)
        with suppress(RedisConnectionError, RedisTimeoutError):
            self.unsubscribe()
        # Our own registration, left without its death mark when Redis went away mid-teardown;
        # rq refuses to start a worker under a name that looks alive.
        self.connection.delete(self.key)

    def execute_job(self, job, queue):
        # What Django does around each request: a connection broken by a database restart (or
        # past its age) is dropped here, so the job gets a fresh one instead of failing forever.
        close_old_connections()
        try:
            return super().execute_job(job, queue)
        finally:
            close_old_connections()

    def handle_warm_shutdown_request(self) -> None:
        """Called by rq in its SIGTERM/SIGINT handler: stop the running job at a batch boundary."""
        logger.info("worker %s: stop requested; the running job is released at its next batch boundary", self.name)
        request_worker_stop()
        super().handle_warm_shutdown_request()


class CronScheduler(DjangoCronScheduler):
    """rq's cron scheduler, riding out Redis outages.

    rq's `CronScheduler.start()` lets a Redis error end the process, so one Redis restart would
    stop the job sweeper, scheduled re-syncs and the answer purge until someone restarts it. Here
    a Redis error is logged and the loop starts again once Redis answers; the jobs that fell due
    meanwhile are enqueued then, once each. SIGTERM/SIGINT still stop it at once.
    """

    #: Seconds between attempts while Redis does not answer.
    retry_seconds = 2.0

    def start(self) -> None:
        while True:
            try:
                super().start()
                return  # stopped by a signal
            except StopRequested:  # a signal before rq's own loop caught it
                return
            except (RedisConnectionError, RedisTimeoutError) as exc:
                logger.warning("cron scheduler: Redis unavailable (%s); trying again in %ss", exc, self.retry_seconds)
            try:
                time.sleep(self.retry_seconds)
            except StopRequested:  # rq's signal handler, still installed
                return


class Every(threading.Thread):
    """Calls `function` at once and then every `seconds`, on a daemon thread of its own.

    For the scheduler's own periodic work: the job sweeper hands on the jobs of dead workers and
    rings again for lost ones, so it must not itself wait in a queue behind those jobs' backlog
    for a worker to take it. A failure (Redis or the database down) is logged and the next call
    comes on time; each call ends by dropping a database connection that broke meanwhile.
    """

    def __init__(self, function: Callable[[], object], *, seconds: float, name: str):
        super().__init__(name=name, daemon=True)
        self.function = function
        self.seconds = seconds
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.function()
            except Exception:
                logger.exception("%s failed; trying again in %ss", self.name, self.seconds)
            finally:
                close_old_connections()
            self.stopped.wait(self.seconds)

    def stop(self) -> None:
        self.stopped.set()
