"""`manage.py bench_ask`: accept latency of questions and answers per minute per worker count (bench.ask)."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from bench import ask
from bench.search import HEADER
from bench.standin_llm import StandinLLM
from knowledge.models import KnowledgeBase
from knowledge.services import api_key_create


class Command(BaseCommand):
    help = "Benchmark asking: accept latency of POST /api/v1/ask, and answers per minute per worker count."

    def add_arguments(self, parser):
        parser.add_argument("--kb", default="", help="An existing knowledge base (default: seed a small one).")
        parser.add_argument("--submissions", type=int, default=100, help="Questions submitted at once.")
        parser.add_argument("--workers", default="1,2,4,8", help="Worker counts to measure.")
        parser.add_argument("--per-worker", type=int, default=5, help="Questions per worker at each count.")
        parser.add_argument("--answer-seconds", type=float, default=2.0, help="Stand-in model time per answer.")
        parser.add_argument("--skip-accept", action="store_true")

    def handle(self, *args, **options):
        if ask.listening_workers():
            raise CommandError("Workers already listen on the answers queue and would take the benchmark's "
                               "questions: stop them (make down) or point KB_REDIS_URL at another database.")
        try:
            levels = [int(level) for level in options["workers"].split(",")]
        except ValueError:
            raise CommandError("--workers takes a comma-separated list of numbers, e.g. 1,2,4,8")
        if options["kb"]:
            kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
            if kb is None:
                raise CommandError(f"No knowledge base {options['kb']!r}.")
        else:
            kb = ask.seed_kb()
            self.stdout.write(f"seeded knowledge base {kb.slug}")
        key, raw = api_key_create(name="bench-ask", kb_slugs=[kb.slug], scopes=["ask"], rate="1000000/s")
        self.stdout.write(ask.settings_summary())
        try:
            if not options["skip_accept"]:
                # One client at a time (the cost of one submission), then all at once.
                results = ask.accept_latency(kb, raw, total=options["submissions"],
                                               levels=[1, options["submissions"]])
                self.stdout.write(HEADER)
                for result in results:
                    self.stdout.write(result.row())
                    for sample in result.error_sample or []:
                        self.stdout.write(f"  error: {sample}")
                burst = {r.target: r for r in results if r.concurrency == options["submissions"]}
                self.stdout.write(
                    f"{options['submissions']} at once: accept p99 {burst[ask.ASK].percentile(0.99):.1f} ms "
                    f"(goal 100 ms); the empty endpoint's p99 {burst[ask.FLOOR].percentile(0.99):.1f} ms"
                )
            with StandinLLM(answer_seconds=options["answer_seconds"]).running() as llm:
                self.stdout.write(f"stand-in model (not a model) at {llm.url}: {options['answer_seconds']:g} s "
                                  f"per answer; {options['per_worker']} questions per worker")
                self.stdout.write(f"{'workers':>7} {'answers':>7} {'failed':>6} {'seconds':>8} {'per min':>8} "
                                  f"{'x of 1':>7} {'retrieve ms':>11} {'generate ms':>11} {'task ms':>8}")
                base = None
                for workers in levels:
                    since = timezone.now()
                    result = ask.throughput(kb, workers=workers, per_worker=options["per_worker"],
                                              llm_url=llm.url)
                    parts = ask.breakdown(kb, since)
                    base = base or result.per_minute / workers
                    self.stdout.write(
                        f"{workers:>7} {result.answers:>7} {result.failed:>6} {result.seconds:>8.1f} "
                        f"{result.per_minute:>8.1f} {result.per_minute / base:>7.2f} "
                        f"{parts.get('retrieval_ms', 0):>11.0f} {parts.get('generation_ms', 0):>11.0f} "
                        f"{parts.get('task_ms', 0):>8.0f}"
                    )
        finally:
            key.delete()
