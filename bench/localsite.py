"""A small web site served on 127.0.0.1 by a thread: crawler tests and `manage.py bench_crawl`.

No traffic leaves the machine. Routes are plain callables keyed by request path (query included);
the site counts hits per path and responses per status, so a test can prove what the crawler asked
for and what it was answered (200 vs 304 on a re-sync). It imports nothing from Django, so
`serve_bench_site` can run it in a child process, away from the crawler's GIL.
"""

import hashlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[["Handler"], None]

WORDS = (
    "archive", "catalogue", "index", "record", "metadata", "retrieval", "search", "query",
    "relevance", "ranking", "document", "library", "collection", "citation", "abstract", "thesaurus",
    "vocabulary", "taxonomy", "subject", "heading", "keyword", "precision", "recall", "evaluation",
    "user", "information", "system", "storage", "access", "classification", "scheme",
)  # fmt: skip


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms a page)
    server: "SiteServer"

    def do_GET(self) -> None:
        site = self.server.site
        with site.lock:
            site.hits[self.path] += 1
            site.log.append((self.path, time.monotonic(), dict(self.headers)))
        route = site.routes.get(self.path)
        if route is None:
            self.respond(404, b"not found", "text/plain")
        else:
            route(self)

    def respond(self, status: int, body: bytes = b"", content_type: str = "text/html", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.server.site.count_status(status)

    def log_message(self, *args) -> None:  # keep test and benchmark output clean
        pass


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    site: "LocalSite"

    def handle_error(self, request, client_address) -> None:
        # A crawler that stops (cancel, page limit) drops its keep-alive connections: not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalSite:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.statuses: Counter = Counter()
        self.log: list[tuple[str, float, dict]] = []
        self.lock = threading.Lock()
        self.server = SiteServer(("127.0.0.1", 0), Handler)
        self.server.site = self
        self.port = self.server.server_address[1]
        self.root = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "LocalSite":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count_status(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1

    def url(self, path: str) -> str:
        return self.root + path

    def page_times(self) -> list[float]:
        """When each request other than robots.txt arrived."""
        return [t for path, t, _ in self.log if path != "/robots.txt"]

    # Route builders.

    def page(self, path: str, body: bytes | str, content_type: str = "text/html", status: int = 200, headers=None):
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = lambda h: h.respond(status, data, content_type, headers)

    def html(self, path: str, links: list[str] = (), title: str = "", head: str = "", latency: float = 0.0):
        anchors = "".join(f'<a href="{link}">{link}</a> ' for link in links)
        body = f"<html><head><title>{title or path}</title>{head}</head><body><p>{path}</p>{anchors}</body></html>"
        data = body.encode()

        def route(h: Handler) -> None:
            if latency:
                time.sleep(latency)
            h.respond(200, data)

        self.routes[path] = route

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = lambda h: h.respond(status, b"", "text/plain", {"Location": location})

    def validated(
        self, path: str, body: str, *, etag: str = "", last_modified: float = 0.0, latency: float = 0.0
    ) -> None:
        """A page answering 304 when the request's If-None-Match / If-Modified-Since still hold."""
        stamp = formatdate(last_modified, usegmt=True) if last_modified else ""
        data = body.encode()

        def route(h: Handler) -> None:
            if latency:
                time.sleep(latency)
            headers = {}
            if etag:
                headers["ETag"] = etag
            if stamp:
                headers["Last-Modified"] = stamp
            fresh = (etag and h.headers.get("If-None-Match") == etag) or (
                stamp and not etag and h.headers.get("If-Modified-Since") == stamp
            )
            if fresh:
                h.send_response(304)
                for name, value in headers.items():
                    h.send_header(name, value)
                h.end_headers()
                self.count_status(304)
            else:
                h.respond(200, data, "text/html", headers)

        self.routes[path] = route

    def article(
        self, path: str, title: str, text: str, links: list[str] = (), *, validators: bool = True, latency: float = 0.0
    ) -> None:
        """An HTML article page (title, paragraphs, links), with an ETag and Last-Modified by default."""
        paragraphs = "".join(f"<p>{paragraph}</p>" for paragraph in text.split("\n\n"))
        anchors = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
        body = (
            f"<html><head><title>{title}</title></head><body><nav><ul>{anchors}</ul></nav>"
            f"<article><h1>{title}</h1>{paragraphs}</article></body></html>"
        )
        etag = f'"{hashlib.sha256(body.encode()).hexdigest()[:16]}"' if validators else ""
        stamp = 1_700_000_000 if validators else 0.0
        self.validated(path, body, etag=etag, last_modified=stamp, latency=latency)


def article_text(n: int, paragraphs: int = 3) -> str:
    """A few paragraphs of made-up prose, different for every n (so chunks and hashes differ)."""
    result = []
    for p in range(paragraphs):
        words = [WORDS[(n * 7 + p * 13 + i * i) % len(WORDS)] for i in range(60)]
        result.append(f"Page {n} part {p}: " + " ".join(words) + f" marker{n}x{p}.")
    return "\n\n".join(result)


def build_bench_site(site: LocalSite, pages: int, latency: float) -> None:
    """Exactly `pages` HTML pages within two hops: a home page, sections of up to 25 articles,
    each article linking to three others; every answer (200 or 304) waits `latency` seconds first."""
    section_count = -(-(pages - 1) // 26)
    articles = pages - 1 - section_count
    site.article("/", "Home", "The bench site home page.", [f"/s{n}" for n in range(section_count)], latency=latency)
    for number in range(section_count):
        links = [f"/a{m}" for m in range(number * 25, min(number * 25 + 25, articles))]
        site.article(f"/s{number}", f"Section {number}", f"Section {number} lists articles.", links, latency=latency)
    for n in range(articles):
        neighbours = [f"/a{(n * 7 + k) % articles}" for k in range(1, 4)]
        site.article(f"/a{n}", f"Article {n}", article_text(n), neighbours, latency=latency)


def serve_bench_site(pages: int, latency: float) -> None:
    """Serve the bench site until killed, its root URL printed first (`python -m bench.localsite`)."""
    site = LocalSite()
    build_bench_site(site, pages, latency)
    print(site.root, flush=True)
    site.server.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the crawl bench site on 127.0.0.1.")
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.02)
    arguments = parser.parse_args()
    serve_bench_site(arguments.pages, arguments.latency)
