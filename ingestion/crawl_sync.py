"""Syncing a url source: the crawler (`ingestion.crawling`) feeding the ingestion pipeline.

The crawl is asyncio; the pipeline is the job thread's synchronous Django code. The crawl runs in
a child process (`CrawlProcess`) with its own event loop and hands every page to the job thread:
crawling overlaps extraction, embedding and indexing on another core (in a thread it would share
this process's GIL: at concurrency 16 the two took turns on one core), and a crawl never runs far
ahead of the pipeline (with QUEUE_SIZE pages unacknowledged the crawler's workers wait). Only the
job thread touches the ORM; the crawl process reads stored page bodies from the object store.

What each reported page does:
- 200: a `RawItem` into the runner's `take` (`ingestion.pipeline.SyncRunner`; so the sha256
  skip still saves the embedding for servers without validators); its ETag / Last-Modified and
  its links (up to REMEMBERED_LINKS) are kept in `Document.metadata`.
- 304: unchanged, counted as skipped; nothing is extracted or embedded, and no stored body is
  read when the page's links were remembered.
- 404 / 410: the document is retired (chunks, unreferenced bytes, row).
- 0: the reason is recorded on the document for that URL (created if new, so the refusal is
  visible). A refusal (SSRF guard, robots.txt, out-of-scope redirect) also takes the page's chunks
  out of the index: what answers at that URL is no longer allowed content. A failure (timeout,
  too large, HTTP 500) leaves the last indexed version searchable until a later sync settles it.

After the crawl, documents it did not report (no longer linked, or renamed by a redirect) are
retired too, but only when the crawl saw the whole site: it finished on its own (not stopped,
not cut by max_pages) and no fetch failed in a way that may have hidden links (timeouts, 5xx,
connection errors). Deleting on partial knowledge would empty the index during an outage.

Cancel and lease loss are noticed at every page (and while waiting for one): the crawl process is
stopped and joined, then the exception goes on to `JobRunner`, which records the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
import queue
import signal
import threading
import time
from typing import Protocol

from django.utils import timezone

from ingestion.crawling import CrawlStats, FetchedPage, KnownPage, crawl
from ingestion.fetching import RawItem
from ingestion.models import IngestionJob
from kbportal.claiming import TransientError
from knowledge.models import Document, DocumentStatus, Source
from knowledge.services import remove_unreferenced_objects
from knowledge.storage import StorageError, get_object_store
from search.indexer import delete_document_chunks

logger = logging.getLogger(__name__)

#: Pages waiting for the pipeline; small enough that a stopped job wastes little crawling.
QUEUE_SIZE = 64
#: How often the job thread looks at cancel / lease while no page arrives.
POLL_SECONDS = 0.25
#: Progress rows are written at most this often for pages that do not reach a batch boundary.
PROGRESS_SECONDS = 0.5
#: Seconds to wait for the crawl process after asking it to stop (then it is killed).
STOP_TIMEOUT = 10.0
#: Failures that say nothing about the page's links being gone: retirement may go ahead.
SETTLED_FAILURES = ("unsupported content type", "page larger than", "more than", "redirect without", "HTTP 4")
RETIRE_BATCH = 500
#: A page with more links than this does not keep them in its metadata: a 304 re-reads its body.
REMEMBERED_LINKS = 1000

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


class CrawlProcess:
    """`crawl()` in a child process forked for this sync; reported pages arrive in `pages`, then `_END`.

    Fetching and parsing run on another core than extraction, embedding and indexing instead of
    taking turns with them on this process's GIL. The child sends every page through a pipe, where
    a receiver thread takes it into `pages`; the job thread acknowledges each page it takes
    (`taken`), and the child never has more than QUEUE_SIZE pages unacknowledged, so the crawl
    does not run far ahead of the pipeline. Only the job thread touches the ORM; the child reads
    stored page bodies from the object store (for pages whose links were not remembered).
    """

    def __init__(self, config: dict, known: dict[str, KnownPage], object_keys: dict[str, str]) -> None:
        context = multiprocessing.get_context("fork")  # inherits settings and `known` as they are
        self.pages: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.stats = CrawlStats()
        self.error: BaseException | None = None
        self.receiving, child_sending = context.Pipe(duplex=False)
        child_control, self.control = context.Pipe(duplex=False)
        self.child_ends = (child_sending, child_control)
        self.process = context.Process(
            target=run_crawl_child,
            args=(config, known, object_keys, child_sending, child_control, (self.receiving, self.control)),
            name="crawl",
            daemon=True,
        )
        self.receiver = threading.Thread(target=self.receive, daemon=True, name="crawl-receiver")

    def start(self) -> None:
        self.process.start()
        for end in self.child_ends:
            end.close()
        self.receiver.start()

    def receive(self) -> None:
        """Receiver thread: pages from the child into `pages`, until the child's last word."""
        try:
            while True:
                kind, item, self.stats = self.receiving.recv()
                if kind == "end":
                    self.error = item
                    return
                self.pages.put(item)
        except (EOFError, OSError):
            if not self.stopping.is_set():
                self.process.join(STOP_TIMEOUT)
                exitcode = self.process.exitcode
                self.error = TransientError(f"the crawl process ended unexpectedly (exit code {exitcode})")
        finally:
            self.pages.put(_END)

    def taken(self) -> None:
        """Job thread: a page left `pages`, the child may send one more."""
        self.tell("taken")

    def tell(self, message: str) -> None:
        try:
            self.control.send(message)
        except OSError:  # the child is gone: nothing left to tell
            pass

    def join(self) -> None:
        self.process.join()
        self.receiver.join()

    def stop(self) -> None:
        """Stop crawling now (in-flight fetches are abandoned) and wait for the child to end."""
        self.stopping.set()
        self.tell("stop")
        self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            logger.warning("crawl process did not stop within %s s: killed", STOP_TIMEOUT)
            self.process.kill()
            self.process.join()
        self.receiver.join(STOP_TIMEOUT)


