"""The corpus and the measuring behind `manage.py bench_scale` (how search cost grows with the index).

One alias (`<KB_ES_INDEX>_scale`) grows through the requested sizes; at each size the command
measures the latency of the searches the API runs (`search.query.search`) and the recall of the
kNN side against an exact brute-force search over the same vectors.

The corpus is synthetic and deterministic (one seed): a vocabulary of made-up words with
Zipf-distributed frequencies, documents of 1-8 chunks (a title of 3-8 words, contents of 60-150
words each), four knowledge bases (one holds 70 % of the chunks: searches filter on it) with a few
sources and tags each, and vectors from the `hashing` embedder (see `embed` for the variants). A
worker process generates and embeds the next batches while threads of this one write through
`bulk_upsert`, several calls in flight as several ingestion workers would. The vectors are kept
in memory as float32 (what Elasticsearch stores), so the exact top-10 is one matrix product.
"""

import multiprocessing
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
from django.conf import settings
from django.test import override_settings

from bench.measuring import percentile
from knowledge.embedders import HashingEmbedder, chunk_embedding_text
from search.client import SearchError, SearchUnavailable, get_client
from search.indexer import bulk_upsert
from search.query import SearchRequest, msearch_body, search, search_bodies

KBS = ("scale-main", "scale-b", "scale-c", "scale-d")
KB_SHARES = (0.70, 0.15, 0.10, 0.05)
SEARCHED_KB = KBS[0]
SOURCES_PER_KB = 5
TAGS = ("guide", "faq", "policy", "howto", "release", "internal")
DIMS = HashingEmbedder.dimensions
#: Query words skip the most frequent ranks: those behave like stop words in every chunk.
QUERY_SKIP_RANKS = 50
#: Two cosines closer than this are a tie: an approximate hit that ties the exact 10th is correct.
TIE_EPSILON = 1e-5
VECTORS = ("rotated", "hashing", "latent")
#: Dimensions of the `latent` vectors' underlying space, and the share of their norm that is noise.
LATENT_DIMS = 32
LATENT_NOISE = 0.1


@dataclass
class Corpus:
    """The vocabulary (most frequent first), the Zipf probabilities of its words and their sums,
    and how texts become vectors (`embed`)."""

    words: list[str]
    probabilities: np.ndarray
    cumulative: np.ndarray
    seed: int
    vectors: str = "rotated"
    #: `rotated`: a fixed random orthogonal matrix (DIMS x DIMS); `latent`: LATENT_DIMS x DIMS.
    rotation: np.ndarray | None = None
    #: `latent`: each word's point in the latent space, weighted by its inverse frequency.
    word_points: np.ndarray | None = None


def embed(corpus: Corpus, texts: list[str], word_ids: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Float32 unit vectors of the texts (whose words are `word_ids`), as `corpus.vectors` says:

    - `hashing`: the hashing embedder's. Sparse and peaky (a few words own a dimension each), so
      int8 quantisation, which clips each dimension to a range set by the indexed vectors, mis-scores them;
    - `rotated` (default): the same times a fixed random rotation: the same cosines, but spread
      over every dimension like a model's. Still near-random points in 384 dimensions: a worst
      case for approximate search (high intrinsic dimension, little contrast best vs rest);
    - `latent`: not the hashing embedder: the sum of the words' points (weighted by log inverse
      frequency) in LATENT_DIMS dimensions, laid into DIMS by orthonormal rows, plus LATENT_NOISE
      of noise. Low intrinsic dimension, as a model's embeddings have: the easier end.
    """
    if corpus.vectors == "latent":
        latent = np.stack([corpus.word_points[ids].sum(axis=0) for ids in word_ids])
        latent /= np.linalg.norm(latent, axis=1, keepdims=True)
        noise = rng.standard_normal((len(texts), DIMS))
        vectors = latent @ corpus.rotation + LATENT_NOISE * noise / np.linalg.norm(noise, axis=1, keepdims=True)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    vectors = np.asarray(HashingEmbedder().embed(texts), dtype=np.float64)
    if corpus.rotation is not None:
        vectors = vectors @ corpus.rotation
    return vectors.astype(np.float32)


def make_corpus(*, size: int, seed: int, vectors: str = "rotated", exponent: float = 1.0) -> Corpus:
    """`size` distinct made-up words of 2-4 syllables, with frequency ~ 1 / rank**exponent."""
    rng = random.Random(seed)
    syllables = [onset + vowel for onset in [*"bcdfghjklmnprstvz", "br", "kr", "st", "tr", "sh", "ch"]
                 for vowel in ("a", "e", "i", "o", "u", "ai", "ou", "ea")]
    words: dict[str, None] = {}  # insertion-ordered and unique
    while len(words) < size:
        words["".join(rng.choices(syllables, k=rng.randint(2, 4))) + rng.choice("  nrlkms").strip()] = None
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    probabilities = weights / weights.sum()
    corpus = Corpus(words=list(words), probabilities=probabilities, cumulative=np.cumsum(probabilities), seed=seed,
                    vectors=vectors)
    numbers = np.random.default_rng([seed, DIMS])
    if vectors != "hashing":
        # QR of a Gaussian matrix, signs fixed by R's diagonal: a uniformly random rotation.
        q, r = np.linalg.qr(numbers.standard_normal((DIMS, DIMS)))
        corpus.rotation = q * np.sign(np.diag(r))
    if vectors == "latent":
        corpus.rotation = corpus.rotation[:LATENT_DIMS]
        points = numbers.standard_normal((size, LATENT_DIMS))
        corpus.word_points = points * np.log(1 / probabilities)[:, None]
    return corpus


@dataclass
class Batch:
    """Chunks `start .. start + len(chunks)` without their vectors, the vectors, the knowledge
    base of each chunk (index into KBS) and the seconds the worker spent making them."""

    start: int
    chunks: list[dict]
    vectors: np.ndarray
    kb_codes: np.ndarray
    seconds: float


def _words(corpus: Corpus, rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` word ids drawn by frequency."""
    picks = np.searchsorted(corpus.cumulative, rng.random(count) * corpus.cumulative[-1], side="right")
    return np.minimum(picks, len(corpus.words) - 1)


