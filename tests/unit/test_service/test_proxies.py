"""The client address: a forwarding header is believed only from a trusted proxy, walked from
the right, and a malformed one never crashes nor names a made-up client."""

from __future__ import annotations

import pytest
from litestar.datastructures import Address, Headers

from service.proxies import TrustedProxies

XFF = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
RFC = TrustedProxies(["127.0.0.1", "10.0.0.0/8"], header="forwarded")


@pytest.mark.parametrize("peer,values,client", [
    ("127.0.0.1", [], "127.0.0.1"),  # no header: the peer
    ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
    ("198.51.100.1", ["203.0.113.7"], "198.51.100.1"),  # untrusted peer: header ignored
    ("127.0.0.1", ["203.0.113.7, 198.51.100.2"], "198.51.100.2"),  # first untrusted hop
    ("127.0.0.1", ["203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # trusted hops skipped
    ("127.0.0.1", ["203.0.113.7", "10.1.2.3"], "203.0.113.7"),  # several header lines
    ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),  # all trusted: the farthest
    ("127.0.0.1", ["junk, 198.51.100.2"], "198.51.100.2"),  # junk left of the client: moot
    ("127.0.0.1", ["198.51.100.2, junk"], "127.0.0.1"),  # junk reached: the peer
    ("127.0.0.1", ["203.0.113.7, unknown, 10.1.2.3"], "127.0.0.1"),
    ("127.0.0.1", ["203.0.113.7:4711"], "203.0.113.7"),  # ports are dropped
    ("127.0.0.1", ["203.0.113.7:http"], "127.0.0.1"),
    ("127.0.0.1", ["[2001:db9::1]:443"], "2001:db9::1"),
    ("127.0.0.1", ["2001:db9::1, 2001:db8::5"], "2001:db9::1"),  # bare IPv6, trusted v6 hop
    ("127.0.0.1", ["[2001:db9::1"], "127.0.0.1"),
    ("127.0.0.1", ["", " , "], "127.0.0.1"),  # blanks: no hop
    ("127.0.0.1", ["0" * 10_000], "127.0.0.1"),
    ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # dual-stack socket's IPv4 peer
    ("::ffff:10.0.0.1", ["::ffff:203.0.113.7"], "203.0.113.7"),
    ("testclient", ["203.0.113.7"], "testclient"),  # a peer that is no address: untrusted
    (None, ["203.0.113.7"], None),  # a Unix socket: no peer
])
def test_x_forwarded_for(peer, values, client):
    assert XFF.client_of(peer, values) == client


@pytest.mark.parametrize("values,client", [
    (["for=203.0.113.7"], "203.0.113.7"),
    (["For=203.0.113.7;proto=https;by=10.0.0.1"], "203.0.113.7"),
    (['for=203.0.113.7, for="[2001:db9:cafe::17]:4711"'], "2001:db9:cafe::17"),
    (["for=198.51.100.2, for=10.1.2.3"], "198.51.100.2"),
    (["for=unknown"], "127.0.0.1"),  # RFC 7239's unknown and obfuscated names: the peer
    (["for=_hidden"], "127.0.0.1"),
    (["proto=https"], "127.0.0.1"),  # an element naming no client
])
def test_forwarded(values, client):
    assert RFC.client_of("127.0.0.1", values) == client


class Connection:
    """What ``client_address`` reads of a request: its peer and its headers."""

    def __init__(self, peer: str, **headers: str):
        self.client = Address(peer, 50000)
        self.headers = Headers({k.replace("_", "-"): v for k, v in headers.items()})


def test_only_the_configured_header_is_read():
    # A proxy appending to one header passes the other through from the client untouched.
    both = Connection("127.0.0.1", x_forwarded_for="203.0.113.7", forwarded="for=192.0.2.1")
    assert XFF.client_address(both) == "203.0.113.7"  # type: ignore[arg-type]
    assert RFC.client_address(both) == "192.0.2.1"  # type: ignore[arg-type]


def test_no_trusted_proxies_means_the_peer_whatever_the_header_says():
    spoofed = Connection("127.0.0.1", x_forwarded_for="203.0.113.7")
    assert TrustedProxies().client_address(spoofed) == "127.0.0.1"  # type: ignore[arg-type]
