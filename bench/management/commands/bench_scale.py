"""`manage.py bench_scale`: how search cost grows with the index.

One alias, `<KB_ES_INDEX>_scale`, grows through `--sizes` (10k -> 100k -> 1M costs 1M inserts in
all); at each size: the indexing rate of that increment, the index's size on disk, latency of the
API's searches (`search.query.search`: keyword, and semantic and hybrid at each kNN candidates
factor) and kNN recall@10 against an exact search over the same vectors. The indices are deleted
at the end unless `--keep`. The corpus and the measuring are in `bench.scale`.
"""

import os
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.test import override_settings

from bench import scale
from search.client import SearchError, SearchUnavailable, get_client
from search.index import current_index, ensure_index, health_check
from search.indexer import forget_ensured
from search.query import SearchRequest, knn_candidates

RECALL_GOAL = 0.95
P95_GOAL_MS = 50.0
GROWTH_GOAL = 3.0
WARMUP_QUERIES = 20
HEADER = (f"  {'search':<18}{'factor':>7}{'cand':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'err':>5}"
          f"{'recall@10':>11}{'strict':>8}{'in k':>7}")


def _numbers(text: str, kind=int) -> list:
    return [kind(value.replace("_", "")) for value in text.split(",") if value.strip()]


def _fmt(value, spec: str = ".1f", width: int = 9) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def _drop_indices(alias: str) -> list[str]:
    client = get_client()
    names = sorted(client.indices.get(index=f"{alias}-v*", allow_no_indices=True, ignore_unavailable=True))
    if names:
        client.indices.delete(index=",".join(names))
    return names


def index_footprint() -> dict:
    """Size on disk, segments, merge and throttle totals of the concrete index; the node's heap."""
    client = get_client().options(request_timeout=60)
    index = current_index()
    total = client.indices.stats(index=index, metric="store,segments,merge,indexing,docs")["indices"][index]
    total = total["primaries"]
    jvm = [node["jvm"] for node in client.nodes.stats(metric="jvm")["nodes"].values()]
    old = [node["gc"]["collectors"].get("old", {}) for node in jvm]
    return {
        "index": index, "docs": total["docs"]["count"], "segments": total["segments"]["count"],
        "store_mb": total["store"]["size_in_bytes"] / 1e6,
        "merge_s": total["merges"]["total_time_in_millis"] / 1000,
        "merge_throttled_s": total["merges"]["total_throttled_time_in_millis"] / 1000,
        "merges_running": total["merges"]["current"],
        "index_throttled_s": total["indexing"]["throttle_time_in_millis"] / 1000,
        "heap_used_mb": sum(node["mem"]["heap_used_in_bytes"] for node in jvm) / 1e6,
        "heap_max_mb": sum(node["mem"]["heap_max_in_bytes"] for node in jvm) / 1e6,
        "old_gcs": sum(collector.get("collection_count", 0) for collector in old),
        "old_gc_s": sum(collector.get("collection_time_in_millis", 0) for collector in old) / 1000,
    }


def settle(*, timeout: float) -> float:
    """Wait until no merge runs (a search measured during a merge measures the merge) and the
    store size is fresh (Elasticsearch caches it for `index.store.stats_refresh_interval`, 10 s)."""
    started = time.perf_counter()
    client = get_client().options(request_timeout=60)
    while time.perf_counter() - started < timeout:
        stats = client.indices.stats(index=settings.KB_ES_INDEX, metric="merge")["_all"]["primaries"]
        if not stats["merges"]["current"]:
            break
        time.sleep(1)
    time.sleep(max(0.0, 11 - (time.perf_counter() - started)))
    return time.perf_counter() - started


def force_merge() -> float:
    started = time.perf_counter()
    client = get_client().options(request_timeout=7200)
    client.indices.forcemerge(index=settings.KB_ES_INDEX, max_num_segments=1)
    client.indices.refresh(index=settings.KB_ES_INDEX)
    return time.perf_counter() - started