def _text(corpus: Corpus, ids: np.ndarray) -> str:
    return " ".join(corpus.words[i] for i in ids).capitalize()


def make_batch(corpus: Corpus, *, start: int, count: int) -> Batch:
    """Chunks `start .. start + count`: the same chunks for the same seed, whatever ran before.

    A document's id is the row of its first chunk, so chunk `<document>-<position>` is row
    `document + position`; documents never cross a batch (the last one may be cut short).
    """
    started = time.process_time()
    rng = np.random.default_rng([corpus.seed, start])
    chunks: list[dict] = []
    word_ids: list[np.ndarray] = []
    kb_codes = np.empty(count, dtype=np.int8)
    first = date(2019, 1, 1)
    while len(chunks) < count:
        document = start + len(chunks)
        kb = int(rng.choice(len(KBS), p=KB_SHARES))
        source = kb * 100 + int(rng.integers(1, SOURCES_PER_KB + 1))
        tags = [TAGS[i] for i in rng.choice(len(TAGS), size=int(rng.integers(0, 3)), replace=False)]
        title_ids = _words(corpus, rng, int(rng.integers(3, 9)))
        title = _text(corpus, title_ids)
        created = (first + timedelta(days=int(rng.integers(0, 2500)))).isoformat() + "T00:00:00Z"
        for position in range(min(int(rng.integers(1, 9)), count - len(chunks))):
            content_ids = _words(corpus, rng, int(rng.integers(60, 151)))
            word_ids.append(np.concatenate([title_ids, content_ids]))
            content = _text(corpus, content_ids) + "."
            kb_codes[len(chunks)] = kb
            chunks.append({"kb": KBS[kb], "source": source, "document": document, "position": position,
                           "title": title, "content": content, "tags": tags, "created": created})
    texts = [chunk_embedding_text(chunk["title"], chunk["content"]) for chunk in chunks]
    vectors = embed(corpus, texts, word_ids, rng)
    return Batch(start=start, chunks=chunks, vectors=vectors, kb_codes=kb_codes,
                 seconds=time.process_time() - started)


_worker_corpus: Corpus | None = None


def _make_in_worker(start: int, count: int) -> Batch:
    return make_batch(_worker_corpus, start=start, count=count)


class Producer:
    """Makes batches in one worker process (forked: it inherits the corpus), `ahead` batches in
    advance, handed out in order."""

    def __init__(self, corpus: Corpus, *, ahead: int = 2) -> None:
        global _worker_corpus
        _worker_corpus = corpus
        self.pool = multiprocessing.get_context("fork").Pool(1)
        self.ahead = ahead

    def batches(self, *, start: int, stop: int, size: int) -> Iterator[Batch]:
        pending: deque = deque()
        for first in range(start, stop, size):
            pending.append(self.pool.apply_async(_make_in_worker, (first, min(size, stop - first))))
            if len(pending) > self.ahead:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


@dataclass
class Store:
    """What the index holds, kept in memory for the exact search: vectors and knowledge bases."""

    vectors: np.ndarray
    kb_codes: np.ndarray
    count: int = 0

    @classmethod
    def room_for(cls, size: int) -> "Store":
        return cls(vectors=np.empty((size, DIMS), dtype=np.float32), kb_codes=np.empty(size, dtype=np.int8))