def run_crawl_child(config, known, object_keys, sending, control, parent_ends) -> None:
    """The crawl process: crawl, send every page, then ("end", error or None, stats)."""
    # Not the worker's handlers: the job process decides when the crawl stops (a Ctrl-C reaching
    # the whole process group is the worker's warm shutdown, which stops the job and then us).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for end in parent_ends:
        end.close()  # so a job process that dies closes the pipes, and this process stops
    child = CrawlChild(config, known, object_keys, sending, control)
    error: BaseException | None = None
    try:
        asyncio.run(child.main())
    except BaseException as exc:  # handed to the job thread, which raises it there
        error = exc
    try:
        sending.send(("end", error, child.stats))
    except (pickle.PicklingError, TypeError, AttributeError):
        sending.send(("end", RuntimeError(f"{type(error).__name__}: {error}"), child.stats))
    except OSError:  # the job is gone
        pass


class CrawlChild:
    """Inside the crawl process: `crawl()` on an event loop that also listens to the job's messages."""

    def __init__(self, config, known, object_keys, sending, control) -> None:
        self.config = config
        self.known = known
        self.object_keys = object_keys
        self.sending = sending
        self.control = control
        self.stopping = False
        self.stats = CrawlStats()
        self.slots: asyncio.Semaphore | None = None
        self.task: asyncio.Task | None = None
        self.store = get_object_store.__wrapped__()  # not the parent's: no shared connections

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(QUEUE_SIZE)
        self.task = asyncio.current_task()
        loop.add_reader(self.control.fileno(), self.on_message)
        try:
            await crawl(
                self.config,
                self.known,
                self.hand_over,
                should_stop=lambda: self.stopping,
                known_body=self.known_body,
                stats=self.stats,
            )
        finally:
            loop.remove_reader(self.control.fileno())

    def on_message(self) -> None:
        try:
            while self.control.poll():
                if self.control.recv() == "taken":
                    self.slots.release()
                else:
                    self.halt()
        except (EOFError, OSError):  # the job process went away
            self.halt()

    def halt(self) -> None:
        self.stopping = True
        self.task.cancel()

    async def hand_over(self, page: FetchedPage) -> None:
        # A worker waits for a free slot without blocking the event loop: the others keep fetching.
        # The send itself is quick: the job's receiver thread drains the pipe as pages come.
        await self.slots.acquire()
        self.sending.send(("page", page, self.stats))

    async def known_body(self, url: str, known: KnownPage) -> bytes | None:
        key = self.object_keys.get(url)
        if not key:
            return None
        try:
            return await asyncio.to_thread(self.store.get, key)
        except StorageError:  # links of this page are not followed this time; the page itself stays
            return None


