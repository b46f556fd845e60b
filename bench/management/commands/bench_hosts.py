"""`manage.py bench_hosts`: throughput against hosts, each a fixed CPU quota (bench.scaling)."""

import os
import shutil

import psycopg
from django.core.management.base import BaseCommand, CommandError

from bench import scaling
from bench.hosts import ROOT, KbCluster

SEARCH_GOAL = 1.7
INGEST_GOAL = 2.5


class Command(BaseCommand):
    help = ("KB Portal on network-namespace hosts with a CPU quota each: cached-search req/s with 1 and 2 web "
            "hosts, ingestion docs/s with 1 and 3 worker hosts. Needs root and what `make cluster-test` needs.")

    def add_arguments(self, parser):
        parser.add_argument("--cpu", type=float, default=0.3, help="CPU quota of each web and worker host")
        parser.add_argument("--searches", type=int, default=3000, help="cached searches per run")
        parser.add_argument("--concurrency", type=int, default=16, help="client threads of the search load")
        parser.add_argument("--queries", type=int, default=8, help="distinct cached queries")
        parser.add_argument("--documents", type=int, default=150, help="documents per ingestion run")
        parser.add_argument("--per-upload", type=int, default=10, help="documents per upload (one source, one job)")
        parser.add_argument("--only", choices=("search", "ingestion"), help="run one of the two pairs")

    def handle(self, *args, **options):
        if os.geteuid() != 0 or not shutil.which("haproxy"):
            raise CommandError("bench_hosts needs root (namespaces, cgroups) and HAProxy: see docs/benchmarks.md")
        quotas = scaling.CpuQuotas([*KbCluster.WEBS, *KbCluster.WORKERS], options["cpu"])
        with scaling.exclusive_bridge():
            cluster = KbCluster(cgroups=quotas.paths, keep_logs=ROOT / "var" / "log" / "bench-hosts")
            try:
                quotas.create()
                cluster.start()
                self.stdout.write(f"{len(cluster.network.hosts)} hosts up in {cluster.started_in:.0f} s on "
                                  f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}); quota "
                                  f"{quotas.describe()}; Elasticsearch (3 nodes), data host and proxy without quota")
                key = scaling.prepare(cluster, [scaling.SEARCH_KB, "hosts-warm"])
                with psycopg.connect(cluster.database_url, autocommit=True) as database:
                    if options["only"] != "ingestion":
                        self.search(cluster, quotas, key, database, options)
                    if options["only"] != "search":
                        self.ingestion(cluster, quotas, key, database, options)
                self.stdout.write(f"load average at the end {os.getloadavg()[0]:.1f}")
            finally:
                cluster.stop()
                quotas.remove()

    def search(self, cluster, quotas, key, database, options) -> None:
        scaling.wait_jobs(database, scaling.upload(cluster, key, [scaling.SEARCH_KB], 24))
        queries = scaling.search_queries(options["queries"])
        self.stdout.write(f"\ncached search: {options['searches']} requests per run over {len(queries)} cached "
                          f"queries, {options['concurrency']} client threads through the proxy")
        rates = {}
        for webs in (2, 1):
            hosts = scaling.use_web_hosts(cluster, webs)
            scaling.fill_cache(cluster, key, queries)
            rates[webs] = scaling.search_rate(cluster, quotas, key, queries, webs=hosts, total=options["searches"],
                                              concurrency=options["concurrency"])
            self.stdout.write(f"  {rates[webs].line()}")
        scaling.use_web_hosts(cluster, 2)
        self.ratio("2 web hosts / 1 web host", rates[2], rates[1], SEARCH_GOAL)

    def ingestion(self, cluster, quotas, key, database, options) -> None:
        scaling.wait_jobs(database, scaling.upload(cluster, key, ["hosts-warm"], 6))
        documents, per_upload = options["documents"], options["per_upload"]
        uploads = -(-documents // per_upload)
        self.stdout.write(f"\ningestion: {documents} Markdown documents in {uploads} uploads of {per_upload} (one "
                          "source, one job each), hashing embedder; timed from all jobs queued to all finished")
        layouts = {"into one knowledge base": 1, "a knowledge base per upload": uploads}
        rates = {}
        for workers in (3, 1):  # 3 first: the two others' workers are stopped for 1
            for layout, kbs in layouts.items():
                slugs = [f"hosts-{workers}w-{kbs}kb-{number}" for number in range(kbs)]
                rates[layout, workers] = scaling.ingestion_rate(
                    cluster, quotas, database, slugs=slugs, workers=list(cluster.WORKERS[:workers]),
                    documents=documents, per_upload=per_upload)
                self.stdout.write(f"  {layout}: {rates[layout, workers].line()}")
        for layout in layouts:
            self.ratio(f"{layout}: 3 worker hosts / 1 worker host", rates[layout, 3], rates[layout, 1], INGEST_GOAL)

    def ratio(self, label: str, many, one, goal: float) -> None:
        ratio = many.per_second / one.per_second if one.per_second else 0.0
        valid = not (many.errors or one.errors)
        verdict = ("met" if ratio >= goal else "not met") if valid else "not judged: errors in a run"
        self.stdout.write(f"  {label}: {ratio:.2f}x (goal >= {goal}x: {verdict})")
