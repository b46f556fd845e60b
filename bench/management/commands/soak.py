"""`manage.py soak` (`make soak`): the load-test mix at a steady rate, watching process growth (bench.loadtest)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bench import loadtest
from bench.measuring import percentile


class Command(BaseCommand):
    help = "Soak the running system: the load-test mix at a steady rate, watching memory, fds and connections."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the running system")
        parser.add_argument("--key", default=None,
                            help="API key (search + ingest on --kb and <kb>-uploads); created when omitted")
        parser.add_argument("--kb", default=loadtest.KB_SLUG, help="knowledge base to use (created if missing)")
        parser.add_argument("--minutes", type=float, default=30.0)
        parser.add_argument("--rate", type=float, default=20.0, help="requests per second, steady")
        parser.add_argument("--concurrency", type=int, default=8)
        parser.add_argument("--sample-seconds", type=float, default=10.0)
        parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the run before growth is measured")
        parser.add_argument("--run-dir", type=Path, default=settings.BASE_DIR / "var" / "run",
                            help="where `make up` keeps web.pid, worker-1.pid, worker-2.pid")
        parser.add_argument("--rss-limit", type=float, default=5.0, help="allowed RSS growth after warm-up, %%")

    def handle(self, *args, **options):
        try:
            key, job_ids = loadtest.prepare(options["url"], options["key"], options["kb"], out=self.stdout.write)
        except Exception as exc:
            raise CommandError(f"cannot prepare the soak against {options['url']}: {exc}") from exc
        self.stdout.write(f"soak: {options['rate']:g} req/s for {options['minutes']:g} min, "
                          f"{options['concurrency']} connections")
        try:
            report = loadtest.run_soak(
                options["url"], key, job_ids, minutes=options["minutes"], rate=options["rate"],
                concurrency=options["concurrency"], run_dir=options["run_dir"], warmup_fraction=options["warmup"],
                sample_seconds=options["sample_seconds"], kb_slug=options["kb"], out=self.stdout.write,
            )
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        tally = report.tally
        all_ms = tally.latencies()
        self.stdout.write(
            f"requests {len(tally.samples)} ({len(tally.samples) / report.seconds:.1f}/s), errors {tally.error_count}, "
            f"p50 {loadtest.fmt(percentile(all_ms, 0.5))} ms, "
            f"p95 {loadtest.fmt(percentile(all_ms, 0.95))} ms, "
            f"p99 {loadtest.fmt(percentile(all_ms, 0.99))} ms, "
            f"cache-hit search p95 {loadtest.fmt(percentile(tally.search_hit_ms(), 0.95))} ms"
        )
        for error, count in sorted(tally.errors.items()):
            self.stdout.write(f"  error: {error} x{count}")
        self.stdout.write("growth after warm-up (RSS: the sample at the end of warm-up to the last; fds and conns:\n"
                          "the level of the last fifth of the run above the highest count of the first fifth)")
        rows = [[name, f"{g['rss_start_mb']:.1f}", f"{g['rss_end_mb']:.1f}", f"{g['rss_growth_pct']:+.2f}",
                 f"{g['fd_change']:+.0f}", f"{g['conn_change']:+.0f}"] for name, g in report.growth().items()]
        self.stdout.write(loadtest.table(["process", "RSS MB", "end MB", "RSS %", "fds", "conns"], rows))
        if report.passed(options["rss_limit"]):
            self.stdout.write(self.style.SUCCESS(
                f"PASS: RSS growth <= {options['rss_limit']:g}%, no fd or connection growth, no errors"))
        else:
            self.stdout.write(self.style.ERROR("FAIL: see the growth table and errors above"))
