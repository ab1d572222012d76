"""Labelled prompt packs: prompts with the reference a scorer checks answers against.

``contextforge collect`` sends a pack's prompts to the user's own deployments and scores each
answer against its row's reference. A pack is a JSONL file (gzipped when it ends in ``.gz``),
one :class:`PackRow` a line::

    {"id": "arc_challenge/arc-challenge.test.1108", "task": "arc_challenge",
     "prompt": "...Answer:",
     "reference": {"kind": "choice", "answer": "D", "choices": {"A": "...", "B": "..."}},
     "source": {"file": "routerbench/arc_challenge_train.csv.gz",
                "sample_id": "arc-challenge.test.1108"}}

``reference`` has the field names of ``eval.scoring.Reference``, so it converts into it
unchanged. ``source`` (optional) names the built-in data row the prompt came from, so a
collected score can be compared with the outcome recorded there for the data model a simulated
deployment answered as (:func:`answered_as`, :func:`compare_recorded`). The shipped pack,
``starter``, is built by ``eval/build_pack.py``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from eval.scoring import Reference
    from router.config import Config

DATA_DIR = Path(__file__).resolve().parents[1] / "datasets"
PACKS_DIR = DATA_DIR / "packs"
RESPONSE_SUFFIX = "|model_response"  # RouterBench: a "<model>|model_response" column per model
# RouterBench cells hold whole 5-shot prompts and answers.
csv.field_size_limit(sys.maxsize)


class PackReference(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a correct answer is: ``eval.scoring.Reference``'s fields, kept apart so reading a
    pack needs no scorer. ``choice``: ``answer`` is the right letter of ``choices``."""

    kind: Literal["choice", "numeric", "match", "code"]
    answer: str | list[str] | None = None
    tests: list[str] = []
    setup: str = ""
    choices: dict[str, str] = {}


class PackSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The built-in data row a prompt came from: a file under ``datasets/`` and its id there."""

    file: str
    sample_id: str


class PackRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One labelled prompt: what a client sends (``prompt``) and how its answer is scored."""

    id: str
    task: str
    prompt: str
    reference: PackReference
    source: PackSource | None = None


class PackError(ValueError):
    """A pack file that cannot be used; the message names file and line."""


_DECODER = msgspec.json.Decoder(PackRow)
_ENCODER = msgspec.json.Encoder()


