"""The one guard for every request Freshet sends out (connectors, sinks, re-fetches).

Only http and https; never a link-local or cloud-metadata address, whatever the name resolves
to; loopback and private networks only where `OUTBOUND_PRIVATE_NETWORKS` allows them. The check
runs on every request the client sends, redirects included, against every address the host
name resolves to, so a public name pointing at 169.254.169.254 (or redirecting there) is refused
as well as the literal address.

A name that resolves to a harmless address when checked and to a forbidden one when connected
(DNS rebinding with a zero TTL) is not caught here: the connection resolves again. Block the
metadata service at the network too where that matters.
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import urlsplit

import httpx
from django.conf import settings

# Never fetched, whatever the settings say: link-local (the cloud metadata services live at
# 169.254.169.254 and fd00:ec2::254), Alibaba's metadata address, "this host" and multicast.
ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32",
        "0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8", "240.0.0.0/4",
    )
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundRefused(Exception):
    """The request may not be sent; the message says why, for a person."""


@lru_cache(maxsize=8)
def _allowed_private(networks: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` may not be contacted, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in ALWAYS_REFUSED):
        return f"{address} is a link-local, metadata or reserved address"
    if address.is_loopback or address.is_private or address.is_reserved:
        allowed = _allowed_private(tuple(settings.OUTBOUND_PRIVATE_NETWORKS))
        if not any(address.version == network.version and address in network for network in allowed):
            return f"{address} is a private address outside OUTBOUND_PRIVATE_NETWORKS"
    return None


def _addresses(host: str, port: int) -> Iterable[IPAddress]:
    try:
        yield ipaddress.ip_address(host.strip("[]"))
        return
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise httpx.ConnectError(f"{host} does not resolve: {error}") from error
    for info in infos:
        yield ipaddress.ip_address(info[4][0].split("%", 1)[0])


def url_check(url: str) -> None:
    """OutboundRefused unless `url` is http(s) to a host whose every address may be contacted.

    A host that does not resolve raises httpx.ConnectError (worth trying again later)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise OutboundRefused(f"Only http and https addresses may be fetched, not {url!r}.")
    if not parts.hostname:
        raise OutboundRefused(f"{url!r} names no host.")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise OutboundRefused(f"{url!r} has an invalid port.") from None
    for address in _addresses(parts.hostname, port):
        refusal = address_refusal(address)
        if refusal:
            raise OutboundRefused(f"{url} may not be fetched: {refusal}.")


def _check_request(request: httpx.Request) -> None:
    url_check(str(request.url))


def outbound_client(*, timeout: float | httpx.Timeout, max_redirects: int = 5, follow_redirects: bool = True,
                    headers: dict[str, str] | None = None) -> httpx.Client:
    """An httpx client whose every request (each redirect hop included) passes `url_check`.

    OutboundRefused raised by a hop comes out of the request call as it is."""
    return httpx.Client(
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        headers={"User-Agent": settings.OUTBOUND_USER_AGENT, **(headers or {})},
        event_hooks={"request": [_check_request]},
        trust_env=False,
    )


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header as seconds from now: delta-seconds or an HTTP date (RFC 9110 10.2.3);
    None when absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
