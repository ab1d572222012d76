"""Cache snapshots: atomic, reloaded whole, refused when they cannot be trusted."""

from __future__ import annotations

import msgspec
import pytest

from router.cache import Entry, ExactCache
from router.cache.snapshot import FORMAT, SnapshotError, read_snapshot, write_snapshot
from router.cache.store import ResponseCache, Stored


def entry(i: int, expires: float = 1e12) -> Entry:
    return Entry(id=f"ce-{i}", key=f"k{i}", tenant="t", user=None, route="auto", model="m",
                 body=b'{"x": %d}' % i, created=1.0, expires=expires, cost_usd=0.01 * i)


def test_a_snapshot_round_trips_live_entries_in_recency_order(tmp_path):
    cache = ExactCache(10, 10**6)
    for i in range(4):
        cache.put(entry(i, expires=50.0 if i == 2 else 1e12))
    cache.get("k0")  # most recently used now
    path = tmp_path / "cache" / "snapshot.bin"
    assert write_snapshot(path, ResponseCache(cache).stored()) > 0
    got = read_snapshot(path, now=100.0)
    assert [s.entry.id for s in got] == ["ce-1", "ce-3", "ce-0"]  # ce-2 expired while down
    assert got[-1] == Stored(entry(0))
    assert [p.name for p in path.parent.iterdir()] == ["snapshot.bin"]  # no temp left


@pytest.mark.parametrize("damage", [
    lambda b: b"hello world\n" + b,  # not ours
    lambda b: b.replace(f'"format": {FORMAT}'.encode(), b'"format": 9'),  # another version
    lambda b: b[:-5],  # truncated
    lambda b: b[:-3] + b"xyz",  # edited
])
def test_a_foreign_or_damaged_snapshot_is_refused_with_the_reason(tmp_path, damage):
    path = tmp_path / "snapshot.bin"
    write_snapshot(path, [Stored(entry(1)), Stored(entry(2))])
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SnapshotError, match="snapshot"):
        read_snapshot(path)


def test_a_format_1_snapshot_still_loads_its_exact_entries(tmp_path):
    # Format 1 (before the semantic tier) held bare entries; a restart after an upgrade keeps
    # them, without vectors.
    import hashlib
    import json

    payload = msgspec.msgpack.encode([entry(1), entry(2)])
    header = json.dumps({"magic": "contextforge-cache-snapshot", "format": 1, "entries": 2,
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    path = tmp_path / "old.bin"
    path.write_bytes(header + b"\n" + payload)
    assert read_snapshot(path) == [Stored(entry(1)), Stored(entry(2))]
