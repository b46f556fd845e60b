"""crawl(): discovery, scope, politeness, robots.txt, sitemaps, redirects, limits and revalidation,
against sites served on 127.0.0.1 by the tests (the SSRF allowlist admits 127.0.0.0/8 only)."""

import asyncio
import itertools
import time

import httpx
import pytest

from bench.localsite import LocalSite
from ingestion.crawl_parsing import parse_html, parse_sitemap
from ingestion.crawling import KnownPage, crawl
from knowledge.source_config import validate_source_config


@pytest.fixture
def site(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = ["127.0.0.0/8"]
    server = LocalSite().start()
    yield server
    server.stop()


def run(site, known=None, start="/", **config):
    pages = []

    async def on_page(page):
        pages.append(page)

    full = validate_source_config("url", {"start_urls": [site.url(start)], "concurrency": 4, **config})
    stats = asyncio.run(crawl(full, known or {}, on_page, **config.pop("_kwargs", {})))
    by_url = {p.url.removeprefix(site.root): p for p in pages}
    assert len(by_url) == len(pages), "a URL was reported twice"
    return by_url, stats


def test_crawl_follows_links_once_each_within_allowed_domains(site):
    site.html("/", ["a", "/b", "a#top", "/a?utm_source=mail", "http://example.com/", "doc.pdf", "pic.png"])
    site.html("/a", ["/"])
    site.html("/b")
    site.page("/doc.pdf", b"%PDF-1.4 fake", "application/pdf")
    pages, stats = run(site)
    assert set(pages) == {"/", "/a", "/b", "/doc.pdf"}
    assert site.hits["/a"] == 1 and site.hits["/"] == 1
    assert pages["/doc.pdf"].content == b"%PDF-1.4 fake" and pages["/doc.pdf"].content_type == "application/pdf"
    assert pages["/a"].title_hint == "/a"
    assert (stats.discovered, stats.fetched, stats.failed) == (4, 4, 0)


def test_crawl_resolves_links_against_base_href(site):
    site.html("/dir/page", ["x"], head='<base href="/other/">')
    site.html("/other/x")
    pages, _ = run(site, start="/dir/page")
    assert set(pages) == {"/dir/page", "/other/x"}


def test_canonical_link_renames_page_and_dedupes(site):
    site.html("/", ["/print", "/article"])
    site.html("/print", head='<link rel="canonical" href="/article">')
    site.html("/article")
    pages, _ = run(site)
    assert set(pages) == {"/", "/article"}  # and /article reported once (checked in run)


def test_crawl_stops_at_max_depth(site):
    for n in range(4):
        site.html(f"/d{n}", [f"/d{n + 1}"])
    pages, _ = run(site, start="/d0", max_depth=2)
    assert set(pages) == {"/d0", "/d1", "/d2"}
    assert site.hits["/d3"] == 0


def test_crawl_stops_at_max_pages(site):
    site.html("/", [f"/p{n}" for n in range(30)])
    for n in range(30):
        site.html(f"/p{n}")
    pages, stats = run(site, max_pages=10)
    assert len(pages) == 10 and stats.fetched == 10
    assert sum(site.hits.values()) == 10 + site.hits["/robots.txt"]


def test_include_and_exclude_globs_limit_discovered_links(site):
    site.html("/", ["/docs/a", "/docs/private/b", "/blog/c", "/docs/d.pdf"])
    for path in ("/docs/a", "/docs/private/b", "/blog/c"):
        site.html(path)
    site.page("/docs/d.pdf", b"%PDF", "application/pdf")
    pages, _ = run(site, include=["/docs/"], exclude=["*/private/*", "*.pdf"])
    assert set(pages) == {"/", "/docs/a"}


def test_robots_disallowed_page_is_reported_but_never_requested(site):
    site.page("/robots.txt", "User-agent: *\nDisallow: /private\n", "text/plain")
    site.html("/", ["/private/x", "/public"])
    site.html("/public")
    site.html("/private/x")
    pages, stats = run(site)
    assert pages["/private/x"].status == 0 and pages["/private/x"].error == "disallowed by robots.txt"
    assert site.hits["/private/x"] == 0 and site.hits["/robots.txt"] == 1
    assert stats.refused == 1 and stats.fetched == 2


def _gaps(times):
    return [b - a for a, b in itertools.pairwise(sorted(times))]


def test_robots_crawl_delay_spaces_requests_to_a_host(site):
    site.page("/robots.txt", "User-agent: *\nCrawl-delay: 0.3\n", "text/plain")
    site.html("/", [f"/p{n}" for n in range(3)])
    for n in range(3):
        site.html(f"/p{n}")
    run(site, concurrency=8)
    gaps = _gaps(site.page_times())
    assert len(gaps) == 3 and min(gaps) >= 0.28


def test_source_delay_spaces_requests_to_a_host(site):
    site.html("/", [f"/p{n}" for n in range(3)])
    for n in range(3):
        site.html(f"/p{n}")
    run(site, concurrency=8, delay=0.2)
    assert min(_gaps(site.page_times())) >= 0.18


def test_sitemap_index_seeds_pages_no_link_reaches(site):
    site.page("/robots.txt", f"Sitemap: {site.url('/maps/index.xml')}\n", "text/plain")
    site.page(
        "/maps/index.xml",
        f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<sitemap><loc>{site.url('/maps/pages.xml')}</loc></sitemap></sitemapindex>",
        "application/xml",
    )
    site.page(
        "/maps/pages.xml",
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{site.url("/orphan")}</loc></url>'
        f"<url><loc>http://elsewhere.example/x</loc></url></urlset>",
        "application/xml",
    )
    site.page("/sitemap.xml", f"<urlset><url><loc>{site.url('/orphan2')}</loc></url></urlset>", "text/xml")
    site.html("/")
    site.html("/orphan")
    site.html("/orphan2")
    without, _ = run(site)
    assert set(without) == {"/"}
    pages, _ = run(site, use_sitemap=True)
    assert set(pages) == {"/", "/orphan", "/orphan2"}


def test_parse_sitemap_never_expands_entities():
    xml = (
        b'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY secret SYSTEM "file:///etc/hostname">'
        b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<urlset><url><loc>http://h/&secret;</loc></url><url><loc>http://h/&b;</loc></url></urlset>"
    )
    kind, locs = parse_sitemap(xml)
    assert kind == "urlset"
    assert locs == ["http://h/", "http://h/"]


def test_parse_html_honours_meta_robots_nofollow():
    parsed = parse_html(b'<meta name="ROBOTS" content="noindex, nofollow"><a href="/x">x</a>', "http://h/")
    assert parsed.links == []


def test_redirect_is_followed_and_reported_under_final_url(site):
    site.redirect("/", "/old", 301)
    site.redirect("/old", "/new?utm_campaign=x", 308)
    site.html("/new")
    pages, _ = run(site)
    assert set(pages) == {"/new"} and pages["/new"].status == 200


@pytest.mark.parametrize(
    ("target", "reason"),
    [("10.0.0.1", "10.0.0.1 is a private address"), ("169.254.169.254", "169.254.169.254 is a link-local address")],
)
def test_redirect_to_internal_address_is_refused_before_connecting(site, target, reason):
    site.redirect("/", f"http://{target}/latest/meta-data/")
    started = time.monotonic()
    pages, stats = run(site, allowed_domains=["127.0.0.1", target])
    page = pages[f"http://{target}/latest/meta-data/"]
    assert (page.status, page.error) == (0, f"refused: {reason}")
    assert stats.refused == 1 and time.monotonic() - started < 2  # refused, not a connect timeout


def test_redirect_out_of_allowed_domains_is_refused(site):
    site.redirect("/", "http://example.org/")
    pages, stats = run(site)
    assert pages["/"].error == "refused: redirect to out-of-scope URL http://example.org/"
    assert stats.refused == 1


def test_redirect_loop_stops_after_five_hops(site):
    for n in range(8):
        site.redirect(f"/r{n}", f"/r{n + 1}")
    pages, _ = run(site, start="/r0")
    assert pages["/r5"].error == "more than 5 redirects"
    assert site.hits["/r6"] == 0


def test_slow_page_hits_read_timeout(site, settings):
    settings.KB_CRAWLER_TIMEOUT = 0.3
    site.html("/", latency=1.5)
    started = time.monotonic()
    pages, stats = run(site)
    assert pages["/"].error == "timeout after 0.3 s" and stats.failed == 1
    assert time.monotonic() - started < 1.2


def test_trickling_page_hits_whole_page_deadline(site, settings):
    settings.KB_CRAWLER_TIMEOUT = 0.3

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Content-Length", "40")
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.1)

    site.routes["/"] = trickle
    pages, _ = run(site)
    assert pages["/"].error == "timeout: no complete response within 0.9 s"


