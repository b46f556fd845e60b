"""Syncing a url source: the crawler (`ingestion.crawling`) feeding the ingestion pipeline.

The crawl is asyncio; the pipeline is the job thread's synchronous Django code. The crawl runs in
a thread of its own with its own event loop and hands every page to the job thread through a
bounded `queue.Queue`: crawling overlaps extraction, embedding and indexing, and a crawl never
runs far ahead of the pipeline (when the queue is full the crawler's workers wait). Only the job
thread touches the ORM; the crawl thread reads stored page bodies from the object store.

What each reported page does:
- 200: a `RawItem` into `IngestionRunner.take` (so the sha256 skip still saves the embedding
  for servers without validators); its ETag / Last-Modified are kept in `Document.metadata`.
- 304: unchanged, counted as skipped; nothing is extracted or embedded.
- 404 / 410: the document is retired (chunks, unreferenced bytes, row).
- 0: the reason is recorded on the document for that URL (created if new, so the refusal is
  visible). A refusal (SSRF guard, robots.txt, out-of-scope redirect) also takes the page's chunks
  out of the index: what answers at that URL is no longer allowed content. A failure (timeout,
  too large, HTTP 500) leaves the last indexed version searchable until a later sync settles it.

After the crawl, documents it did not report (no longer linked, or renamed by a redirect) are
retired too, but only when the crawl saw the whole site: it finished on its own (not stopped,
not cut by max_pages) and no fetch failed in a way that may have hidden links (timeouts, 5xx,
connection errors). Deleting on partial knowledge would empty the index during an outage.

Cancel and lease loss are noticed at every page (and while waiting for one): the crawl thread is
stopped and joined, then the exception goes on to `JobRunner`, which records the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time

from django.utils import timezone

from ingestion.crawling import CrawlStats, FetchedPage, KnownPage, crawl
from ingestion.pipeline import IngestionRunner, RawItem, remove_unreferenced_objects
from knowledge.models import Document, DocumentStatus, Source
from knowledge.storage import StorageError, get_object_store
from search.indexer import delete_document_chunks

logger = logging.getLogger(__name__)

#: Pages waiting for the pipeline; small enough that a stopped job wastes little crawling.
QUEUE_SIZE = 64
#: How often the job thread looks at cancel / lease while no page arrives.
POLL_SECONDS = 0.25
#: Progress rows are written at most this often for pages that do not reach a batch boundary.
PROGRESS_SECONDS = 0.5
#: Seconds to wait for the crawl thread after asking it to stop.
STOP_TIMEOUT = 10.0
#: Failures that say nothing about the page's links being gone: retirement may go ahead.
SETTLED_FAILURES = ("unsupported content type", "page larger than", "more than", "redirect without", "HTTP 4")
RETIRE_BATCH = 500

_END = object()


def crawl_counters() -> dict:
    """The `crawl` part of a job's payload (and of `job_state`): pages discovered, fetched (200),
    unchanged (304 or same sha256), indexed, failed, refused, gone (404/410), retired documents."""
    return {
        "discovered": 0,
        "fetched": 0,
        "unchanged": 0,
        "indexed": 0,
        "failed": 0,
        "refused": 0,
        "gone": 0,
        "retired": 0,
    }


class CrawlThread(threading.Thread):
    """`crawl()` on its own event loop; reported pages go to `pages`, then `_END`."""

    def __init__(self, config: dict, known: dict[str, KnownPage], object_keys: dict[str, str]) -> None:
        super().__init__(daemon=True, name="crawl")
        self.config = config
        self.known = known
        self.object_keys = object_keys
        self.pages: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.stopping = threading.Event()
        self.stats = CrawlStats()
        self.error: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task | None = None
        self.store = get_object_store()

    def run(self) -> None:
        try:
            asyncio.run(self.main())
        except BaseException as exc:  # handed to the job thread, which raises it there
            self.error = exc
        finally:
            self.offer(_END)

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        if self.stopping.is_set():
            return
        await crawl(
            self.config,
            self.known,
            self.hand_over,
            should_stop=self.stopping.is_set,
            known_body=self.known_body,
            stats=self.stats,
        )

    async def hand_over(self, page: FetchedPage) -> None:
        # Waiting on a full queue must not block the event loop: the other workers keep fetching.
        while not self.stopping.is_set():
            try:
                self.pages.put_nowait(page)
                return
            except queue.Full:
                await asyncio.sleep(0.005)

    def offer(self, item: object) -> None:
        while not self.stopping.is_set():
            try:
                self.pages.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    async def known_body(self, url: str, known: KnownPage) -> bytes | None:
        key = self.object_keys.get(url)
        if not key:
            return None
        try:
            return await asyncio.to_thread(self.store.get, key)
        except StorageError:  # links of this page are not followed this time; the page itself stays
            return None

    def stop(self) -> None:
        """Stop crawling now (in-flight fetches are abandoned) and wait for the thread."""
        self.stopping.set()
        loop, task = self.loop, self.task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop already closed: the crawl is over
                pass
        self.join(STOP_TIMEOUT)
        if self.is_alive():
            logger.warning("crawl thread did not stop within %s s", STOP_TIMEOUT)


class UrlSourceSync:
    """One sync of a url source inside an ingestion job (see the module docstring)."""

    def __init__(self, runner: IngestionRunner, source: Source, embedder) -> None:
        self.runner = runner
        self.job = runner.job
        self.source = source
        self.embedder = embedder
        self.config = source.config
        self.max_pages = int(self.config.get("max_pages", 500))
        self.reported: set[str] = set()
        self.gone: list[str] = []
        self.links_may_be_hidden = False
        self.changed_index = False
        self.last_saved = 0.0

    # -- run -------------------------------------------------------------------------------
    def run(self) -> None:
        known, object_keys = self.load_known()
        thread = CrawlThread(self.config, known, object_keys)
        self.counters = crawl_counters()
        self.job.payload = {**self.job.payload, "crawl": self.counters}
        self.thread = thread
        thread.start()
        try:
            self.consume()
        except BaseException:
            thread.stop()
            raise
        thread.join()
        if thread.error is not None:
            raise thread.error
        self.runner.flush(self.embedder)
        self.runner.wait_for_indexing()  # retirement and the final counters see every batch written
        self.retire_gone()
        if self.saw_whole_site(thread.stats):
            self.retire_unreported()
        if self.changed_index:
            self.job.kb.bump_generation()
        self.job.total = self.processed()
        self.save_progress(force=True)

    def load_known(self) -> tuple[dict[str, KnownPage], dict[str, str]]:
        """Validators and stored bytes of the pages indexed at the previous sync (from the
        runner's documents by key, loaded once per run)."""
        known: dict[str, KnownPage] = {}
        object_keys: dict[str, str] = {}
        for key, document in self.runner.known.items():
            if document.status != DocumentStatus.INDEXED:
                continue  # a failed page is fetched in full again
            metadata = document.metadata or {}
            known[key] = KnownPage(
                etag=metadata.get("etag", ""), last_modified=metadata.get("last_modified", ""), sha256=document.sha256
            )
            if document.object_key:
                object_keys[key] = document.object_key
        return known, object_keys

    def document(self, key: str) -> Document:
        """The runner's document for this URL; a new one is saved by `record_failure`."""
        document = self.runner.known.get(key)
        if document is None:
            document = self.runner.known[key] = Document(source=self.source, key=key)
        return document

    def consume(self) -> None:
        while True:
            try:
                page = self.thread.pages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self.runner.check()
                self.save_progress()
                continue
            if page is _END:
                return
            self.runner.check()
            self.take_page(page)
            self.save_progress()

    # -- pages -----------------------------------------------------------------------------
    def take_page(self, page: FetchedPage) -> None:
        key = page.url[:2000]
        self.reported.add(key)
        if page.status == 200:
            self.counters["fetched"] += 1
            metadata = {"etag": page.etag, "last_modified": page.last_modified}
            item = RawItem(
                key=key, data=page.content, content_type=page.content_type, title=page.title_hint, metadata=metadata
            )
            self.runner.take(self.source, item, self.embedder)
        elif page.status == 304:
            self.job.skipped += 1
            self.keep_validators(key, page)
        elif page.status in (404, 410):
            self.counters["gone"] += 1
            self.gone.append(key)
        else:
            self.record_refusal_or_failure(key, page)

    def keep_validators(self, key: str, page: FetchedPage) -> None:
        document = self.runner.known.get(key)
        fresh = {"etag": page.etag, "last_modified": page.last_modified}
        if document is None or document.pk is None:
            return
        if any(document.metadata.get(name, "") != value for name, value in fresh.items()):
            document.metadata = {**document.metadata, **fresh}
            Document.objects.filter(pk=document.pk).update(metadata=document.metadata, updated_at=timezone.now())

    def record_refusal_or_failure(self, key: str, page: FetchedPage) -> None:
        document = self.document(key)
        if page.refused:
            self.counters["refused"] += 1
            if document.pk is not None and document.chunk_count:
                delete_document_chunks([document.pk])
                document.chunk_count = 0
                Document.objects.filter(pk=document.pk).update(chunk_count=0)
                self.changed_index = True
        elif not page.error.startswith(SETTLED_FAILURES):
            self.links_may_be_hidden = True
        self.runner.record_failure(document, key, page.error or f"HTTP status {page.status}")

    # -- retirement ------------------------------------------------------------------------
    def saw_whole_site(self, stats: CrawlStats) -> bool:
        return not stats.truncated and not self.links_may_be_hidden and not self.thread.stopping.is_set()

    def retire_gone(self) -> None:
        self.retire([self.runner.known[key] for key in self.gone if key in self.runner.known])

    def retire_unreported(self) -> None:
        self.retire([doc for key, doc in self.runner.known.items() if key not in self.reported])

    def retire(self, documents: list[Document]) -> None:
        """Chunks out of the index first (search never returns them), then bytes, then rows."""
        documents = [doc for doc in documents if doc.pk is not None]
        for start in range(0, len(documents), RETIRE_BATCH):
            batch = documents[start : start + RETIRE_BATCH]
            ids = [doc.pk for doc in batch]
            delete_document_chunks(ids)
            self.changed_index = True
            remove_unreferenced_objects({doc.object_key for doc in batch}, exclude_documents=ids)
            Document.objects.filter(pk__in=ids).delete()
            for doc in batch:
                self.runner.known.pop(doc.key, None)
            self.counters["retired"] += len(batch)

    # -- progress --------------------------------------------------------------------------
    def processed(self) -> int:
        return self.job.done + self.job.failed + self.job.skipped + len(self.runner.pending)

    def save_progress(self, *, force: bool = False) -> None:
        stats = self.thread.stats
        self.counters.update(
            discovered=stats.discovered,
            unchanged=self.job.skipped,
            indexed=self.job.done,
            failed=self.job.failed,
        )
        self.job.total = max(min(stats.discovered, self.max_pages), self.processed())
        now = time.monotonic()
        if force or now - self.last_saved >= PROGRESS_SECONDS:
            self.last_saved = now
            self.runner.save_progress()


def crawl_source(runner: IngestionRunner, source: Source, embedder) -> None:
    """Crawl a url source and feed its pages through the runner's pipeline (the sync job body)."""
    UrlSourceSync(runner, source, embedder).run()
