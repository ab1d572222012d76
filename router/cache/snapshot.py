"""Cache snapshots: what a restart keeps of the cache.

One file (``cache.snapshot_path``), written atomically (a temp file beside it, fsynced, then
renamed over it), so a crash mid-write leaves the previous snapshot whole. The file is a
header line of JSON — a magic string, the format version, a digest of the payload and how
many entries — then the payload, the live entries encoded with msgpack, each with what the
semantic tier keeps of it (its question, scope and vector), so a restart keeps both tiers.
Loading refuses, with the reason, a file that is not ours, of another format version, or
whose payload does not match its digest (truncated, edited); the caller logs it and starts
empty rather than serve what it cannot trust. Entries that expired while the process was
down are dropped on load.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import msgspec

from router.cache.exact import Entry
from router.cache.store import Stored
from router.files import write_atomic

MAGIC = "contextforge-cache-snapshot"
FORMAT = 2  # 1: exact entries only; 2: with each entry's question, scope and vector
_ENCODE = msgspec.msgpack.Encoder()
_DECODE = {1: msgspec.msgpack.Decoder(list[Entry]), 2: msgspec.msgpack.Decoder(list[Stored])}


class SnapshotError(ValueError):
    """A snapshot that must not be loaded: not ours, another format, or damaged."""


def write_snapshot(path: Path, entries: list[Stored], encoder: str = "") -> int:
    """Write ``entries`` (their vectors made by ``encoder``, ``id:sha256``) to ``path``
    atomically; returns the bytes written."""
    payload = _ENCODE.encode(entries)
    header = json.dumps({"magic": MAGIC, "format": FORMAT, "entries": len(entries),
                         "encoder": encoder, "sha256": hashlib.sha256(payload).hexdigest(),
                         "written": time.time()}).encode() + b"\n"
    write_atomic(path, header + payload)
    return len(header) + len(payload)


def read_snapshot(path: Path, now: float | None = None) -> list[Stored]:
    """The live entries of the snapshot at ``path``; ``SnapshotError`` saying why it cannot be
    trusted; ``FileNotFoundError`` when there is none yet."""
    return _read(path, now)[1]


def read_snapshot_with_encoder(path: Path, now: float | None = None
                               ) -> tuple[str, list[Stored]]:
    """``read_snapshot`` and the ``id:sha256`` of the encoder that made its vectors ("" for
    a snapshot written before snapshots said)."""
    return _read(path, now)


def _read(path: Path, now: float | None) -> tuple[str, list[Stored]]:
    data = path.read_bytes()
    line, sep, payload = data.partition(b"\n")
    try:
        header = json.loads(line) if sep else None
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        raise SnapshotError(f"{path}: not a ContextForge cache snapshot")
    decoder = _DECODE.get(header.get("format"))  # type: ignore[arg-type]
    if decoder is None:
        raise SnapshotError(f"{path}: snapshot format {header.get('format')!r}, this version "
                            f"reads {sorted(_DECODE)}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise SnapshotError(f"{path}: the snapshot is damaged (its digest does not match)")
    try:
        decoded = decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"{path}: the snapshot does not decode: {exc}") from None
    stored = [s if isinstance(s, Stored) else Stored(s) for s in decoded]
    now = time.time() if now is None else now
    return str(header.get("encoder", "")), [s for s in stored if s.entry.expires > now]