def test_huge_streamed_page_is_aborted_at_byte_limit(site, settings):
    settings.KB_CRAWLER_MAX_BYTES = 100_000

    def endless(h):
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            for _ in range(2000):  # 20 MB if nobody hung up
                h.wfile.write(b"<p>" + b"x" * 9996 + b"</p>")
        except OSError:
            pass
        h.close_connection = True

    site.routes["/"] = endless
    pages, stats = run(site)
    assert (pages["/"].status, pages["/"].error) == (0, "page larger than 100000 bytes")
    assert pages["/"].content == b"" and stats.failed == 1


def test_declared_length_over_limit_is_refused_unread(site, settings):
    settings.KB_CRAWLER_MAX_BYTES = 1000
    site.page("/", "y" * 5000)
    pages, _ = run(site)
    assert pages["/"].error == "page larger than 1000 bytes"


def test_missing_and_gone_pages_are_reported_with_status(site):
    site.html("/", ["/missing", "/gone", "/broken", "/image"])
    site.page("/gone", "", status=410)
    site.page("/broken", "oops", status=500)
    site.page("/image", b"GIF89a", "image/gif")
    pages, stats = run(site)
    assert pages["/missing"].status == 404 and pages["/gone"].status == 410
    assert (pages["/broken"].status, pages["/broken"].error) == (0, "HTTP 500 Internal Server Error")
    assert pages["/image"].error == "unsupported content type image/gif"
    assert (stats.gone, stats.failed) == (2, 2)


