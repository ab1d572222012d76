"""Cache snapshots: what a restart keeps of the cache.

One file (``cache.snapshot_path``), written atomically (a temp file beside it, fsynced, then
renamed over it), so a crash mid-write leaves the previous snapshot whole. The file is a
header line of JSON — a magic string, the format version, a digest of the payload and how
many entries, which encoders made the vectors — then the payload, the live entries encoded
with msgpack, each with what the semantic tier keeps of it (its question, scope, vector and,
when the cache has a gate, its static routing vector), so a restart keeps both tiers.
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
# 1: exact entries only; 2: with each entry's question, scope and vector; 3: and its static
# vector (the header names the static table). Every earlier format still loads.
FORMAT = 3
_ENCODE = msgspec.msgpack.Encoder()
_STORED = msgspec.msgpack.Decoder(list[Stored])
_DECODE = {1: msgspec.msgpack.Decoder(list[Entry]), 2: _STORED, 3: _STORED}


class SnapshotError(ValueError):
    """A snapshot that must not be loaded: not ours, another format, or damaged."""


class Snapshot(msgspec.Struct, frozen=True):
    """A snapshot's live entries and the encoders (``id:sha256``) that made their vectors
    ("" where the snapshot does not say: written before it did, or no static vectors)."""

    entries: list[Stored]
    encoder: str = ""
    static_encoder: str = ""


def write_snapshot(path: Path, entries: list[Stored], encoder: str = "",
                   static_encoder: str = "") -> int:
    """Write ``entries`` (their vectors made by ``encoder``, ``id:sha256``, their static
    vectors by ``static_encoder``) to ``path`` atomically; returns the bytes written."""
    payload = _ENCODE.encode(entries)
    header = json.dumps({"magic": MAGIC, "format": FORMAT, "entries": len(entries),
                         "encoder": encoder, "static_encoder": static_encoder,
                         "sha256": hashlib.sha256(payload).hexdigest(),
                         "written": time.time()}).encode() + b"\n"
    write_atomic(path, header + payload)
    return len(header) + len(payload)


def read_snapshot(path: Path, now: float | None = None) -> list[Stored]:
    """The live entries of the snapshot at ``path``; ``SnapshotError`` saying why it cannot be
    trusted; ``FileNotFoundError`` when there is none yet."""
    return load_snapshot(path, now).entries


def read_snapshot_with_encoder(path: Path, now: float | None = None
                               ) -> tuple[str, list[Stored]]:
    """``read_snapshot`` and the ``id:sha256`` of the encoder that made its vectors ("" for
    a snapshot written before snapshots said)."""
    snapshot = load_snapshot(path, now)
    return snapshot.encoder, snapshot.entries


def load_snapshot(path: Path, now: float | None = None) -> Snapshot:
    """The snapshot at ``path``: its live entries and the encoders of their vectors;
    ``SnapshotError`` saying why it cannot be trusted; ``FileNotFoundError`` when there is
    none yet."""
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
    return Snapshot([s for s in stored if s.entry.expires > now], str(header.get("encoder", "")),
                    str(header.get("static_encoder", "")))
