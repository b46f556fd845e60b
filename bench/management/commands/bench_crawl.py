"""`manage.py bench_crawl`: url-source syncs on the local bench site next to the bare crawler (bench.crawl)."""

import psutil
from django.core.management.base import BaseCommand, CommandError

from bench import crawl


class Command(BaseCommand):
    help = "Benchmark url-source syncs on a local site: concurrency 1 vs 16 next to the bare crawler, and a re-sync."

    def add_arguments(self, parser):
        parser.add_argument("--pages", type=int, default=500, help="pages on the local site")
        parser.add_argument("--latency", type=float, default=0.02, help="server latency per answer, seconds")
        parser.add_argument("--embedder", default="hashing")
        parser.add_argument("--concurrency", type=int, nargs=2, default=[1, 16], metavar=("LOW", "HIGH"))
        parser.add_argument(
            "--resync-embedder",
            default="minilm",
            help="also measure a first sync and re-sync at HIGH concurrency with this embedder (the product "
            "default, whose first sync embeds for real); 'none' skips it",
        )

    def handle(self, *args, **options):
        pages, embedder, latency = options["pages"], options["embedder"], options["latency"]
        low, high = options["concurrency"]
        other = options["resync_embedder"]
        if pages < 2:
            raise CommandError("--pages must be at least 2.")
        self.stdout.write(f"local site: {pages} pages, {1000 * latency:.0f} ms latency, embedder {embedder}")
        self.stdout.write(f"{'run':<24} {'conc':>4} {'pages':>6} {'seconds':>8} {'pages/s':>8}  {'vs engine':>9}  note")
        try:
            with crawl.BenchSite(pages, latency) as site:
                rows = {}
                for concurrency in (low, high):
                    engine = crawl.bench_engine(site.root, pages, concurrency)
                    self.row(engine)
                    pipeline, source, job = crawl.bench_pipeline(site, pages, concurrency, embedder)
                    self.row(pipeline, engine)
                    rows[concurrency] = (engine, pipeline, source, job)
                engine_high, first, source, first_job = rows[high]
                resync, again = crawl.bench_resync(source)
                self.row(resync, engine_high)
                resyncs = [(embedder, first, resync, again, first_job)]
                if other not in ("", "none", embedder):
                    other_first, other_source, other_job = crawl.bench_pipeline(site, pages, high, other)
                    other_first.name = f"{other}: first sync"
                    self.row(other_first, engine_high)
                    other_resync, other_again = crawl.bench_resync(other_source)
                    other_resync.name = f"{other}: re-sync"
                    self.row(other_resync, engine_high)
                    resyncs.append((other, other_first, other_resync, other_again, other_job))
            self.summary(rows, low, high)
            floor = pages * latency / high
            for resync in resyncs:
                self.resync_summary(*resync, pages=pages, high=high, floor=floor)
        finally:
            crawl.drop_bench_kbs()

    def row(self, row, engine=None) -> None:
        share = f"{100 * row.pages_per_second / engine.pages_per_second:8.1f}%" if engine else f"{'':>9}"
        self.stdout.write(
            f"{row.name:<24} {row.concurrency:>4} {row.pages:>6} {row.seconds:8.2f} {row.pages_per_second:8.1f}"
            f"  {share}  {row.note}"
        )

    def summary(self, rows, low, high) -> None:
        (engine_low, pipeline_low, *_), (engine_high, pipeline_high, *_) = rows[low], rows[high]
        speedup = pipeline_high.pages_per_second / pipeline_low.pages_per_second
        engine_speedup = engine_high.pages_per_second / engine_low.pages_per_second
        self.stdout.write(
            f"pipeline concurrency {high} vs {low}: {speedup:.1f}x (goal >= 8x); "
            f"crawl engine alone {engine_speedup:.1f}x"
        )
        cpu = pipeline_high.cpu
        per_page = {name: 1000 * seconds / pipeline_high.pages for name, seconds in cpu.items()}
        total = sum(per_page.values())
        cores = psutil.cpu_count() or 1
        ceiling = cores * 1000 / total
        self.stdout.write(
            f"CPU per page at concurrency {high}: "
            + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_page.items())
            + f"; total {total:.2f} ms"
        )
        self.stdout.write(
            f"  on {cores} cores that CPU allows at most {ceiling:.0f} pages/s, "
            f"{ceiling / pipeline_low.pages_per_second:.1f}x the concurrency-{low} rate "
            f"(8x needs at most {cores * 1000 / (8 * pipeline_low.pages_per_second):.2f} ms of CPU per page)"
        )

    def resync_summary(self, embedder, first, resync, again, first_job, *, pages, high, floor) -> None:
        share = 100 * resync.seconds / first.seconds
        self.stdout.write(
            f"re-sync with {embedder}: {resync.seconds:.2f} s = {share:.1f}% of its first sync at concurrency {high} "
            f"({first.seconds:.2f} s; goal <= 10%); every page still waits its server latency: floor {floor:.2f} s"
        )
        embedded = "0 (none)" if again.done == 0 else f"{again.done} documents re-embedded"
        self.stdout.write(
            f"  embedding during the re-sync: {embedded}; {again.skipped} of {pages} pages unchanged "
            f"(304s: {(again.payload.get('crawl') or {}).get('unchanged', 0)}), first sync indexed {first_job.done}"
        )