def resolve_pack(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped pack by name (``starter`` -> ``datasets/packs/starter.jsonl.gz``) or a path."""
    text = os.fspath(name_or_path)
    shipped = PACKS_DIR / f"{text}.jsonl.gz"
    if os.sep not in text and "/" not in text and shipped.is_file():
        return shipped
    return Path(text)


def _open_text(path: Path, mode: str):
    if path.name.endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_pack(name_or_path: str | os.PathLike[str]) -> list[PackRow]:
    """Every row of a pack; :class:`PackError` naming the line of a bad or repeated row."""
    path = resolve_pack(name_or_path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.name.removesuffix(".jsonl.gz")
                                   for p in PACKS_DIR.glob("*.jsonl.gz")))
        raise PackError(f"{path}: no such pack file (shipped packs: {shipped or 'none'})")
    rows: list[PackRow] = []
    seen: dict[str, int] = {}
    with _open_text(path, "r") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = _DECODER.decode(text)
            except msgspec.DecodeError as exc:
                raise PackError(f"{path}:{line}: {exc}") from None
            if row.id in seen:
                raise PackError(f"{path}:{line}: id {row.id!r} repeats line {seen[row.id]}")
            seen[row.id] = line
            rows.append(row)
    if not rows:
        raise PackError(f"{path}: empty pack")
    return rows


def write_pack(path: str | os.PathLike[str], rows: Iterable[PackRow]) -> Path:
    """Write ``rows`` as a pack; a ``.gz`` file is byte-identical for the same rows (no
    timestamp in its header), so a rebuilt pack keeps the sha256 the manifest lists."""
    path = Path(path)
    data = b"".join(_ENCODER.encode(r) + b"\n" for r in rows)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)
    return path


def routerbench_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of one RouterBench CSV (``datasets/routerbench/*.csv.gz``) as dicts."""
    with gzip.open(path, "rb") as raw:
        yield from csv.DictReader(io.TextIOWrapper(raw, "utf-8", newline=""))


def recorded_outcomes(rows: Sequence[PackRow], data_models: Iterable[str],
                      data_dir: Path = DATA_DIR) -> dict[tuple[str, str], float]:
    """``(pack id, data model) -> 0/1`` as the source data recorded it, for the rows that name
    a source; a cell the data leaves empty is absent."""
    wanted = set(data_models)
    by_file: dict[str, dict[str, str]] = {}  # file -> sample_id -> pack id
    for r in rows:
        if r.source is not None:
            by_file.setdefault(r.source.file, {})[r.source.sample_id] = r.id
    out: dict[tuple[str, str], float] = {}
    for file, ids in by_file.items():
        for rec in routerbench_rows(data_dir / file):
            pack_id = ids.get(rec.get("sample_id", ""))
            if pack_id is None:
                continue
            for model in wanted:
                cell = rec.get(model, "")
                if cell:
                    out[pack_id, model] = float(cell)
    return out


def source_models(rows: Sequence[PackRow], data_dir: Path = DATA_DIR) -> set[str]:
    """The data models whose outcomes the rows' source files record (their header columns)."""
    models: set[str] = set()
    for file in sorted({r.source.file for r in rows if r.source is not None}):
        header = next(routerbench_rows(data_dir / file), {})
        models |= {c[: -len(RESPONSE_SUFFIX)] for c in header if c.endswith(RESPONSE_SUFFIX)}
    return models


class Scored(Protocol):
    """A scored pair as ``contextforge collect`` writes it (``eval.collect.CollectedRow``)."""

    pack_id: str
    model: str
    score: float
    detail: str


class Disagreement(msgspec.Struct, frozen=True):
    """A pair whose collected score differs from the outcome its data model has recorded."""

    pack_id: str
    model: str
    data_model: str
    recorded: float
    score: float
    detail: str  # the scorer's reason for its score


class Agreement(msgspec.Struct):
    """Collected scores against the recorded outcomes of the data models that answered."""

    compared: int
    agreed: int
    rate: float  # agreed / compared (1.0 when nothing was compared)
    not_compared: int  # rows whose model answers as no data model, or with no recorded cell
    disagreements: list[Disagreement]


def compare_recorded(scored: Iterable[Scored], pack: Sequence[PackRow],
                     answers_as: Mapping[str, str], data_dir: Path = DATA_DIR) -> Agreement:
    """Each collected score against the 0/1 outcome recorded for the same prompt by the data
    model its deployment answered as (``answers_as``: catalog model -> data model); a score
    agrees when it falls on the same side of 0.5."""
    scored = list(scored)
    outcomes = recorded_outcomes(pack, set(answers_as.values()), data_dir)
    agreed, skipped, disagreements = 0, 0, []
    for s in scored:
        data_model = answers_as.get(s.model)
        recorded = outcomes.get((s.pack_id, data_model)) if data_model else None
        if data_model is None or recorded is None:
            skipped += 1
        elif (s.score >= 0.5) == (recorded >= 0.5):
            agreed += 1
        else:
            disagreements.append(Disagreement(s.pack_id, s.model, data_model, recorded,
                                              s.score, s.detail))
    compared = len(scored) - skipped
    return Agreement(compared, agreed, agreed / compared if compared else 1.0, skipped,
                     disagreements)


def answered_as(config: Config, models: Sequence[str], known: Collection[str]) -> dict[str, str]:
    """The data model (among ``known``) whose recorded answers each catalog model's simulated
    deployments return, resolved as the gateway's recorded lookup does: a deployment's
    ``simulated.answers_as``, else the model itself when the data has it, else its
    ``stands_in_for``. A model with any other deployment, or deployments answering as
    different data models, is left out: its answers are not recorded ones."""
    from router.catalog import Catalog

    catalog, out = Catalog(config.models), {}
    for name in models:
        entry = catalog.get(name)
        own = entry.name if entry.name in known else entry.stands_in_for
        answers = {(getattr(getattr(d, "simulated", None), "answers_as", None) or own)
                   if d.provider == "simulated" else None for d in config.deployments(entry)}
        if len(answers) == 1 and (data_model := answers.pop()) in known:
            out[name] = data_model
    return out


def load_references(name_or_path: str | os.PathLike[str] | None = None,
                    ) -> dict[str, Reference]:
    """A pack's references keyed as ``eval score`` matches logged prompts (whitespace
    collapsed; ``eval.score_logs.reference_key``); default: the shipped ``starter`` pack."""
    from eval.score_logs import reference_key
    from eval.scoring import Reference

    return {reference_key(row.prompt): msgspec.convert(msgspec.to_builtins(row.reference),
                                                       Reference)
            for row in read_pack(name_or_path or "starter")}