class CrawlConsumer(Protocol):
    """What a crawl needs of the sync job it feeds (`ingestion.pipeline.SyncRunner`)."""

    job: IngestionJob
    #: The source's documents by key, loaded once per run.
    known: dict[str, Document]
    #: Documents taken and not yet flushed.
    pending: list

    def take(self, source: Source, item: RawItem, embedder) -> None: ...
    def flush(self, embedder) -> None: ...
    def wait_for_indexing(self) -> None: ...
    def check(self) -> None: ...
    def record_failure(self, document: Document | None, key: str, reason: str) -> None: ...
    def save_progress(self) -> None: ...


class UrlSourceSync:
    """One sync of a url source inside an ingestion job (see the module docstring)."""

    def __init__(self, runner: CrawlConsumer, source: Source, embedder) -> None:
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
        crawler = CrawlProcess(self.config, known, object_keys)
        self.counters = crawl_counters()
        self.job.payload = {**self.job.payload, "crawl": self.counters}
        self.crawler = crawler
        crawler.start()
        try:
            self.consume()
        except BaseException:
            crawler.stop()
            raise
        crawler.join()
        if crawler.error is not None:
            raise crawler.error
        self.runner.flush(self.embedder)
        self.runner.wait_for_indexing()  # retirement and the final counters see every batch written
        self.retire_gone()
        if self.saw_whole_site(crawler.stats):
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
                etag=metadata.get("etag", ""),
                last_modified=metadata.get("last_modified", ""),
                sha256=document.sha256,
                links=metadata.get("links"),
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
                page = self.crawler.pages.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self.runner.check()
                self.save_progress()
                continue
            if page is _END:
                return
            self.crawler.taken()
            self.runner.check()
            self.take_page(page)
            self.save_progress()

    # -- pages -----------------------------------------------------------------------------
    def take_page(self, page: FetchedPage) -> None:
        key = page.url[:2000]
        self.reported.add(key)
        if page.status == 200:
            self.counters["fetched"] += 1
            links = page.links if len(page.links) <= REMEMBERED_LINKS else None
            metadata = {"etag": page.etag, "last_modified": page.last_modified, "links": links}
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
        return not stats.truncated and not self.links_may_be_hidden and not self.crawler.stopping.is_set()

    def retire_gone(self) -> None:
        self.retire([self.runner.known[key] for key in self.gone if key in self.runner.known])

    def retire_unreported(self) -> None:
        self.retire([doc for key, doc in self.runner.known.items() if key not in self.reported])

    def retire(self, documents: list[Document]) -> None:
        """Chunks out of the index first (search never returns them), then rows, then the bytes
        no other document references."""
        documents = [doc for doc in documents if doc.pk is not None]
        for start in range(0, len(documents), RETIRE_BATCH):
            batch = documents[start : start + RETIRE_BATCH]
            ids = [doc.pk for doc in batch]
            delete_document_chunks(ids)
            self.changed_index = True
            Document.objects.filter(pk__in=ids).delete()
            remove_unreferenced_objects(keys={doc.object_key for doc in batch})
            for doc in batch:
                self.runner.known.pop(doc.key, None)
            self.counters["retired"] += len(batch)

    # -- progress --------------------------------------------------------------------------
    def processed(self) -> int:
        return self.job.done + self.job.failed + self.job.skipped + len(self.runner.pending)

    def save_progress(self, *, force: bool = False) -> None:
        stats = self.crawler.stats
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


def crawl_source(runner: CrawlConsumer, source: Source, embedder) -> None:
    """Crawl a url source and feed its pages through the runner's pipeline (the sync job body)."""
    UrlSourceSync(runner, source, embedder).run()
