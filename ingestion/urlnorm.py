"""URL normalisation: one spelling per page, so the crawler fetches each page once and documents
keep a stable identity between syncs.

Rules: http/https only; lowercase scheme and host (IDN hosts to punycode); credentials dropped;
default ports dropped; dot segments removed and empty path made "/"; percent-escapes uppercased
and unsafe characters escaped; fragment dropped; tracking parameters dropped (utm_*, gclid,
fbclid, mc_cid, mc_eid, msclkid, yclid, _ga); remaining query parameters sorted by name (stable,
so repeated names keep their order) without re-encoding them. `ref` is kept: on code hosts it
selects a branch, so dropping it would merge different pages.
"""

import re
from urllib.parse import quote, unquote_plus, urljoin, urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
TRACKING_PARAMS = {"gclid", "fbclid", "mc_cid", "mc_eid", "msclkid", "yclid", "_ga"}
PATH_SAFE = "/%:@!$&'()*+,;=~-._"
QUERY_SAFE = PATH_SAFE + "?"
_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")
_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def _upper_escapes(text: str) -> str:
    return _ESCAPE.sub(lambda m: m.group(0).upper(), text)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, on an absolute path."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    return result if result.startswith("/") else "/" + result


def _is_tracking(param: str) -> bool:
    name = unquote_plus(param.split("=", 1)[0]).lower()
    return name.startswith("utm_") or name in TRACKING_PARAMS


def normalize_query(query: str) -> str:
    params = [p for p in query.split("&") if p and not _is_tracking(p)]
    params.sort(key=lambda p: unquote_plus(p.split("=", 1)[0]))
    return _upper_escapes(quote("&".join(params), safe=QUERY_SAFE))


def normalize_url(url: str, base: str | None = None) -> str | None:
    """The canonical spelling of `url` (resolved against `base`), or None if it is not a usable http(s) URL."""
    url = (url or "").strip()
    if base:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host.lower()
    except UnicodeError:
        return None
    if ":" in host:
        host = f"[{host}]"
    elif not _HOST.fullmatch(host):
        return None
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = remove_dot_segments(_upper_escapes(quote(parts.path or "/", safe=PATH_SAFE)))
    return urlunsplit((scheme, netloc, path, normalize_query(parts.query), ""))
