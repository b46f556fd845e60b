"""What the crawler reads from the web: which URLs a source's scope admits, a response's media type,
an HTML page's links, canonical URL and title, and a sitemap's entries (`ingestion.crawling`)."""

import asyncio
import fnmatch
import mimetypes
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from lxml import etree
from lxml import html as lxml_html

from ingestion.urlnorm import normalize_url

SITEMAP_MAX_BYTES = 50 * 1024 * 1024  # the sitemap protocol's own limit, uncompressed
INLINE_PARSE_BYTES = 128 * 1024  # larger pages are parsed in a thread, off the event loop


@dataclass
class HtmlLinks:
    links: list[str] = field(default_factory=list)
    canonical: str | None = None
    title: str = ""


def pattern_matches(target: str, pattern: str) -> bool:
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(target, pattern)
    return target.startswith(pattern)


class Scope:
    """Which URLs a source may crawl (allowed_domains, include, exclude); the rules are in
    `ingestion.crawling`'s docstring."""

    def __init__(self, config: dict) -> None:
        self.domains = [d.strip().lower().lstrip("*").strip(".") for d in config.get("allowed_domains") or []]
        self.include = list(config.get("include") or [])
        self.exclude = list(config.get("exclude") or [])

    def host_allowed(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower()
        return any(host == d or host.endswith("." + d) for d in self.domains)

    def allows(self, url: str, *, seed: bool = False) -> bool:
        if not self.host_allowed(url):
            return False
        if seed:
            return True
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if any(pattern_matches(target, p) for p in self.exclude):
            return False
        return not self.include or any(pattern_matches(target, p) for p in self.include)


def media_type(headers: httpx.Headers) -> tuple[str, str]:
    """(media type, charset) from Content-Type."""
    value = headers.get("content-type", "")
    media, _, params = value.partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'")
    return media.strip().lower(), charset


def sniff_type(url: str, content: bytes) -> str:
    guessed = mimetypes.guess_type(urlsplit(url).path)[0]
    if guessed:
        return guessed
    head = content[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        return "application/pdf"
    if head.startswith(b"<"):
        return "text/html"
    return "text/plain"


def parse_html(content: bytes, url: str, charset: str = "") -> HtmlLinks:
    """Links (normalised, in document order, unique), canonical URL and title of an HTML page."""
    try:
        parser = lxml_html.HTMLParser(encoding=charset or None)
        root = lxml_html.document_fromstring(content, parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError, LookupError):
        return HtmlLinks()
    base = url
    for href in root.xpath("//base/@href")[:1]:
        base = normalize_url(href, url) or url
    result = HtmlLinks()
    for link in root.xpath("//link[@rel and @href]"):
        if "canonical" in link.get("rel", "").lower().split():
            result.canonical = normalize_url(link.get("href"), base)
            break
    title = root.find(".//title")
    if title is not None:
        result.title = " ".join(title.text_content().split())[:300]
    robots = " ".join(root.xpath("//meta[translate(@name,'ROBTS','robts')='robots']/@content")).lower()
    if "nofollow" in robots or "none" in robots.split(","):
        return result
    seen: set[str] = set()
    for href in root.xpath("//a/@href | //area/@href"):
        link = normalize_url(href, base)
        if link and link not in seen:
            seen.add(link)
            result.links.append(link)
    return result


async def parse_html_soon(content: bytes, url: str, charset: str = "") -> HtmlLinks:
    """`parse_html` on the event loop for a usual page (a thread hop costs more than parsing it),
    in a thread for a large one, which would hold up the other fetches."""
    if len(content) <= INLINE_PARSE_BYTES:
        return parse_html(content, url, charset)
    return await asyncio.to_thread(parse_html, content, url, charset)


def parse_sitemap(content: bytes) -> tuple[str, list[str]]:
    """("urlset" | "sitemapindex" | "", <loc> values) of a sitemap; gzip accepted; entities never expanded."""
    if content[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            content = inflater.decompress(content, SITEMAP_MAX_BYTES)
        except zlib.error:
            return "", []
        if inflater.unconsumed_tail:
            return "", []
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError:
        return "", []
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        return "", []
    locs = [(el.text or "").strip() for el in root.iter("{*}loc")]
    return kind, [loc for loc in locs if loc]
