"""The cache's snapshots for a running gateway: reloaded at start-up, written every
``cache.snapshot_interval_s`` and at shutdown (``router.cache.snapshot``).

Taking the entries is a list copy on the event loop (a reference per entry); encoding and
writing run in a worker thread, so serving never waits on the disk. A crash loses at most the
entries kept since the last write: ``snapshot_interval_s`` worth (60 s by default);
``GET /admin/cache`` says how many that is now (``snapshot.kept_since``). A snapshot
that cannot be trusted is refused with one log line and the cache starts empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from router.cache.snapshot import SnapshotError, read_snapshot_with_encoder, write_snapshot

if TYPE_CHECKING:
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
            encoder, entries = await asyncio.to_thread(read_snapshot_with_encoder, self.path)
        except FileNotFoundError:
            return 0
        except (SnapshotError, OSError) as exc:
            log.error("cache snapshot refused, starting empty: %s", exc)
            return 0
        cache.restore(entries, encoder)
        if encoder != cache.encoder and any(e.vector is not None for e in entries):
            log.warning("cache: the snapshot's vectors were made by %s, not %s: its entries "
                        "answer exact repeats only", encoder or "an unknown encoder",
                        cache.encoder)
        cache.snapshot = (str(self.path), self.path.stat().st_mtime, cache.kept)
        log.info("cache: %d entries reloaded from %s", len(entries), self.path)
        return len(entries)

    async def write(self) -> None:
        cache = self.gateway.cache
        if cache is None:
            return
        entries, kept = cache.stored(), cache.kept
        try:
            await asyncio.to_thread(write_snapshot, self.path, entries, cache.encoder)
        except OSError as exc:  # a full disk must not stop serving
            log.error("cache snapshot not written to %s: %s", self.path, exc)
            return
        cache.snapshot = (str(self.path), time.time(), kept)

    async def run(self) -> None:
        """Write every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.write()
