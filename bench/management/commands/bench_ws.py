"""`manage.py bench_ws`: delay of live job progress to many WebSocket subscribers (bench.ws)."""

from django.core.management.base import BaseCommand, CommandError

from bench import ws
from bench.loadtest import fmt, table

GOAL_P95_MS = 250.0


class Command(BaseCommand):
    help = "Benchmark live job progress: delay from publish to receipt for 100 and 1,000 WebSocket subscribers."

    def add_arguments(self, parser):
        parser.add_argument("--subscribers", default="100,1000", help="subscriber counts, comma-separated")
        parser.add_argument("--events", type=int, default=40, help="progress events per round")
        parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn")
        parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (make up runs 2)")
        parser.add_argument("--client-processes", type=int, default=2, help="processes the subscribers are spread over")

    def handle(self, *args, **options):
        try:
            counts = [int(part) for part in options["subscribers"].split(",") if part.strip()]
        except ValueError:
            raise CommandError("--subscribers must be comma-separated integers") from None
        if not counts or min(counts) < 1 or options["workers"] < 1 or options["client_processes"] < 1:
            raise CommandError("subscriber counts, --workers and --client-processes must be at least 1")
        rounds = ws.run_bench(counts=counts, events=options["events"], server=options["server"],
                                 workers=options["workers"], processes=options["client_processes"],
                                 out=self.stdout.write)
        rows = []
        for result in rounds:
            s = result.summary()
            rows.append([str(s["subscribers"]), str(s["connected"]), s["delivered"], fmt(s["p50"]), fmt(s["p95"]),
                         fmt(s["p99"]), fmt(s["max"]), f"{s['connect_s']:.1f}"])
        self.stdout.write(table(["subscribers", "connected", "events delivered", "p50 ms", "p95 ms", "p99 ms",
                                 "max ms", "connect s"], rows))
        for result in rounds:
            if result.errors:
                self.stdout.write(f"{result.subscribers} subscribers, errors: {'; '.join(result.errors)}")
        worst = max((r.summary()["p95"] or float("inf")) for r in rounds)
        style = self.style.SUCCESS if worst <= GOAL_P95_MS else self.style.ERROR
        self.stdout.write(style(f"worst p95 {worst:.1f} ms (goal <= {GOAL_P95_MS:.0f} ms)"))
