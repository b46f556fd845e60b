"""`manage.py loadtest` (`make loadtest`): ramped load on the running system over HTTP (bench.loadtest)."""

from django.core.management.base import BaseCommand, CommandError

from bench import loadtest


def steps_arg(value: str) -> list[int]:
    try:
        steps = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--steps must be comma-separated integers, not {value!r}") from None
    if not steps or min(steps) < 1:
        raise CommandError("--steps needs at least one concurrency of 1 or more")
    return steps


class Command(BaseCommand):
    help = "Load-test the running system over HTTP: ramped concurrency, latency percentiles and errors per step."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the running system")
        parser.add_argument("--key", default=None,
                            help="API key (search + ingest on --kb and <kb>-uploads); created when omitted")
        parser.add_argument("--kb", default=loadtest.KB_SLUG, help="knowledge base to use (created if missing)")
        parser.add_argument("--steps", default="1,4,16,32,64", help="concurrency steps, comma-separated")
        parser.add_argument("--seconds", type=float, default=15.0, help="duration of each step")

    def handle(self, *args, **options):
        steps = steps_arg(options["steps"])
        try:
            key, job_ids = loadtest.prepare(options["url"], options["key"], options["kb"], out=self.stdout.write)
        except Exception as exc:
            raise CommandError(f"cannot prepare the load test against {options['url']}: {exc}") from exc
        self.stdout.write(
            f"mix: {', '.join(f'{kind} {share:.0%}' for kind, share in loadtest.DEFAULT_MIX.items())}; "
            f"{options['seconds']:.0f} s per step; latencies in ms at the client"
        )
        results = loadtest.run_load(options["url"], key, job_ids, steps=steps, seconds=options["seconds"],
                                       kb_slug=options["kb"], out=self.stdout.write)
        best = loadtest.best_step(results)
        if best is None:
            self.stdout.write(self.style.WARNING(
                f"no step had zero errors and cache-hit search p95 under {loadtest.HIT_P95_GOAL_MS:.0f} ms"))
        else:
            self.stdout.write(self.style.SUCCESS(
                f"highest step with no error and cache-hit search p95 < {loadtest.HIT_P95_GOAL_MS:.0f} ms: "
                f"concurrency {best.concurrency} ({best.throughput:.0f} req/s)"))
