"""normalize_url(): one spelling per page."""

import pytest

from ingestion.urlnorm import normalize_url


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("HTTP://Example.COM/Path", None, "http://example.com/Path"),
        ("http://example.com:80/", None, "http://example.com/"),
        ("https://example.com:443/a", None, "https://example.com/a"),
        ("http://example.com:8080", None, "http://example.com:8080/"),
        ("http://example.com/a#section", None, "http://example.com/a"),
        ("http://example.com/?b=2&a=1&a=0", None, "http://example.com/?a=1&a=0&b=2"),
        ("http://example.com/?utm_source=x&id=3&gclid=y&fbclid=z&mc_cid=1&mc_eid=2", None, "http://example.com/?id=3"),
        ("http://example.com/?ref=main", None, "http://example.com/?ref=main"),
        ("http://example.com/a/./b/../c", None, "http://example.com/a/c"),
        ("http://example.com/a/..", None, "http://example.com/"),
        ("../x", "http://example.com/a/b/c", "http://example.com/a/x"),
        ("//cdn.example.com/x", "https://example.com/", "https://cdn.example.com/x"),
        ("  /x  ", "http://example.com/y", "http://example.com/x"),
        ("http://user:secret@example.com/", None, "http://example.com/"),
        ("http://example.com/a b/%7e", None, "http://example.com/a%20b/%7E"),
        ("http://bücher.de/", None, "http://xn--bcher-kva.de/"),
        ("http://[::1]:80/", None, "http://[::1]/"),
    ],
)
def test_normalize_url_canonical_spelling(url, base, expected):
    assert normalize_url(url, base) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mailto:a@example.com",
        "javascript:alert(1)",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http:///x",
        "http://example.com:99999/",
        "",
        "http://exa mple.com/",
        "http://a..b/",
    ],
)
def test_normalize_url_rejects_non_http_urls(url):
    assert normalize_url(url) is None


def test_normalize_url_is_idempotent():
    once = normalize_url("HTTP://Example.com:80/a/../b c?z=1&utm_medium=x&a=%2f#f")
    assert normalize_url(once) == once == "http://example.com/b%20c?a=%2F&z=1"
