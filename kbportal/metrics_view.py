"""`/metrics`: the metrics every process wrote (kbportal.metrics) plus values read when scraped.

Values read live from shared stores (breaker states, queue depths, live workers, jobs by status)
are collected here at scrape time, so every host reports the same cluster-wide figures for them.
"""

import ipaddress
import logging
import secrets

import django_rq
from django.apps import apps
from django.conf import settings
from django.db.models import Count
from django.http import HttpResponse, HttpResponseForbidden
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from rq import Worker

from kbportal.breaker import CLOSED, HALF_OPEN, OPEN, known_breakers
from kbportal.claiming import ClaimableJob, JobStatus
from kbportal.metrics import METRICS_DIR, MULTIPROCESS, prune_dead_live_gauges

logger = logging.getLogger(__name__)


# --- values read at scrape time ---------------------------------------------------------------------


class LiveCollector:
    """Breaker states, queue depths, live workers and jobs by status, read when scraped.

    Each part fails on its own: a Redis outage drops the queue figures (and sets
    kb_metrics_collect_error{part="queues"} to 1) but not the job counts.
    """

    def collect(self):
        errors = GaugeMetricFamily("kb_metrics_collect_error", "1 when a part of /metrics could not be read.",
                                   labels=["part"])
        for part, collect in (("breakers", self.breakers), ("queues", self.queues), ("jobs", self.jobs)):
            try:
                yield from collect()
                errors.add_metric([part], 0)
            except Exception as exc:
                logger.warning("metrics: %s unavailable: %s", part, exc)
                errors.add_metric([part], 1)
        yield errors

    def breakers(self):
        family = GaugeMetricFamily("kb_breaker_state", "1 for the breaker's current state.",
                                   labels=["breaker", "state"])
        for breaker in known_breakers():
            current = breaker.state()["state"]
            for state in (CLOSED, HALF_OPEN, OPEN):
                family.add_metric([breaker.name, state], 1 if current == state else 0)
        return [family]

    def queues(self):
        depth = GaugeMetricFamily("kb_queue_depth", "Jobs waiting in each rq queue.", labels=["queue"])
        for name in settings.RQ_QUEUES:
            depth.add_metric([name], django_rq.get_queue(name).count)
        workers = GaugeMetricFamily("kb_workers", "rq workers registered in Redis (alive).")
        workers.add_metric([], Worker.count(connection=django_rq.get_connection("default")))
        return [depth, workers]

    def jobs(self):
        family = GaugeMetricFamily("kb_jobs", "Background job rows by kind and status (PostgreSQL).",
                                   labels=["kind", "status"])
        for model in apps.get_models():
            if not issubclass(model, ClaimableJob):
                continue
            counts = dict.fromkeys(JobStatus.values, 0)
            for row in model.objects.values("status").annotate(n=Count("pk")).order_by():
                counts[row["status"]] = row["n"]
            for status, n in counts.items():
                family.add_metric([model._meta.label_lower, status], n)
        return [family]


def exposition() -> bytes:
    """Every process's metrics plus the live values, in Prometheus text format."""
    live = CollectorRegistry()
    live.register(LiveCollector())
    if not MULTIPROCESS:
        return generate_latest(REGISTRY) + generate_latest(live)
    prune_dead_live_gauges()
    multiprocess.MultiProcessCollector(live, path=str(METRICS_DIR))
    return generate_latest(live)


# --- the endpoint ---------------------------------------------------------------------------------


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.KB_METRICS_ALLOW]


def may_scrape(request) -> bool:
    """From a configured network (KB_METRICS_ALLOW), or with `Authorization: Bearer <KB_METRICS_TOKEN>`.

    REMOTE_ADDR only: X-Forwarded-For is client-controlled. Behind a proxy, allow the proxy's
    address only if the proxy itself refuses outside requests to /metrics, or use the token.
    """
    token = settings.KB_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), token.encode()):
            return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in _allowed_networks())


def metrics_view(request):
    if not may_scrape(request):
        return HttpResponseForbidden("Metrics are available from the configured networks or with the token.\n",
                                     content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