@dataclass
class Growth:
    """One increment: chunks added, wall seconds, the worker's CPU seconds, seconds waiting for it,
    seconds in `bulk_upsert` (summed over the calls in flight), in the final refresh, batches
    retried; then seconds until merges settled."""

    added: int
    wall: float = 0.0
    produce: float = 0.0
    wait: float = 0.0
    upsert: float = 0.0
    refresh: float = 0.0
    retries: int = 0
    settled: float = 0.0

    @property
    def rate(self) -> float:
        return self.added / self.wall if self.wall else 0.0


def _upsert(chunks: list[dict], *, attempts: int = 6) -> tuple[float, int]:
    """`bulk_upsert`, retried while Elasticsearch pushes back (429, timeouts): ids are deterministic,
    so a retried batch overwrites what got through. Returns its seconds and the retries."""
    started = time.perf_counter()
    for attempt in range(attempts):
        try:
            bulk_upsert(chunks, language="english", refresh=False)
            return time.perf_counter() - started, attempt
        except SearchUnavailable:
            if attempt == attempts - 1:
                raise
            time.sleep(2**attempt)
    return time.perf_counter() - started, attempts


def grow(store: Store, producer: Producer, *, target: int, batch: int, writers: int) -> Growth:
    """Index chunks `store.count .. target` with `writers` bulk_upsert calls in flight (as several
    ingestion workers would), then refresh once."""
    growth = Growth(added=target - store.count)
    started = waited = time.perf_counter()
    in_flight: deque = deque()

    def finish_oldest() -> None:
        seconds, retries = in_flight.popleft().result()
        growth.upsert += seconds
        growth.retries += retries

    with ThreadPoolExecutor(writers) as pool:
        for made in producer.batches(start=store.count, stop=target, size=batch):
            growth.wait += time.perf_counter() - waited
            growth.produce += made.seconds
            for chunk, vector in zip(made.chunks, made.vectors, strict=True):
                chunk["embedding"] = vector.tolist()
            in_flight.append(pool.submit(_upsert, made.chunks))
            end = made.start + len(made.chunks)
            store.vectors[made.start : end] = made.vectors
            store.kb_codes[made.start : end] = made.kb_codes
            store.count = end
            while len(in_flight) >= writers:
                finish_oldest()
            waited = time.perf_counter()
        while in_flight:
            finish_oldest()
    refreshing = time.perf_counter()
    get_client().options(request_timeout=600).indices.refresh(index=settings.KB_ES_INDEX)
    growth.refresh = time.perf_counter() - refreshing
    growth.wall = time.perf_counter() - started
    return growth


@dataclass
class Query:
    text: str
    vector: list[float]


def make_queries(corpus: Corpus, *, count: int, seed: int) -> list[Query]:
    """Queries of 2-5 words drawn by frequency, skipping the top ranks; vectors made now, not timed."""
    rng = np.random.default_rng([seed, 7])
    probabilities = corpus.probabilities[QUERY_SKIP_RANKS:] / corpus.probabilities[QUERY_SKIP_RANKS:].sum()
    word_ids = [QUERY_SKIP_RANKS + rng.choice(len(probabilities), size=int(rng.integers(2, 6)), replace=False,
                                              p=probabilities) for _ in range(count)]
    texts = [" ".join(corpus.words[i] for i in ids) for ids in word_ids]
    vectors = embed(corpus, texts, word_ids, rng)
    return [Query(text, vector.tolist()) for text, vector in zip(texts, vectors, strict=True)]


def request_for(query: Query, mode: str, *, collapse: bool = True) -> SearchRequest:
    return SearchRequest(query=query.text, kbs=[SEARCHED_KB], mode=mode, size=10, highlight=True,
                         collapse=collapse, languages={SEARCHED_KB: "english"})


@dataclass
class Row:
    """One kind of search at one candidates factor (None: the factor does not apply) and what
    measuring it found."""

    label: str
    run: Callable[[Query], object]
    factor: float | None = None
    candidates: int | None = None
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    recall: tuple[float, float, float] | None = None

    def ms(self, q: float) -> float | None:
        return percentile(self.latencies, q)


def _timed(row: Row, query: Query, *, own_factor: bool = False) -> float | None:
    """Milliseconds of one search (None when it failed), under the row's factor if `own_factor`
    (not from threads: `override_settings` swaps the settings of the whole process)."""
    if own_factor and row.factor is not None:
        with override_settings(KB_KNN_CANDIDATES_FACTOR=row.factor):
            return _timed(row, query)
    started = time.perf_counter()
    try:
        row.run(query)
    except (SearchUnavailable, SearchError):
        return None
    return (time.perf_counter() - started) * 1000