def test_etag_revalidation_yields_not_modified(site):
    site.validated("/", "<p>v1</p>", etag='"v1"')
    first, _ = run(site)
    known = {site.url("/"): KnownPage(etag=first["/"].etag)}
    second, stats = run(site, known=known)
    assert second["/"].status == 304 and second["/"].content == b"" and second["/"].etag == '"v1"'
    assert (site.statuses[200], site.statuses[304], stats.not_modified) == (1, 1, 1)


def test_last_modified_revalidation_yields_not_modified(site):
    site.validated("/", "<p>v1</p>", last_modified=1_700_000_000)
    first, _ = run(site)
    assert first["/"].last_modified == "Tue, 14 Nov 2023 22:13:20 GMT"
    second, _ = run(site, known={site.url("/"): KnownPage(last_modified=first["/"].last_modified)})
    assert second["/"].status == 304
    assert (site.statuses[200], site.statuses[304]) == (1, 1)


def test_not_modified_page_links_are_followed_from_known_body(site):
    site.validated("/", '<a href="/child">child</a>', etag='"v1"')
    site.html("/child")
    stored = {}

    async def known_body(url, page):
        return stored.get(page.sha256)

    first, _ = run(site)
    stored["abc"] = first["/"].content
    known = {site.url("/"): KnownPage(etag='"v1"', sha256="abc")}
    second, _ = run(site, known=known, _kwargs={"known_body": known_body})
    assert second["/"].status == 304 and second["/child"].status == 200


def test_not_modified_page_follows_remembered_links_without_known_body(site):
    site.validated("/", "<p>no links in this body</p>", etag='"v1"')
    site.html("/child")

    async def known_body(url, page):
        raise AssertionError("the stored body is not needed")

    known = {site.url("/"): KnownPage(etag='"v1"', links=[site.url("/child")])}
    second, _ = run(site, known=known, _kwargs={"known_body": known_body})
    assert second["/"].status == 304 and second["/child"].status == 200


def test_fetched_page_reports_its_links(site):
    site.html("/", ["/a", "/b"])
    site.html("/a")
    site.html("/b")
    pages, _ = run(site, max_depth=0)
    assert pages["/"].links == [site.url("/a"), site.url("/b")]


def test_answers_without_a_body_keep_the_connection_alive(site):
    site.validated("/", '<a href="/missing">missing</a> <a href="/moved">moved</a>', etag='"v1"')
    site.redirect("/moved", "/target")
    site.html("/target")
    connections = []
    accept = site.server.process_request
    site.server.process_request = lambda request, address: connections.append(address) or accept(request, address)
    known = {site.url("/"): KnownPage(etag='"v1"', links=[site.url("/missing"), site.url("/moved")])}
    pages, _ = run(site, known=known, concurrency=1)
    assert (pages["/"].status, pages["/missing"].status, pages["/target"].status) == (304, 404, 200)
    assert len(connections) == 1  # robots.txt 404, 304, 404, 302, 200: one keep-alive connection


def test_loopback_site_is_refused_without_allowlist(site, settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = []
    site.html("/")
    pages, stats = run(site)
    assert pages["/"].error == "refused: 127.0.0.1 is a loopback address"
    assert stats.refused == 1 and sum(site.hits.values()) == 0


def test_should_stop_ends_crawl_early(site):
    site.html("/", [f"/p{n}" for n in range(40)])
    for n in range(40):
        site.html(f"/p{n}", latency=0.01)
    seen = []

    async def on_page(page):
        seen.append(page)

    config = validate_source_config("url", {"start_urls": [site.url("/")], "concurrency": 2})
    asyncio.run(crawl(config, {}, on_page, should_stop=lambda: len(seen) >= 5))
    assert 5 <= len(seen) <= 7


def test_on_page_exception_aborts_crawl_and_propagates(site):
    site.html("/", ["/a"])
    site.html("/a")

    async def on_page(page):
        raise RuntimeError("storage down")

    config = validate_source_config("url", {"start_urls": [site.url("/")]})
    with pytest.raises(RuntimeError, match="storage down"):
        asyncio.run(crawl(config, {}, on_page))
    assert site.hits["/a"] == 0


def test_client_factory_customises_guarded_client(site):
    site.html("/")

    def factory(transport):
        return httpx.AsyncClient(transport=transport, trust_env=False, headers={"Authorization": "Bearer t"})

    run(site, _kwargs={"client_factory": factory})
    assert site.log[-1][2]["Authorization"] == "Bearer t"


def test_client_factory_trusting_environment_proxies_is_rejected(site):
    config = validate_source_config("url", {"start_urls": [site.url("/")]})

    async def on_page(page):
        pass

    with pytest.raises(ValueError, match="trust_env=False"):
        asyncio.run(crawl(config, {}, on_page, client_factory=lambda t: httpx.AsyncClient(transport=t)))
