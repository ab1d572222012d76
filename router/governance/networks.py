"""IP networks: the allowlists of keys (``ips``) and organisations (``governance.networks``),
and the trusted proxies (``server.trusted_proxies``).

An entry is an address or a CIDR network (``203.0.113.7``, ``10.0.0.0/8``, ``2001:db8::/32``);
an address is its own /32 (/128). Addresses are compared as addresses, not text, and an IPv4
address mapped into IPv6 (``::ffff:10.1.2.3``, how a dual-stack socket reports an IPv4 peer)
is that IPv4 address, so an IPv4 allowlist holds on either kind of socket.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(entry: str, *, strict: bool = True) -> Network:
    """``entry`` as a network, or ``ValueError`` saying what is wrong with it. ``strict``
    refuses host bits after the prefix (``10.0.0.1/8``): a typo either way, and guessing
    would widen or narrow an allowlist silently."""
    try:
        return ipaddress.ip_network(entry.strip(), strict=strict)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
    address = entry.strip().split("/", 1)[0]
    raise ValueError(f"{entry!r} has host bits set: write {loose} for the network, or "
                     f"{address} for the one address") from None


def network_errors(entries: Iterable[str], where: str) -> list[str]:
    """Every entry of ``entries`` that is not a network, each named ``where[i]``."""
    errors = []
    for i, entry in enumerate(entries):
        try:
            parse_network(entry)
        except ValueError as exc:
            errors.append(f"{where}[{i}]: {exc}")
    return errors


def lenient_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The entries that parse (host bits allowed): a stored key's ``ips``. One that does not
    parse admits nobody, so a key whose entries are all broken is refused everywhere."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue
    return tuple(networks)


def parse_address(text: str | None) -> Address | None:
    """``text`` as an IP address (an IPv4-mapped IPv6 one as its IPv4), or None."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(address: str | Address | None, networks: Iterable[Network]) -> bool:
    """Whether ``address`` is in one of ``networks``; never for a missing or non-IP one."""
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        address = parse_address(address)
    return address is not None and any(address in network for network in networks)
