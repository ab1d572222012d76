"""The semantic tier's gate on a static-routing gateway: is the transformer worth running?

A gateway that routes on a static token table (``router.static_encoder``) needs the transformer
only for the cache's lookup: ~5 ms of a miss whose routing took ~0.1 ms. The gate spends the
static vector the route stage makes anyway: the cache keeps each entry's static vector beside
its transformer vector (``router.cache.semantic``, space ``"static"``), and a lookup searches
those first. Only when the nearest entry of the request's scope is at least ``threshold``
close does the lookup run the transformer, the semantic search and the verifier; otherwise it
is a miss, and the kept answer's transformer vector is made after the response.

The threshold is an artifact (``models/cache/gate.json``), calibrated by
``python -m training.cache_gate`` for one static table (its id and sha256) on QQP's train
split: the highest static cosine that still lets through 95 % of the verifier's hits. A table
other than the one it names (another distillation, another size) gets no gate, with a log
line: lookups then run the transformer as before.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import msgspec

log = logging.getLogger("contextforge.cache")


class GateSpec(msgspec.Struct, frozen=True):
    """``gate.json``: which static table the threshold is for, and how it was chosen."""

    encoder: str  # the static encoder's id
    sha256: str  # its table's sha256 (``StaticEncoder.sha256``)
    dim: int
    threshold: float  # static cosine of the nearest same-scope entry needed to go on
    target_kept: float  # share of the verifier's hits it was chosen to keep
    verifier_sha256: str = ""  # the verifier whose hits it keeps (sha256 of its file)
    data: str = ""  # what it was calibrated on
    figures: dict[str, float] = {}  # kept and sent-on shares on the calibration data


@dataclass(frozen=True, slots=True)
class Gate:
    """A loaded gate: the threshold, and the static table it holds for."""

    encoder: str
    sha256: str
    dim: int
    threshold: float

    def reads(self, encoder: object) -> bool:
        """Whether ``encoder`` (a routing encoder) is the table this gate was calibrated on."""
        return (getattr(encoder, "kind", "") == "static"
                and getattr(encoder, "id", None) == self.encoder
                and getattr(encoder, "sha256", None) == self.sha256)

    @property
    def key(self) -> str:
        """``id:sha256`` (its head) of the table, as snapshots record an encoder."""
        return f"{self.encoder}:{self.sha256[:16]}"


def load_spec(path: str | Path) -> GateSpec:
    """``gate.json`` at ``path``; ``OSError`` or ``msgspec.ValidationError`` when unreadable."""
    return msgspec.json.decode(Path(path).read_bytes(), type=GateSpec)


def save_spec(spec: GateSpec, path: str | Path) -> Path:
    """Write ``spec`` as indented JSON (a reviewable artifact)."""
    path = Path(path)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(spec), indent=2) + b"\n")
    return path


def gate_for(path: str | Path | None, routing: object,
             verifier: str | Path | None = None) -> Gate | None:
    """The gate for a gateway whose router reads ``routing``: None when ``path`` is empty,
    when routing reads no static table (the transformer runs for routing anyway), or when
    the gate was calibrated on another table (logged: lookups then run the transformer).
    A gate calibrated with a verifier other than ``verifier`` (its file) still serves — it
    only stops lookups, every hit stays the verifier's — but may keep fewer of its hits than
    it says: logged, with how to recalibrate."""
    if not path or getattr(routing, "kind", "") != "static":
        return None
    try:
        spec = load_spec(path)
    except (OSError, msgspec.DecodeError) as exc:
        log.warning("cache: no gate (%s: %s); every lookup runs the transformer", path, exc)
        return None
    gate = Gate(spec.encoder, spec.sha256, spec.dim, spec.threshold)
    if not gate.reads(routing):
        log.warning("cache: the gate %s was calibrated on %s (table %s...), routing reads %s "
                    "(%s...): no gate, every lookup runs the transformer; calibrate one with "
                    "python -m training.cache_gate", path, spec.encoder, spec.sha256[:12],
                    getattr(routing, "id", "?"), str(getattr(routing, "sha256", ""))[:12])
        return None
    if verifier is not None and spec.verifier_sha256:
        try:
            mine = hashlib.sha256(Path(verifier).read_bytes()).hexdigest()
        except OSError:
            mine = ""  # a verifier folder (the cross-encoder's) or none: nothing to compare
        if mine and mine != spec.verifier_sha256:
            log.warning("cache: the gate %s was calibrated with another verifier than %s: it "
                        "may keep fewer of this one's hits than the %.0f %% it was set for; "
                        "recalibrate with python -m training.cache_gate", path, verifier,
                        spec.target_kept * 100)
    return gate
