"""Allowlist networks: parsed strictly from the config, leniently from stored keys, and an
address outside (or no address at all) is never admitted."""

from __future__ import annotations

import pytest

from router.governance.networks import lenient_networks, parse_network, within


def test_membership_compares_addresses_not_text():
    nets = [parse_network("10.0.0.0/8"), parse_network("2001:db8::/32")]
    assert within("10.1.2.3", nets) and within("::ffff:10.1.2.3", nets)  # dual-stack peer
    assert within("2001:DB8:0::1", nets)
    assert not within("11.0.0.1", nets) and not within("testclient", nets)
    assert not within(None, nets) and not within("", nets) and not within("10.1.2.3", [])


def test_config_entries_are_strict_and_stored_ones_lenient():
    assert parse_network("203.0.113.7").num_addresses == 1
    with pytest.raises(ValueError, match=r"host bits set: write 192\.168\.1\.0/24"):
        parse_network("192.168.1.10/24")
    # A stored key's entries: host bits allowed, a broken entry admits nobody (not a 500).
    assert lenient_networks(["192.168.1.10/24", "junk"]) == (parse_network("192.168.1.0/24"),)
    assert not within("10.0.0.1", lenient_networks(["junk"]))
