"""The web crawler engine: discover and fetch a URL source's pages, politely and safely.

`crawl()` walks breadth-first from the start URLs (and, with `use_sitemap`, the site's sitemaps)
and hands every URL it takes from the frontier to `on_page` exactly once, as a `FetchedPage`:
200 with the body, 304 when the validators in `known` still hold, 404/410 when the page is gone,
or status 0 with a human `error` (timeout, too large, refused by the SSRF guard, disallowed by
robots.txt, ...). It does not extract, store or index anything: the pipeline does that.

Scope decisions (what users of the source form should expect):
- allowed_domains: a URL is in scope when its host equals an entry or is a subdomain of it
  ("example.com" admits "docs.example.com"); any port.
- include / exclude are GLOB patterns (fnmatch: `*` also crosses "/") matched against the path
  plus query ("/docs/*", "*.pdf", "*?print=*"); a pattern with no wildcard is a path prefix
  ("/docs/"). Exclude wins. Start URLs bypass include/exclude (they were named explicitly) but not
  allowed_domains; discovered links, sitemap entries and redirect targets obey all three.
- max_depth counts link hops from a start URL (start URLs and sitemap entries are depth 0).
- max_pages caps the URLs taken from the frontier, so `on_page` is called at most max_pages
  times (failures and robots refusals included). Redirect hops inside one fetch do not count.
- robots.txt (agent "KBPortalBot") is fetched once per origin; a disallowed URL is not requested
  but reported with status 0 and error "disallowed by robots.txt", so the pipeline can retire a
  document it indexed before. Only a 200 robots.txt restricts; 4xx/5xx/failure means no rules.
  Crawl-delay applies when larger than the source's delay (capped at 60 s).
- Politeness: requests to one host:port start at least `delay` seconds apart; with no delay, the
  only bound is `concurrency` (simultaneous fetches across all hosts).
- Canonical: `<link rel=canonical>` inside allowed_domains renames the page; if the canonical
  URL was already fetched the duplicate is not reported (its links are still followed).
- Links come from <a href> and <area href>, resolved against <base href>; `<meta name=robots
  content=nofollow>` stops link extraction. Links to obvious media/binary files are skipped
  before fetching; fetched bodies must be HTML, PDF, plain text or Markdown (DOCUMENT_TYPES).
- 304 pages have no body to take links from: their links are `KnownPage.links` (remembered from
  the previous fetch, see `FetchedPage.links`), else parsed from `known_body` (returns the stored
  raw bytes of a known page); with neither, they are not followed.
"""

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from protego import Protego

from ingestion.crawl_parsing import (
    SITEMAP_MAX_BYTES,
    Scope,
    media_type,
    parse_html_soon,
    parse_sitemap,
    sniff_type,
)
from ingestion.netguard import AddressRefused, GuardedTransport
from ingestion.urlnorm import normalize_url