def measure(rows: list[Row], queries: list[Query], *, concurrency: int) -> float:
    """Run every query through every row, the rows taking turns query by query (in a rotating
    order), so a disturbance (a merge, a GC, another process) hits every row alike; record each
    search's wall time in ms.

    With concurrency > 1 the settings cannot change per search (threads share them): the rows
    take turns within one block per factor. Returns the searches per second over all blocks.
    """
    factors = list(dict.fromkeys(row.factor for row in rows if row.factor is not None))
    if concurrency <= 1:
        blocks = [(None, rows)]
    else:
        blocks = [(factor, [row for row in rows if row.factor in (factor, None)]) for factor in factors[:1]]
        blocks += [(factor, [row for row in rows if row.factor == factor]) for factor in factors[1:]]
    searches, seconds = 0, 0.0
    for factor, block in blocks:
        # Each query starts with a different row: the first search of a query vector pays for
        # reading its part of the graph from disk, the next ones find it in the page cache.
        tasks = [(row, query) for turn, query in enumerate(queries)
                 for row in block[turn % len(block):] + block[: turn % len(block)]]
        started = time.perf_counter()
        if factor is None:
            times = [_timed(row, query, own_factor=True) for row, query in tasks]
        else:
            with override_settings(KB_KNN_CANDIDATES_FACTOR=factor), ThreadPoolExecutor(concurrency) as pool:
                times = list(pool.map(lambda task: _timed(*task), tasks))
        seconds += time.perf_counter() - started
        searches += len(tasks)
        for (row, _), value in zip(tasks, times, strict=True):
            if value is None:
                row.errors += 1
            else:
                row.latencies.append(value)
    return searches / seconds if seconds else 0.0


def api_search(mode: str) -> Callable[[Query], object]:
    """What the API runs for a query: `search.query.search`, fusion and snippets included."""
    return lambda query: search(request_for(query, mode), query.vector)


def semantic_hits(*, rescore: bool = True) -> Callable[[Query], list[dict]]:
    """The kNN side's hits (k of them, best first) for the API's `_msearch` body; without `rescore`,
    the body loses `rescore_vector`, so the int8 graph alone ranks (a comparison)."""
    def run(query: Query) -> list[dict]:
        body = msearch_body(search_bodies(request_for(query, "semantic", collapse=False), query.vector))
        if not rescore:
            body[1]["knn"].pop("rescore_vector", None)
        response = get_client().msearch(index=settings.KB_ES_INDEX, searches=body)["responses"][0]
        if "error" in response:
            raise SearchError(str(response["error"])[:500])
        return response["hits"]["hits"]
    return run


def _row(hit: dict) -> int:
    document, position = hit["_id"].rsplit("-", 1)
    return int(document) + int(position)


def exact_scores(store: Store, queries: list[Query]) -> np.ndarray:
    """Cosine of every indexed chunk with every query (rows: chunks); -inf outside the searched kb."""
    matrix = np.asarray([query.vector for query in queries], dtype=np.float32)
    scores = store.vectors[: store.count] @ matrix.T
    scores[store.kb_codes[: store.count] != KBS.index(SEARCHED_KB)] = -np.inf
    return scores


def recall(scores: np.ndarray, queries: list[Query], hits_of: Callable[[Query], list[dict]],
           *, top: int = 10) -> tuple[float, float, float]:
    """Recall@top of `hits_of` against the exact ranking, as three means over the queries:

    - tie-aware: hits in the first `top` whose exact cosine reaches the exact `top`-th (minus
      TIE_EPSILON), as ann-benchmarks counts them;
    - strict: overlap of the first `top` ids with the exact top ids;
    - found in k: the same tie-aware count over every hit returned (k of them), capped at `top`.
      When it is well above recall, the candidates were found but ranked wrongly (int8 scores).
    """
    tie_aware, strict, found = [], [], []
    for column, query in enumerate(queries):
        column_scores = scores[:, column]
        exact = np.argpartition(-column_scores, top)[:top]
        threshold = column_scores[exact].min() - TIE_EPSILON
        rows = np.asarray([_row(hit) for hit in hits_of(query)], dtype=np.int64)
        good = column_scores[rows] >= threshold if len(rows) else np.zeros(0, dtype=bool)
        tie_aware.append(min(int(good[:top].sum()), top) / top)
        strict.append(len(set(rows[:top].tolist()) & set(exact.tolist())) / top)
        found.append(min(int(good.sum()), top) / top)
    return float(np.mean(tie_aware)), float(np.mean(strict)), float(np.mean(found))

