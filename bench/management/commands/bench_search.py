"""`manage.py bench_search`: the search API against direct search-server calls (bench.search)."""

from django.core.management.base import BaseCommand, CommandError

from bench import search as search_bench
from bench.ask import seed_kb
from bench.measuring import percentile
from bench.processes import free_port
from knowledge.models import KnowledgeBase
from knowledge.services import api_key_create
from search.services import query_vector


class Command(BaseCommand):
    help = "Benchmark the search API (misses, hits; uvicorn and daphne) against direct search-server calls."

    def add_arguments(self, parser):
        parser.add_argument("--kb", default="demo")
        parser.add_argument("--seed", action="store_true",
                            help="seed a small knowledge base (8 documents) instead of --kb: its searches take "
                                 "milliseconds, so what the API adds to a miss is measurable")
        parser.add_argument("--mode", default="hybrid", choices=["hybrid", "keyword", "semantic"])
        parser.add_argument("--queries", type=int, default=60, help="distinct queries (one miss each per level)")
        parser.add_argument("--hits", type=int, default=400, help="requests per level for cache hits")
        parser.add_argument("--miss-rounds", type=int, default=1,
                            help="each query misses this many times per level (the generation is bumped between)")
        parser.add_argument("--concurrency", default="1,16,64")
        parser.add_argument("--servers", default="uvicorn,daphne")

    def handle(self, *args, **options):
        if options["seed"]:
            kb = seed_kb()
        else:
            kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
            if kb is None:
                raise CommandError(f"No knowledge base {options['kb']!r} (make up loads `demo`).")
        queries = search_bench.sample_queries(kb, options["queries"])
        if len(queries) < 5:
            raise CommandError(f"{kb.slug} has too few indexed documents to benchmark.")
        levels = [int(level) for level in options["concurrency"].split(",")]
        mode = options["mode"]
        rounds = max(1, options["miss_rounds"])
        for query in queries:  # warm the embedding cache: a miss below is a result-cache miss
            query_vector(kb.embedder, query.lower())
        key, raw = api_key_create(name="bench", kb_slugs=[kb.slug], scopes=["search"], rate="1000000/s")
        self.stdout.write(f"{len(queries)} queries on {kb.slug}, mode {mode}; search server timings are relative")
        self.stdout.write(search_bench.HEADER)
        results = {}
        try:
            searches = search_bench.direct_searches(kb, [q.lower() for q in queries], mode)
            for level in levels:
                result = search_bench.bench_direct(searches, len(queries) * rounds, level)
                results[("direct", level)] = result
                self.stdout.write(result.row())
            for server in options["servers"].split(","):
                port = free_port()
                process = search_bench.start_server(server, port)
                try:
                    base = f"http://127.0.0.1:{port}"
                    for level in levels:
                        floor = search_bench.bench_floor(base, raw, options["hits"], level)
                        floor.target = f"empty ({server})"
                        results[(server, "floor", level)] = floor
                        self.stdout.write(floor.row())
                        miss = None
                        for _ in range(rounds):
                            kb.bump_generation()  # every request of this round is a result-cache miss
                            part = search_bench.bench_api(base, raw, kb, queries, mode, len(queries), level, "miss")
                            miss = part if miss is None else miss.merged(part)
                        miss.target = f"api ({server})"
                        results[(server, "miss", level)] = miss
                        self.stdout.write(miss.row())
                        hit = search_bench.bench_api(base, raw, kb, queries, mode, options["hits"], level, "hit")
                        hit.target = f"api ({server})"
                        results[(server, "hit", level)] = hit
                        self.stdout.write(hit.row())
                    differences = search_bench.paired_misses(base, raw, kb, queries, searches, mode, rounds)
                    results[(server, "paired")] = percentile(differences, 0.5)
                finally:
                    process.terminate()
                    process.wait(timeout=30)
        finally:
            key.delete()
        self.summarise(results, levels, options["servers"].split(","))

    def summarise(self, results, levels, servers) -> None:
        first = levels[0]
        direct = results[("direct", first)].percentile(0.5)
        for server in servers:
            miss = results[(server, "miss", first)].percentile(0.5)
            hit = results[(server, "hit", first)].percentile(0.5)
            floor = results[(server, "floor", first)].percentile(0.5)
            self.stdout.write(
                f"{server}: miss p50 {miss:.1f} ms vs direct {direct:.1f} ms: API adds {miss - direct:.1f} ms; "
                f"hit p50 {hit:.1f} ms; paired (direct and API miss back to back, concurrency 1): "
                f"API adds {results[(server, 'paired')]:.1f} ms (median); the empty endpoint's p50 {floor:.1f} ms"
            )
        if len(servers) == 2:
            top = levels[-1] if len(levels) > 1 else first
            a, b = (results[(server, "hit", top)].rps for server in servers)
            self.stdout.write(
                f"hits at concurrency {top}: {servers[0]} {a:.0f} req/s, {servers[1]} {b:.0f} req/s ({a / b:.2f}x)"
            )
