"""The cache's snapshots for a running gateway: reloaded at start-up, written every
``cache.snapshot_interval_s`` and at shutdown (``router.cache.snapshot``).

Taking the entries is a list copy on the event loop (a reference per entry); encoding and
writing run in a worker thread, so serving never waits on the disk. A crash loses at most the
entries kept since the last write: ``snapshot_interval_s`` worth (60 s by default);
``GET /admin/cache`` says how many that is now (``snapshot.kept_since``). A snapshot
that cannot be trusted is refused with one log line and the cache starts empty.

With a gate (``router.cache.gate``), entries come back with their static vectors; a snapshot
that has none of this table's (written before gates, or on another table) has them rebuilt
from the entries' questions by the routing table (a lookup per question, in a worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import numpy as np

from router.cache.snapshot import Snapshot, SnapshotError, load_snapshot, write_snapshot

if TYPE_CHECKING:
    from router.cache.store import ResponseCache, Stored
    from service.gateway import Gateway

log = logging.getLogger("contextforge.cache")


class CacheSnapshots:
    """Load, then keep writing, the snapshot of ``gateway.cache`` at ``path``."""

    def __init__(self, gateway: Gateway, path: Path, interval_s: float):
        self.gateway, self.path, self.interval_s = gateway, path, interval_s

    async def load(self) -> int:
        """Put the snapshot's live entries in the cache (oldest use first); how many."""
        cache = self.gateway.cache
        if cache is None:
            return 0
        try:
            snapshot = await asyncio.to_thread(load_snapshot, self.path)
        except FileNotFoundError:
            return 0
        except (SnapshotError, OSError) as exc:
            log.error("cache snapshot refused, starting empty: %s", exc)
            return 0
        encoder = snapshot.encoder
        entries, static_encoder = await self._with_static(cache, snapshot)
        cache.restore(entries, encoder, static_encoder)
        if encoder != cache.encoder and any(e.vector is not None for e in entries):
            log.warning("cache: the snapshot's vectors were made by %s, not %s: its entries "
                        "answer exact repeats only", encoder or "an unknown encoder",
                        cache.encoder)
        cache.snapshot = (str(self.path), self.path.stat().st_mtime, cache.kept)
        log.info("cache: %d entries reloaded from %s", len(entries), self.path)
        return len(entries)

    async def _with_static(self, cache: ResponseCache, snapshot: Snapshot
                           ) -> tuple[list[Stored], str]:
        """The snapshot's entries, with static vectors of the gate's table: their own, else
        (another table, none yet) rebuilt from their questions by the routing table."""
        gate, routing = cache.gate, self.gateway.engine.encoder
        entries = snapshot.entries
        if gate is None or not gate.reads(routing):
            return entries, snapshot.static_encoder
        same = snapshot.static_encoder == gate.key
        todo = [i for i, s in enumerate(entries) if s.text is not None and s.vector is not None
                and (s.static is None or not same)]
        if not todo:
            return entries, gate.key if same else snapshot.static_encoder
        texts = [entries[i].text or "" for i in todo]
        vectors = await asyncio.to_thread(_encode_in_chunks, routing, texts)
        entries = list(entries)
        for i, v in zip(todo, vectors, strict=True):
            entries[i] = msgspec.structs.replace(entries[i], static=v.tobytes())
        log.info("cache: %d static vectors rebuilt for the gate (%s)", len(todo), gate.key)
        return entries, gate.key

    async def write(self) -> None:
        cache = self.gateway.cache
        if cache is None:
            return
        entries, kept = cache.stored(), cache.kept
        try:
            await asyncio.to_thread(write_snapshot, self.path, entries, cache.encoder,
                                    cache.gate.key if cache.gate is not None else "")
        except OSError as exc:  # a full disk must not stop serving
            log.error("cache snapshot not written to %s: %s", self.path, exc)
            return
        cache.snapshot = (str(self.path), time.time(), kept)

    async def run(self) -> None:
        """Write every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.write()


def _encode_in_chunks(encoder, texts: list[str], chunk: int = 4096) -> np.ndarray:
    return np.concatenate([encoder.encode(texts[i:i + chunk]).astype(np.float32)
                           for i in range(0, len(texts), chunk)])
