"""A small web site served on 127.0.0.1 by a thread, for crawler tests (no traffic leaves the machine)."""

import threading
import time
from collections import Counter
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[["Handler"], None]


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

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    site: "LocalSite"


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

    def validated(self, path: str, body: str, *, etag: str = "", last_modified: float = 0.0) -> None:
        """A page answering 304 when the request's If-None-Match / If-Modified-Since still hold."""
        stamp = formatdate(last_modified, usegmt=True) if last_modified else ""

        def route(h: Handler) -> None:
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
                h.respond(200, body.encode(), "text/html", headers)

        self.routes[path] = route