USER_AGENT = "KBPortalBot/1.0"
ROBOTS_AGENT = "KBPortalBot"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
HTML_TYPES = {"text/html", "application/xhtml+xml"}
DOCUMENT_TYPES = HTML_TYPES | {"application/pdf", "text/plain", "text/markdown", "text/x-markdown"}
SKIP_EXTENSIONS = {
    *(".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".ico", ".bmp", ".tif", ".tiff", ".avif"),
    *(".mp3", ".mp4", ".m4a", ".avi", ".mov", ".mkv", ".webm", ".wav", ".ogg"),
    *(".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".exe", ".dmg", ".iso", ".bin", ".msi"),
    *(".apk", ".deb", ".rpm", ".css", ".js", ".woff", ".woff2", ".ttf", ".eot"),
}
ROBOTS_MAX_BYTES = 500_000
MAX_SITEMAPS = 50
MAX_CRAWL_DELAY = 60.0
ROBOTS_DISALLOWED = "disallowed by robots.txt"
DRAIN_MAX_BYTES = 64 * 1024  # a non-200 body up to this size is read so its connection is kept
PAGE_DEADLINE_FACTOR = 3  # a whole hop (connect + headers + body) may take this many timeouts


@dataclass
class KnownPage:
    """What the database remembers about a URL from the previous sync."""

    etag: str = ""
    last_modified: str = ""
    sha256: str = ""
    #: The page's links at its previous fetch (`FetchedPage.links`), None if not remembered: a 304
    #: then follows these without reading the stored body.
    links: list[str] | None = None


@dataclass
class FetchedPage:
    url: str  # normalised final URL (after redirects, canonical applied)
    status: int  # 200, 304, 404, 410, or 0 for refused/failed
    content: bytes = b""
    content_type: str = ""
    etag: str = ""
    last_modified: str = ""
    title_hint: str = ""
    error: str = ""  # human reason for status 0
    #: Links found on a 200 page (normalised, in scope or not): remember them in
    #: `KnownPage.links` so a later 304 needs no stored body.
    links: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """True when the crawler chose not to fetch (SSRF guard, scope, robots.txt), not a failure."""
        return self.status == 0 and (self.error.startswith("refused") or self.error == ROBOTS_DISALLOWED)


@dataclass
class CrawlStats:
    discovered: int = 0  # distinct in-scope URLs put on the frontier
    fetched: int = 0  # 200s
    not_modified: int = 0  # 304s
    gone: int = 0  # 404/410
    failed: int = 0  # status 0 other than refusals
    refused: int = 0  # SSRF guard, out-of-scope redirect, robots.txt
    seconds: float = 0.0
    truncated: bool = False  # max_pages left URLs of the frontier unvisited


class FetchError(Exception):
    """One fetch ended without a usable response; str() is the reason reported to the pipeline."""


def default_client(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=transport, headers={"User-Agent": USER_AGENT}, follow_redirects=False, trust_env=False
    )


class Crawler:
    """State of one crawl run; use `crawl()`."""

    def __init__(self, config, known, on_page, should_stop, known_body, client: httpx.AsyncClient) -> None:
        self.config = config
        self.known = known
        self.on_page = on_page
        self.should_stop = should_stop
        self.known_body = known_body
        self.client = client
        self.scope = Scope(config)
        self.max_depth = int(config.get("max_depth", 3))
        self.max_pages = int(config.get("max_pages", 500))
        self.concurrency = int(config.get("concurrency", 8))
        self.delay = float(config.get("delay") or 0.0)
        self.timeout = float(settings.KB_CRAWLER_TIMEOUT)
        self.timeouts = httpx.Timeout(self.timeout)
        self.max_bytes = int(settings.KB_CRAWLER_MAX_BYTES)
        self.stats = CrawlStats()
        self.frontier: asyncio.PriorityQueue = asyncio.PriorityQueue()
        self.order = itertools.count()
        self.seen: set[str] = set()  # ever put on the frontier
        self.claimed: set[str] = set()  # fetched (or being fetched) under this name
        self.taken = 0
        self.robots: dict[str, asyncio.Task] = {}
        self.host_delay: dict[str, float] = {}
        self.host_lock: dict[str, asyncio.Lock] = {}
        self.host_next: dict[str, float] = {}

    # Frontier.

    def enqueue(self, url: str | None, depth: int, *, seed: bool = False) -> None:
        if not url or url in self.seen or not self.scope.allows(url, seed=seed):
            return
        suffix = urlsplit(url).path.rsplit("/", 1)[-1].lower()
        if "." in suffix and "." + suffix.rsplit(".", 1)[-1] in SKIP_EXTENSIONS:
            return
        self.seen.add(url)
        self.stats.discovered += 1
        self.frontier.put_nowait((depth, next(self.order), url, seed))

    async def run(self) -> None:
        for url in self.config.get("start_urls") or []:
            self.enqueue(normalize_url(url), 0, seed=True)
        try:
            if self.config.get("use_sitemap"):
                await self.seed_from_sitemaps()
            async with asyncio.TaskGroup() as group:
                workers = [group.create_task(self.worker()) for _ in range(self.concurrency)]
                await self.frontier.join()
                for worker in workers:
                    worker.cancel()
        except BaseExceptionGroup as failure:
            # Surface the callback's (or our) exception itself, not a one-item group.
            raise failure.exceptions[0]
        finally:
            for task in self.robots.values():
                task.cancel()

    async def worker(self) -> None:
        while True:
            depth, _, url, seed = await self.frontier.get()
            try:
                if self.should_stop() or url in self.claimed:
                    continue
                if self.taken >= self.max_pages:
                    self.stats.truncated = True
                    continue
                self.claimed.add(url)
                self.taken += 1
                await self.visit(url, depth, seed)
            finally:
                self.frontier.task_done()

    async def visit(self, url: str, depth: int, seed: bool) -> None:
        page, links = await self.fetch_page(url, seed)
        if page is not None:
            self.count(page)
            await self.on_page(page)
        if depth < self.max_depth and not self.should_stop():
            for link in links:
                self.enqueue(link, depth + 1)

    def count(self, page: FetchedPage) -> None:
        if page.status == 200:
            self.stats.fetched += 1
        elif page.status == 304:
            self.stats.not_modified += 1
        elif page.status in (404, 410):
            self.stats.gone += 1
        elif page.refused:
            self.stats.refused += 1
        else:
            self.stats.failed += 1

    # One page, following redirects by hand so every hop is scope-, robots- and SSRF-checked.

    async def fetch_page(self, url: str, seed: bool) -> tuple[FetchedPage | None, list[str]]:
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            if not await self.robots_allow(current):
                return FetchedPage(url=current, status=0, error=ROBOTS_DISALLOWED), []
            try:
                response, content = await self.request(current, self.conditional_headers(current), document=True)
            except FetchError as exc:
                return FetchedPage(url=current, status=0, error=str(exc)), []
            if response.status_code not in REDIRECT_STATUSES:
                return await self.page_from(current, response, content)
            if hop == MAX_REDIRECTS:
                break
            target = normalize_url(response.headers.get("location", ""), current)
            if target is None:
                return FetchedPage(url=current, status=0, error="redirect without a usable http(s) Location"), []
            if not self.scope.allows(target, seed=seed):
                return FetchedPage(url=current, status=0, error=f"refused: redirect to out-of-scope URL {target}"), []
            if target in self.claimed:
                return None, []  # reported under its own name
            self.claimed.add(target)
            current = target
        return FetchedPage(url=current, status=0, error=f"more than {MAX_REDIRECTS} redirects"), []

    def conditional_headers(self, url: str) -> dict[str, str]:
        known = self.known.get(url)
        headers = {}
        if known and known.etag:
            headers["If-None-Match"] = known.etag
        if known and known.last_modified:
            headers["If-Modified-Since"] = known.last_modified
        return headers

    async def page_from(
        self, url: str, response: httpx.Response, content: bytes
    ) -> tuple[FetchedPage | None, list[str]]:
        status = response.status_code
        etag = response.headers.get("etag", "")
        last_modified = response.headers.get("last-modified", "")
        if status == 304:
            known = self.known.get(url) or KnownPage()
            page = FetchedPage(url, 304, etag=etag or known.etag, last_modified=last_modified or known.last_modified)
            return page, await self.known_links(url, known)
        if status in (404, 410):
            return FetchedPage(url, status), []
        if status != 200:
            return FetchedPage(url, 0, error=f"HTTP {status} {response.reason_phrase}".strip()), []
        media, charset = media_type(response.headers)
        media = media or sniff_type(url, content)
        page = FetchedPage(url, 200, content=content, content_type=media, etag=etag, last_modified=last_modified)
        if media not in HTML_TYPES:
            return page, []
        parsed = await parse_html_soon(content, url, charset)
        page.title_hint = parsed.title
        page.links = parsed.links
        if parsed.canonical and parsed.canonical != url and self.scope.host_allowed(parsed.canonical):
            if parsed.canonical in self.claimed:
                return None, parsed.links
            self.claimed.add(parsed.canonical)
            page.url = parsed.canonical
        return page, parsed.links

    async def known_links(self, url: str, known: KnownPage) -> list[str]:
        if known.links is not None:
            return known.links
        if self.known_body is None:
            return []
        body = await self.known_body(url, known)
        if not body or body.lstrip()[:1] != b"<":
            return []
        return (await parse_html_soon(body, url)).links

    async def request(self, url: str, headers: dict[str, str], *, document: bool, max_bytes: int = 0):
        """One GET, body read only for a 200 (document types only when `document`), within byte and time limits."""
        await self.wait_politely(url)
        deadline = self.timeout * PAGE_DEADLINE_FACTOR
        try:
            async with asyncio.timeout(deadline):
                return await self._request(url, headers, document, max_bytes or self.max_bytes)
        except TimeoutError:
            raise FetchError(f"timeout: no complete response within {deadline:g} s")

    async def _request(self, url: str, headers: dict[str, str], document: bool, max_bytes: int):
        try:
            request = self.client.build_request("GET", url, headers=headers, timeout=self.timeouts)
            response = await self.client.send(request, stream=True, follow_redirects=False)
        except AddressRefused as exc:
            raise FetchError(f"refused: {exc}")
        except httpx.TimeoutException:
            raise FetchError(f"timeout after {self.timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}".rstrip(": "))
        try:
            if response.status_code != 200:
                await self.drain(response)
                return response, b""
            media = media_type(response.headers)[0]
            if document and media and media not in DOCUMENT_TYPES:
                raise FetchError(f"unsupported content type {media}")
            return response, await self.read_limited(response, max_bytes)
        except httpx.TimeoutException:
            raise FetchError(f"timeout after {self.timeout:g} s")
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}".rstrip(": "))
        finally:
            await response.aclose()

    @staticmethod
    async def drain(response: httpx.Response) -> None:
        """Read the small body of a non-200 answer (304, redirect, 404) and drop it.

        Closing a response that was not read to its end closes its connection too: without this,
        every 304 of a re-sync would open a new TCP connection (and the server a new thread).
        A large or broken body is not worth it: the connection is then just closed.
        """
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > DRAIN_MAX_BYTES:
            return
        total = 0
        try:
            async for chunk in response.aiter_raw():
                total += len(chunk)
                if total > DRAIN_MAX_BYTES:
                    return
        except httpx.HTTPError:
            return

    @staticmethod
    async def read_limited(response: httpx.Response, max_bytes: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"page larger than {max_bytes} bytes")
        chunks, total = [], 0
        async for chunk in response.aiter_bytes():  # decoded bytes: a gzip bomb hits the limit too
            total += len(chunk)
            if total > max_bytes:
                raise FetchError(f"page larger than {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # Politeness and robots.txt.

    async def wait_politely(self, url: str) -> None:
        host = urlsplit(url).netloc
        delay = self.host_delay.get(host, self.delay)
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        async with self.host_lock.setdefault(host, asyncio.Lock()):
            wait = self.host_next.get(host, 0.0) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.host_next[host] = loop.time() + delay

    def origin(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    async def robots_for(self, origin: str) -> Protego | None:
        if origin not in self.robots:
            self.robots[origin] = asyncio.create_task(self.load_robots(origin))
        return await asyncio.shield(self.robots[origin])

    async def robots_allow(self, url: str) -> bool:
        robots = await self.robots_for(self.origin(url))
        return robots is None or robots.can_fetch(url, ROBOTS_AGENT)

    async def load_robots(self, origin: str) -> Protego | None:
        content = await self.get_following(origin + "/robots.txt", ROBOTS_MAX_BYTES)
        if content is None:
            return None
        robots = Protego.parse(content.decode("utf-8", errors="replace"))
        crawl_delay = robots.crawl_delay(ROBOTS_AGENT)
        if crawl_delay and crawl_delay > self.delay:
            self.host_delay[urlsplit(origin).netloc] = min(float(crawl_delay), MAX_CRAWL_DELAY)
        return robots

    async def get_following(self, url: str, max_bytes: int) -> bytes | None:
        """Body of a 200 after up to MAX_REDIRECTS guarded redirects (robots.txt, sitemaps), else None."""
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                response, content = await self.request(url, {}, document=False, max_bytes=max_bytes)
            except FetchError:
                return None
            if response.status_code not in REDIRECT_STATUSES:
                return content if response.status_code == 200 else None
            url = normalize_url(response.headers.get("location", ""), url)
            if url is None:
                return None
        return None

    # Sitemaps.

    async def seed_from_sitemaps(self) -> None:
        pending: list[str] = []
        for start in self.config.get("start_urls") or []:
            start = normalize_url(start)
            if not start or not self.scope.host_allowed(start):
                continue
            origin = self.origin(start)
            robots = await self.robots_for(origin)
            pending.extend(robots.sitemaps if robots else [])
            pending.append(origin + "/sitemap.xml")
        visited: set[str] = set()
        while pending and len(visited) < MAX_SITEMAPS and not self.should_stop():
            url = normalize_url(pending.pop(0))
            if not url or url in visited or not self.scope.host_allowed(url):
                continue
            visited.add(url)
            content = await self.get_following(url, SITEMAP_MAX_BYTES)
            if not content:
                continue
            kind, locs = await asyncio.to_thread(parse_sitemap, content)
            if kind == "sitemapindex":
                pending.extend(locs)
            else:
                for loc in locs:
                    self.enqueue(normalize_url(loc), 0)


async def crawl(
    config: dict,
    known: dict[str, KnownPage],
    on_page: Callable[[FetchedPage], Awaitable[None]],
    *,
    should_stop: Callable[[], bool] = lambda: False,
    client_factory: Callable[[httpx.AsyncBaseTransport], httpx.AsyncClient] | None = None,
    known_body: Callable[[str, KnownPage], Awaitable[bytes | None]] | None = None,
    stats: CrawlStats | None = None,
) -> CrawlStats:
    """Crawl a URL source (config as validated by knowledge.source_config) and report every page.

    `known` maps normalised URLs to the validators stored at the previous sync (conditional GETs).
    `on_page` is awaited once per reported URL; an exception from it aborts the crawl and is raised.
    `should_stop` is polled before each URL (cancellation, lost lease): in-flight pages finish.
    `client_factory(transport)` may customise the httpx client (headers, hooks) but receives the
    SSRF-guarded transport, which it must use; redirects are always followed by the crawler itself.
    `known_body(url, known_page)` returns the stored bytes of a page that answered 304 and has no
    remembered `links`, so its links are still followed.
    `stats`, when given, is the CrawlStats the crawl counts into (and returns), so another thread
    can watch the counters while it runs.
    """
    started = time.monotonic()
    concurrency = int(config.get("concurrency", 8))
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    transport = GuardedTransport(limits=limits)
    client = (client_factory or default_client)(transport)
    if client.trust_env:
        # Environment proxies would be mounted ahead of the guarded transport and dial for us.
        raise ValueError("client_factory must build its client with trust_env=False")
    async with client:
        crawler = Crawler(config, known, on_page, should_stop, known_body, client)
        if stats is not None:
            crawler.stats = stats
        await crawler.run()
    crawler.stats.seconds = round(time.monotonic() - started, 3)
    return crawler.stats
