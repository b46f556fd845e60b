"""SSRF guard for the crawler: every TCP connection the crawler opens goes to an address checked here.

The guard lives in the network backend under httpx (`GuardedBackend.connect_tcp`), not in a check
before the request: the hostname is resolved once, every resolved address is checked, and the socket
is opened to one of exactly those addresses. There is no second resolution a DNS-rebinding server
could answer differently, and redirects, robots.txt and sitemap fetches cannot slip past it. The URL
keeps the hostname, so the Host header, TLS SNI, certificate verification and httpx's per-origin
connection pool all stay keyed on the name (rewriting URLs to IPs would let two virtual hosts on one
IP share a TLS connection verified for only one of them).

A hostname is refused if ANY of its addresses is not public: loopback, private (RFC 1918, ULA),
shared address space (100.64.0.0/10, treated as private), link-local (incl. 169.254.169.254
metadata), multicast, unspecified, reserved or otherwise non-global, including such IPv4 addresses
wrapped in IPv6 (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, 6to4 2002::/16, NAT64
64:ff9b::/96 and 64:ff9b:1::/48). `settings.KB_CRAWLER_ALLOW_PRIVATE` (CIDR list) lets chosen
internal ranges through, e.g. for an intranet wiki or tests on 127.0.0.0/8.
"""

import asyncio
import functools
import ipaddress
import socket
import ssl
from collections.abc import Iterable

import httpcore
import httpx
from django.conf import settings
from httpcore._backends.auto import AutoBackend
from httpcore._utils import is_socket_readable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressRefused(Exception):
    """A host resolved to an address the crawler must not connect to. str() is the human reason."""


def allowed_networks() -> list[IPNetwork]:
    """The operator's allowlist (settings.KB_CRAWLER_ALLOW_PRIVATE), parsed; bad entries raise ValueError."""
    return [ipaddress.ip_network(cidr, strict=False) for cidr in settings.KB_CRAWLER_ALLOW_PRIVATE]


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), if any."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in NAT64_PREFIXES) or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _plain_refusal(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip in SHARED_ADDRESS_SPACE or ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def address_refusal(ip: IPAddress | str, allow: Iterable[IPNetwork] | None = None) -> str | None:
    """Why the crawler may not connect to `ip` ("127.0.0.1 is a loopback address"), or None if it may.

    `allow` defaults to the settings allowlist; an address (or the IPv4 address it wraps) inside an
    allowed network is accepted whatever its kind.
    """
    ip = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    allow = allowed_networks() if allow is None else list(allow)
    inner = embedded_ipv4(ip)
    if inner is None:
        candidates = [ip]
    elif ip in IPV4_COMPATIBLE:
        candidates = [inner, ip]  # deprecated form: the IPv6 address itself must pass too
    else:
        candidates = [inner]  # mapped / 6to4 / NAT64: the IPv4 address is where packets go
    if any(addr.version == net.version and addr in net for addr in (ip, *candidates) for net in allow):
        return None
    for addr in candidates:
        reason = _plain_refusal(addr)
        if reason:
            shown = f"{ip} ({addr})" if addr is not ip else str(ip)
            return f"{shown} is {reason}"
    return None


async def resolve_checked(host: str, port: int, timeout: float | None = None) -> list[str]:
    """Resolve `host` and return its addresses, raising AddressRefused if any of them is refused."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM), timeout)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out")
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}")
    allow = allowed_networks()
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        reason = address_refusal(ipaddress.ip_address(address.split("%", 1)[0]), allow)
        if reason:
            raise AddressRefused(reason)
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise httpcore.ConnectError(f"{host} has no addresses")
    return addresses


class CheapReadableStream(httpcore.AsyncNetworkStream):
    """A connection's stream whose "is_readable" skips anyio's attribute lookup.

    httpcore asks every pooled connection "is_readable" each time a request enters or leaves the
    pool; through anyio each answer builds a dict of socket attributes first, which was a fifth
    of the crawler's CPU. The socket is looked up once here and polled directly.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> "CheapReadableStream":
        return CheapReadableStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        if info == "is_readable":
            return is_socket_readable(self._socket)
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that connects only to checked addresses of the requested host."""

    def __init__(self) -> None:
        self._inner = AutoBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        addresses = await resolve_checked(host, port, timeout)
        last_error: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
                return CheapReadableStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        raise last_error  # type: ignore[misc]

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise AddressRefused("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def shared_ssl_context(verify: bool = True) -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs ~50 ms, once per crawl otherwise.
    A context is safe to share between connections, threads and event loops."""
    return httpx.create_ssl_context(verify=verify, trust_env=False)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx transport whose connection pool dials through GuardedBackend; never uses proxies.

    httpx 0.28 does not take a network backend, so the pool it built is replaced by an equivalent
    one (same TLS context and limits) that has ours; tests/ingestion/test_netguard.py proves the
    replacement still refuses, so an httpx upgrade that renames `_pool` fails loudly there.
    """

    def __init__(self, *, limits: httpx.Limits | None = None, verify: bool = True) -> None:
        limits = limits or httpx.Limits()
        ssl_context = shared_ssl_context(verify)
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(),
        )