class Command(BaseCommand):
    help = "How search cost grows with the index: indexing rate, size, latency and kNN recall at each size."

    def add_arguments(self, parser):
        parser.add_argument("--sizes", default="10000,100000,1000000", help="index sizes in chunks, growing")
        parser.add_argument("--queries", type=int, default=200, help="timed queries per search kind and size")
        parser.add_argument("--concurrency", type=int, default=1, help="searches in flight at once")
        parser.add_argument("--batch", type=int, default=2000, help="chunks per bulk_upsert call")
        parser.add_argument("--writers", type=int, default=2, help="bulk_upsert calls in flight at once")
        parser.add_argument("--candidates-factors", default="1,2,4",
                            help="KB_KNN_CANDIDATES_FACTOR values to measure (the configured one is added)")
        parser.add_argument("--recall-queries", type=int, default=50, help="queries compared with exact kNN")
        parser.add_argument("--vocabulary", type=int, default=20000, help="distinct synthetic words")
        parser.add_argument("--vectors", default="rotated", choices=scale.VECTORS,
                            help="rotated: the hashing embedder's vectors times a fixed random rotation (same "
                                 "cosines, dense like a model's); hashing: as the embedder returns them (sparse, "
                                 "which int8 quantisation scores badly); latent: synthetic vectors of low "
                                 "intrinsic dimension, like a model's (see bench.scale.embed)")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--force-merge", action="store_true",
                            help="after measuring the live index at each size, force-merge it to one segment "
                                 "and measure again (the next size grows on top of the merged segment)")
        parser.add_argument("--settle-timeout", type=float, default=1800.0,
                            help="seconds to wait after each increment for merges to end before measuring")
        parser.add_argument("--keep", action="store_true", help="keep the indices at the end")

    def handle(self, *args, **options):
        sizes = _numbers(options["sizes"])
        if not sizes or sizes != sorted(set(sizes)) or sizes[0] <= 0:
            raise CommandError("--sizes must be growing positive numbers, e.g. 10000,100000,1000000")
        self.default_factor = float(settings.KB_KNN_CANDIDATES_FACTOR)
        self.factors = sorted(set(_numbers(options["candidates_factors"], float)) | {self.default_factor})
        self.options = options
        alias = f"{settings.KB_ES_INDEX}_scale"
        with override_settings(KB_ES_INDEX=alias):
            try:
                health = health_check()
            except (SearchUnavailable, SearchError) as error:
                raise CommandError(f"Elasticsearch is unavailable: {error}")
            self.stdout.write(
                f"Elasticsearch {health['version']}, {health['nodes']} node(s), cluster {health['cluster']}; "
                f"client machine: {os.cpu_count()} CPUs; alias {alias}; sizes {', '.join(f'{n:,}' for n in sizes)}; "
                f"{options['queries']} queries per search kind, concurrency {options['concurrency']}, "
                f"recall over {options['recall_queries']} queries; {options['writers']} bulk writers; "
                f"default candidates factor {self.default_factor:g}; vectors: {options['vectors']}"
            )
            dropped = _drop_indices(alias)
            if dropped:
                self.stdout.write(f"dropped indices of an earlier run: {', '.join(dropped)}")
            forget_ensured()
            try:
                ensure_index(scale.DIMS)
                self.run(sizes)
            finally:
                if not options["keep"]:
                    self.stdout.write(f"deleted {', '.join(_drop_indices(alias)) or 'nothing'}")
                forget_ensured()

    def run(self, sizes: list[int]) -> None:
        options = self.options
        corpus = scale.make_corpus(size=options["vocabulary"], seed=options["seed"], vectors=options["vectors"])
        queries = scale.make_queries(corpus, count=options["queries"] + WARMUP_QUERIES, seed=options["seed"])
        self.warmup, self.queries = queries[:WARMUP_QUERIES], queries[WARMUP_QUERIES:]
        self.sample = self.queries[: options["recall_queries"]]
        store = scale.Store.room_for(sizes[-1])
        producer = scale.Producer(corpus)
        summary = []
        try:
            for size in sizes:
                growth = scale.grow(store, producer, target=size, batch=options["batch"], writers=options["writers"])
                growth.settled = settle(timeout=options["settle_timeout"])
                footprint = index_footprint()
                self.stdout.write(f"\n== {size:,} chunks ({footprint['index']}, {footprint['docs']:,} docs) ==")
                self.write_growth(growth, footprint)
                summary.append((size, "live", growth, footprint, self.measure_size(store)))
                if options["force_merge"]:
                    seconds = force_merge()
                    settle(timeout=options["settle_timeout"])
                    merged = index_footprint()
                    self.stdout.write(f"-- force-merged to {merged['segments']} segment(s) in {seconds:.1f} s, "
                                      f"store {merged['store_mb']:,.1f} MB --")
                    summary.append((size, "merged", growth, merged, self.measure_size(store)))
        finally:
            producer.close()
        self.write_summary(summary)

    def write_growth(self, growth: scale.Growth, footprint: dict) -> None:
        self.stdout.write(
            f"indexing  +{growth.added:,} chunks in {growth.wall:.1f} s = {growth.rate:,.0f} chunks/s "
            f"(bulk_upsert calls {growth.upsert:.1f} s summed, {self.options['writers']} in flight; waiting for the "
            f"generating/embedding worker {growth.wait:.1f} s of its {growth.produce:.1f} s; final refresh "
            f"{growth.refresh:.1f} s; retried batches {growth.retries}); then waited {growth.settled:.0f} s for merges"
        )
        self.stdout.write(
            f"index     store {footprint['store_mb']:,.1f} MB, {footprint['segments']} segments, merges so far "
            f"{footprint['merge_s']:.1f} s (throttled {footprint['merge_throttled_s']:.1f} s), running now "
            f"{footprint['merges_running']}, indexing throttled "
            f"{footprint['index_throttled_s']:.1f} s; node heap {footprint['heap_used_mb']:,.0f} of "
            f"{footprint['heap_max_mb']:,.0f} MB, old-gen GCs {footprint['old_gcs']} ({footprint['old_gc_s']:.1f} s)"
        )

    def measure_size(self, store: scale.Store) -> dict:
        """Warm up; time keyword, semantic and hybrid at each factor (taking turns); recall per factor."""
        concurrency = self.options["concurrency"]
        k = SearchRequest(query="x", kbs=["x"], size=10).window
        warm = [scale.Row(mode, scale.api_search(mode)) for mode in ("keyword", "semantic", "hybrid")]
        scale.measure(warm, self.warmup, concurrency=1)
        rows = {"keyword": scale.Row("keyword", scale.api_search("keyword"))}
        for factor in self.factors:
            with override_settings(KB_KNN_CANDIDATES_FACTOR=factor):
                candidates = knn_candidates(k)
            for mode in ("semantic", "hybrid"):
                rows[(mode, factor)] = scale.Row(mode, scale.api_search(mode), factor, candidates)
        rescore = scale.semantic_hits(rescore=False)
        rows["rescore"] = scale.Row("semantic, int8 only", rescore, self.default_factor,
                                    rows[("semantic", self.default_factor)].candidates)
        rate = scale.measure(list(rows.values()), self.queries, concurrency=concurrency)
        scores = scale.exact_scores(store, self.sample)
        checked = [(rows[("semantic", factor)], scale.semantic_hits()) for factor in self.factors]
        for row, hits in [*checked, (rows["rescore"], rescore)]:
            with override_settings(KB_KNN_CANDIDATES_FACTOR=row.factor):
                row.recall = scale.recall(scores, self.sample, hits)
        self.stdout.write(HEADER)
        for row in rows.values():
            recall = row.recall or (None, None, None)
            self.stdout.write(
                f"  {row.label:<18}{_fmt(row.factor, 'g', 7)}{_fmt(row.candidates, 'd', 6)}{_fmt(row.ms(0.5))}"
                f"{_fmt(row.ms(0.95))}{_fmt(row.ms(1.0))}{row.errors:>5}"
                f"{_fmt(recall[0], '.3f', 11)}{_fmt(recall[1], '.3f', 8)}{_fmt(recall[2], '.3f', 7)}"
            )
        self.stdout.write(
            f"  ({sum(len(row.latencies) + row.errors for row in rows.values()):,} searches, {rate:.0f}/s at "
            f"concurrency {concurrency}, the rows taking turns; k = {k} per kNN search; recall@10 counts ties "
            f"within {scale.TIE_EPSILON:g}; 'in k' = share of the exact top-10 among all k hits; the semantic rows "
            f"re-rank by float vectors (oversample {settings.KB_KNN_RESCORE_OVERSAMPLE:g}) as the API does; "
            "'int8 only' is the same body without rescore_vector)"
        )
        return rows

    def write_summary(self, summary: list) -> None:
        default = self.default_factor
        self.stdout.write("\n== Summary ==")
        self.stdout.write(
            f"{'chunks':>10} {'state':<7}{'chunks/s':>9}{'store MB':>10}{'segs':>5}{'hybrid p50/p95':>16}"
            f"{'keyword p50/p95':>17}{'semantic p50/p95':>18}  recall@10 by factor (semantic p50 ms)"
        )
        for size, state, growth, footprint, rows in summary:
            hybrid, keyword, semantic = rows[("hybrid", default)], rows["keyword"], rows[("semantic", default)]
            by_factor = ", ".join(
                f"{factor:g}: {_fmt(row.recall[0], '.3f', 0)} ({_fmt(row.ms(0.5), '.1f', 0)})"
                for factor, row in ((factor, rows[("semantic", factor)]) for factor in self.factors)
            )
            self.stdout.write(
                f"{size:>10,} {state:<7}{growth.rate:>9,.0f}{footprint['store_mb']:>10,.1f}{footprint['segments']:>5}"
                f"{self._pair(hybrid):>16}{self._pair(keyword):>17}{self._pair(semantic):>18}  {by_factor}"
            )
        live = [entry for entry in summary if entry[1] == "live"]
        self.write_goals(live[0], live[-1])

    @staticmethod
    def _pair(row: scale.Row) -> str:
        return f"{_fmt(row.ms(0.5), '.1f', 0)}/{_fmt(row.ms(0.95), '.1f', 0)}"

    def write_goals(self, first: tuple, last: tuple) -> None:
        default, size, rows = self.default_factor, last[0], last[4]
        recall = rows[("semantic", default)].recall[0]
        self.stdout.write(f"goal recall@10 >= {RECALL_GOAL} at the default factor {default:g}, {size:,} chunks: "
                          f"{recall:.3f} {'met' if recall >= RECALL_GOAL else 'NOT met'}")
        enough = [factor for factor in self.factors if rows[("semantic", factor)].recall[0] >= RECALL_GOAL]
        if enough:
            semantic, hybrid = rows[("semantic", enough[0])], rows[("hybrid", enough[0])]
            self.stdout.write(
                f"  smallest measured factor reaching it: {enough[0]:g} (num_candidates {semantic.candidates}); p50 "
                f"vs the default: semantic {semantic.ms(0.5) - rows[('semantic', default)].ms(0.5):+.1f} ms, "
                f"hybrid {hybrid.ms(0.5) - rows[('hybrid', default)].ms(0.5):+.1f} ms")
        else:
            self.stdout.write(f"  no measured factor reaches it (largest {self.factors[-1]:g}: "
                              f"{rows[('semantic', self.factors[-1])].recall[0]:.3f})")
        p95 = rows[("hybrid", default)].ms(0.95)
        self.stdout.write(f"goal hybrid p95 <= {P95_GOAL_MS:g} ms at {size:,} chunks: {p95:.1f} ms "
                          f"{'met' if p95 <= P95_GOAL_MS else 'NOT met'}")
        for key in (("hybrid", default), "keyword", ("semantic", default)):
            growth = last[4][key].ms(0.5) / first[4][key].ms(0.5)
            mode = key if isinstance(key, str) else key[0]
            self.stdout.write(f"goal {mode} p50 growth < {GROWTH_GOAL:g}x from {first[0]:,} to {size:,}: "
                              f"{growth:.2f}x {'met' if growth < GROWTH_GOAL else 'NOT met'}")
