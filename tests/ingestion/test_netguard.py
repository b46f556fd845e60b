"""The SSRF guard: which addresses the crawler may connect to, and that the httpx transport obeys it
before opening any socket (nothing here sends traffic beyond 127.0.0.1)."""

import asyncio
import time

import httpx
import pytest

from bench.localsite import LocalSite
from ingestion.netguard import AddressRefused, GuardedBackend, GuardedTransport, address_refusal, resolve_checked


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("127.255.0.9", "127.255.0.9 is a loopback address"),
        ("::1", "::1 is a loopback address"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1 (127.0.0.1) is a loopback address"),
        ("10.1.2.3", "10.1.2.3 is a private address"),
        ("172.16.0.1", "172.16.0.1 is a private address"),
        ("192.168.1.1", "192.168.1.1 is a private address"),
        ("100.64.0.1", "100.64.0.1 is a private address"),
        ("100.127.255.254", "100.127.255.254 is a private address"),
        ("fd00::1", "fd00::1 is a private address"),
        ("169.254.169.254", "169.254.169.254 is a link-local address"),
        ("fe80::1", "fe80::1 is a link-local address"),
        ("0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("::", ":: is an unspecified address"),
        ("224.0.0.1", "224.0.0.1 is a multicast address"),
        ("ff02::1", "ff02::1 is a multicast address"),
        ("240.0.0.1", "240.0.0.1 is a reserved address"),
        ("192.0.2.10", "192.0.2.10 is a private address"),
        ("2002:a9fe:a9fe::1", "2002:a9fe:a9fe::1 (169.254.169.254) is a link-local address"),
        ("64:ff9b::7f00:1", "64:ff9b::7f00:1 (127.0.0.1) is a loopback address"),
        ("64:ff9b:1::a00:1", "64:ff9b:1::a00:1 (10.0.0.1) is a private address"),
        ("::a00:1", "::a00:1 (10.0.0.1) is a private address"),
    ],
)
def test_non_public_addresses_are_refused_with_reason(address, reason):
    assert address_refusal(address, allow=[]) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700::6810:1", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert address_refusal(address, allow=[]) is None


def test_allowlist_admits_listed_ranges_only(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = ["127.0.0.0/8", "10.20.0.0/16"]
    assert address_refusal("127.0.0.1") is None
    assert address_refusal("::ffff:127.0.0.1") is None
    assert address_refusal("10.20.3.4") is None
    assert address_refusal("10.21.0.1") == "10.21.0.1 is a private address"
    assert address_refusal("::1") == "::1 is a loopback address"


def test_hostname_is_refused_if_any_address_is_refused(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = []
    with pytest.raises(AddressRefused, match="is a loopback address"):
        asyncio.run(resolve_checked("localhost", 80))


def test_backend_refuses_before_opening_a_socket(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = ["127.0.0.0/8"]
    started = time.monotonic()
    with pytest.raises(AddressRefused, match=r"169\.254\.169\.254 is a link-local address"):
        asyncio.run(GuardedBackend().connect_tcp("169.254.169.254", 80, timeout=5))
    assert time.monotonic() - started < 0.5


def _get(url: str) -> httpx.Response:
    async def go():
        async with httpx.AsyncClient(transport=GuardedTransport()) as client:
            return await client.get(url)

    return asyncio.run(go())


def test_transport_refuses_private_address_through_httpx(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = ["127.0.0.0/8"]
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.1 is a private address"):
        _get("http://10.0.0.1/")


def test_transport_connects_to_checked_address_keeping_host_header(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = ["127.0.0.0/8", "::1/128"]
    site = LocalSite().start()
    try:
        site.page("/", "hello", "text/plain")
        response = _get(f"http://localhost:{site.port}/")
        assert response.text == "hello"
        assert site.log[0][2]["Host"] == f"localhost:{site.port}"
    finally:
        site.stop()


def test_transport_refuses_loopback_without_allowlist(settings):
    settings.KB_CRAWLER_ALLOW_PRIVATE = []
    site = LocalSite().start()
    try:
        with pytest.raises(AddressRefused):
            _get(site.url("/"))
        assert site.hits.total() == 0
    finally:
        site.stop()
