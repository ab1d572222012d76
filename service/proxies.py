"""The client address of a request: what the IP allowlists, the audit log's ``source`` and the
throttling of failed-authentication records all use (``TrustedProxies.client_address``).

Without ``server.trusted_proxies`` (the default) it is the direct peer, and a forwarding
header is ignored: any client can write one. When the peer is one of those proxies, the
address comes from the header they append to (``server.proxy_header``: ``X-Forwarded-For``,
or RFC 7239 ``Forwarded: for=``). Each proxy appends the address it received the request
from, so the header is walked from the right: trusted hops are skipped and the first
untrusted address is the client (everything left of it was written by the client, and may
be anything). An entry that is not an address (``unknown``, an obfuscated ``_name``, junk)
stops the walk at the peer: never a crash, and never an address the header made up. When
every hop is trusted, the leftmost (the farthest one known) is the client.

Why not uvicorn's own ``proxy_headers``/``forwarded_allow_ips``: it walks from the right too
and takes CIDRs, but it trusts loopback peers unless told otherwise (or whatever
``$FORWARDED_ALLOW_IPS`` says), it takes a malformed entry as the client's "address", it
reads no ``Forwarded``, and it runs only under uvicorn (not in the test client, not under
another ASGI server). So ``service.server.uvicorn_config`` switches it off and the app reads
the header itself, the same way under any server.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from litestar.connection import ASGIConnection

from router.config import ServerConfig
from router.governance.networks import Address, Network, parse_address, parse_network, within


class TrustedProxies:
    """The proxies whose forwarding header is believed, and how to read it."""

    def __init__(self, proxies: Sequence[str] = (), header: str = "x-forwarded-for"):
        self.networks: tuple[Network, ...] = tuple(parse_network(p) for p in proxies)
        self.header = header

    @classmethod
    def of(cls, server: ServerConfig) -> TrustedProxies:
        """The trusted proxies ``server.trusted_proxies`` and ``server.proxy_header`` name."""
        return cls(server.trusted_proxies, server.proxy_header)

    def client_address(self, connection: ASGIConnection) -> str | None:
        """The address of the client of ``connection``: its peer's, or the one a trusted
        proxy forwarded (see the module docstring); None when the server names no peer."""
        peer = connection.client.host if connection.client else None
        if not self.networks:
            return peer
        return self.client_of(peer, connection.headers.getall(self.header, []))

    def client_of(self, peer: str | None, values: Iterable[str]) -> str | None:
        """The client, given the peer and the values of the forwarding header (in order)."""
        address = parse_address(peer)
        if address is None or not within(address, self.networks):
            return peer
        client = address
        for hop in reversed(_hops(",".join(values), self.header)):
            if hop is None:  # not an address: nothing further left can be believed
                return str(address)
            client = hop
            if not within(hop, self.networks):
                break
        return str(client)


def _hops(value: str, header: str) -> list[Address | None]:
    """The addresses a forwarding header lists, left to right; None for an entry that is not
    one (empty entries are dropped: ``a,,b`` and a header of blanks carry no hop)."""
    entries = [e.strip() for e in value.split(",")]
    if header == "forwarded":
        return [_address(_for_of(e)) for e in entries if e]
    return [_address(e) for e in entries if e]


def _for_of(element: str) -> str:
    # RFC 7239: ``for=192.0.2.60;proto=https;by=203.0.113.43``; names are case-insensitive.
    for pair in element.split(";"):
        name, _, value = pair.partition("=")
        if name.strip().lower() == "for":
            return value.strip().strip('"')
    return ""


def _address(entry: str) -> Address | None:
    """``entry`` as an address, with an optional port (``1.2.3.4:80``, ``[2001:db8::1]:80``)."""
    if entry.startswith("["):
        host, bracket, port = entry[1:].partition("]")
        if not bracket or (port and not (port[:1] == ":" and port[1:].isdigit())):
            return None
        return parse_address(host)
    if entry.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        host, _, port = entry.partition(":")
        return parse_address(host) if port.isdigit() else None
    return parse_address(entry)
