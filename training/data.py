"""Load routing data into one :class:`RoutingTable`: a built-in dataset by name, or a user's file.

``load("routerbench")`` (or ``routerdc``, ``routellm-mmlu``, ``routellm-gsm8k``) parses a built-in
from ``<repo>/datasets`` once per process and returns the cached table: its arrays are read-only
and callers must not mutate its lists or ``meta`` either (``table.select``/``split`` give copies).

``load("my.jsonl")`` / ``load("my.csv")`` reads one row per (prompt, model) outcome:

    prompt, model, score   required: non-empty strings; score a number in [0, 1]
    cost                   optional: billed USD (>= 0)
    input_tokens, output_tokens   optional non-negative ints, used to estimate a missing cost
    split, task            optional strings, one value per prompt

and pivots it to one row per distinct prompt (in order of first appearance), one column per model
(sorted); a (prompt, model) pair given twice is an error, a missing one is NaN (score and cost).
Rows without ``cost`` get an estimate from token counts and ``datasets/prices.json``. Every bad
row raises :class:`DataError` naming file, line and field. ``.gz`` files are read too.

``load_pairs("qqp")`` / ``load_pairs("pairs.jsonl")`` read labelled text pairs for the semantic
cache: QQP gets a fixed split (seed-0 permutation: the first 20 % of it, rounded down, is
``test``, the rest ``train``); a user file's split column is optional (``""`` when absent).
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from training import builtin_data
from training.builtin_data import (
    DEFAULT_OUTPUT_TOKENS,
    EXPECTED_OUTPUT_TOKENS,
    count_tokens,
    load_prices,
)
from training.table import RoutingTable

__all__ = ["BUILTINS", "DataError", "Pairs", "count_tokens", "load", "load_pairs"]

QQP_TEST_FRACTION = 0.2
QQP_SPLIT_SEED = 0


class DataError(ValueError):
    """A data file or row that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Pairs:
    """Labelled text pairs: ``labels[i]`` is 1 when ``text_a[i]`` and ``text_b[i]`` ask the same."""

    text_a: list[str]
    text_b: list[str]
    labels: np.ndarray  # (n,) int8, 0 or 1
    splits: np.ndarray  # (n,) str: "train", "test", or "" when the source has none
    name: str = ""

    def __len__(self) -> int:
        return len(self.text_a)

    def select(self, mask: np.ndarray) -> Pairs:
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return Pairs(
            text_a=[self.text_a[i] for i in idx],
            text_b=[self.text_b[i] for i in idx],
            labels=self.labels[idx],
            splits=self.splits[idx],
            name=self.name,
        )

    def split(self, name: str) -> Pairs:
        return self.select(self.splits == name)


def _qqp() -> Pairs:
    text_a, text_b, labels = builtin_data.read_qqp()
    n = len(labels)
    perm = np.random.default_rng(QQP_SPLIT_SEED).permutation(n)
    splits = np.full(n, "train", dtype="<U5")
    splits[perm[: int(n * QQP_TEST_FRACTION)]] = "test"
    return Pairs(text_a, text_b, labels, splits, name="qqp")


# The one registry of built-in datasets: name -> loader (a RoutingTable, or Pairs for the cache).
BUILTINS: dict[str, Callable[[], RoutingTable | Pairs]] = {
    "routerbench": builtin_data.load_routerbench,
    "routerdc": builtin_data.load_routerdc,
    "routellm-mmlu": builtin_data.load_routellm_mmlu,
    "routellm-gsm8k": builtin_data.load_routellm_gsm8k,
    "qqp": _qqp,
}


@functools.cache
def _builtin(name: str) -> RoutingTable | Pairs:
    data = BUILTINS[name]()
    arrays = (
        [data.scores, data.costs, data.tasks, data.splits, *data.meta.values()]
        if isinstance(data, RoutingTable)
        else [data.labels, data.splits]
    )
    for arr in arrays:
        if isinstance(arr, np.ndarray):
            arr.flags.writeable = False  # shared by every caller in this process
    return data


def load(
    name_or_path: str | os.PathLike, *, prices: Mapping[str, Mapping] | None = None
) -> RoutingTable:
    """A built-in routing dataset by name (cached, read-only) or a user's JSONL/CSV file.

    ``prices`` (``{model: {"input": USD/1M, "output": USD/1M}}``) replaces
    ``datasets/prices.json`` when estimating a user file's missing costs.
    """
    key = os.fspath(name_or_path)
    if key in BUILTINS:
        data = _builtin(key)
        if not isinstance(data, RoutingTable):
            raise DataError(f"{key}: holds text pairs, not a routing table: use load_pairs")
        return data
    return _load_user_table(key, prices if prices is not None else load_prices())


def load_pairs(name_or_path: str | os.PathLike) -> Pairs:
    """``qqp`` (cached, read-only) or a user's JSONL/CSV of ``{text_a, text_b, label[, split]}``."""
    key = os.fspath(name_or_path)
    if key in BUILTINS:
        data = _builtin(key)
        if not isinstance(data, Pairs):
            raise DataError(f"{key}: is a routing table, not text pairs: use load")
        return data
    text_a, text_b, labels, splits = [], [], [], []
    for line, rec, is_csv in _records(key, ("text_a", "text_b", "label")):
        field = _Field(key, line, rec, is_csv)
        text_a.append(field.text("text_a", required=True))
        text_b.append(field.text("text_b", required=True))
        labels.append(field.label("label"))
        splits.append(field.text("split") or "")
    return Pairs(
        text_a,
        text_b,
        np.array(labels, dtype=np.int8),
        np.array(splits, dtype=str),
        name=key,
    )


# ---------------------------------------------------------------------------------------------
# Reading user files


def _records(src: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict, bool]]:
    """``(line number, record, is_csv)`` for each data row of a .jsonl or .csv file (or .gz).

    A CSV header without one of the ``required`` columns is an error on line 1.
    """
    path = Path(src)
    lower = path.name.lower()
    gz = lower.endswith(".gz")
    base = lower.removesuffix(".gz")
    kind = ".jsonl" if base.endswith(".jsonl") else ".csv" if base.endswith(".csv") else ""
    if not kind:
        names = ", ".join(BUILTINS)
        raise DataError(
            f"{src}: unknown file type {Path(base).suffix or '(no extension)'!r}: expected "
            f".jsonl or .csv (optionally .gz), or a built-in dataset name ({names})"
        )
    if not path.is_file():
        raise DataError(f"{src}: no such file")
    opener = gzip.open if gz else open
    n = 0
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            rows = _jsonl_rows(src, f) if kind == ".jsonl" else _csv_rows(src, f, required)
            for n, (line, rec) in enumerate(rows, 1):  # noqa: B007
                yield line, rec, kind == ".csv"
    except UnicodeDecodeError as e:
        raise DataError(f"{src}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if n == 0:
        raise DataError(f"{src}: empty file: no data rows")


def _jsonl_rows(src: str, f) -> Iterator[tuple[int, dict]]:
    for line, text in enumerate(f, 1):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{src}:{line}: invalid JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{src}:{line}: expected a JSON object, got {_show(rec)}")
        yield line, rec


def _csv_rows(src: str, f, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(f)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    for name in required:
        if name not in header:
            raise DataError(f"{src}:1: field {name!r}: missing required column in the header")
    for start, row in _with_start_lines(reader):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise DataError(
                f"{src}:{start}: {len(row)} fields but the header (line 1) has {len(header)}"
            )
        # An empty cell is an absent value.
        yield start, {h: cell for h, cell in zip(header, row, strict=False) if cell != ""}


def _with_start_lines(reader) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the (1-based) line it starts on; a quoted cell may span lines."""
    prev = reader.line_num
    for row in reader:
        yield prev + 1, row
        prev = reader.line_num


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


class _Field:
    """Typed access to one record's fields, raising DataError with file:line and field name."""

    def __init__(self, src: str, line: int, rec: dict, is_csv: bool) -> None:
        self.src, self.line, self.rec, self.is_csv = src, line, rec, is_csv

    def error(self, field: str, msg: str) -> DataError:
        return DataError(f"{self.src}:{self.line}: field {field!r}: {msg}")

    def _get(self, field: str, required: bool) -> object:
        value = self.rec.get(field)
        if value is None and required:
            raise self.error(field, "missing required field")
        return value

    def _shown(self, value: object) -> str:
        if self.is_csv and isinstance(value, str):
            try:
                float(value)
                return value
            except ValueError:
                pass
        return _show(value)

    def text(self, field: str, required: bool = False) -> str | None:
        value = self._get(field, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(field, f"expected a string, got {_show(value)}")
        if required and not value.strip():
            raise self.error(field, f"expected a non-empty string, got {_show(value)}")
        return value

    def number(
        self, field: str, lo: float, hi: float, what: str, required: bool = False
    ) -> float | None:
        value = self._get(field, required)
        if value is None:
            return None
        x: float | None = None
        if self.is_csv and isinstance(value, str):
            try:
                x = float(value)
            except ValueError:
                x = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            x = float(value)
        if x is None or not math.isfinite(x) or not lo <= x <= hi:
            raise self.error(field, f"expected {what}, got {self._shown(value)}")
        return x

    def count(self, field: str) -> int | None:
        x = self.number(field, 0, math.inf, "a non-negative integer")
        if x is not None and not x.is_integer():
            raise self.error(field, f"expected a non-negative integer, got {self._shown(x)}")
        return None if x is None else int(x)

    def label(self, field: str) -> int:
        x = self.number(field, 0, 1, "0 or 1", required=True)
        if x not in (0.0, 1.0):
            raise self.error(field, f"expected 0 or 1, got {self._shown(self.rec[field])}")
        return int(x)


class _Cell(NamedTuple):
    row: int
    model: str
    score: float
    cost: float | None
    input_tokens: int | None
    output_tokens: int | None
    line: int


def _load_user_table(src: str, prices: Mapping[str, Mapping]) -> RoutingTable:
    index: dict[str, int] = {}  # prompt -> row
    per_prompt: list[dict[str, tuple[str, int]]] = []  # row -> {"split"/"task": (value, line)}
    seen: dict[tuple[int, str], int] = {}  # (row, model) -> line
    cells: list[_Cell] = []
    for line, rec, is_csv in _records(src, ("prompt", "model", "score")):
        f = _Field(src, line, rec, is_csv)
        prompt = f.text("prompt", required=True)
        model = f.text("model", required=True)
        score = f.number("score", 0, 1, "a number in [0, 1]", required=True)
        cost = f.number("cost", 0, math.inf, "a cost in USD >= 0")
        n_in, n_out = f.count("input_tokens"), f.count("output_tokens")
        i = index.setdefault(prompt, len(index))
        if i == len(per_prompt):
            per_prompt.append({})
        if (i, model) in seen:
            raise f.error(
                "model", f"{model!r} already has a score for this prompt (line {seen[i, model]})"
            )
        seen[i, model] = line
        for key in ("split", "task"):
            value = f.text(key)
            if value is None:
                continue
            have = per_prompt[i].setdefault(key, (value, line))
            if have[0] != value:
                raise f.error(
                    key,
                    f"{value!r} differs from {have[0]!r} given for the same "
                    f"prompt on line {have[1]}",
                )
        cells.append(_Cell(i, model, score, cost, n_in, n_out, line))

    prompts = list(index)
    models = sorted({c.model for c in cells})
    col = {m: j for j, m in enumerate(models)}
    tasks = [p.get("task", ("", 0))[0] for p in per_prompt]
    scores = np.full((len(prompts), len(models)), np.nan)
    costs = np.full_like(scores, np.nan)
    for c in cells:
        scores[c.row, col[c.model]] = c.score
        if c.cost is not None:
            costs[c.row, col[c.model]] = c.cost
    estimate = [c for c in cells if c.cost is None]
    if estimate:
        rows = np.array([c.row for c in estimate])
        cols = np.array([col[c.model] for c in estimate])
        costs[rows, cols] = _estimate_cells(src, estimate, prompts, tasks, prices)
    n_real = len(cells) - len(estimate)
    source = "real" if not estimate else "estimated" if n_real == 0 else "mixed"
    return RoutingTable(
        name=src,
        prompts=prompts,
        models=models,
        scores=scores,
        costs=costs,
        tasks=np.array(tasks, dtype=str),
        splits=np.array([p.get("split", ("", 0))[0] for p in per_prompt], dtype=str),
        cost_source=source,
        meta={
            "description": f"user data from {src}: {len(cells)} (prompt, model) outcomes",
            "cost_note": (
                f"{n_real} outcomes with a given cost (USD), {len(estimate)} estimated from "
                "input/output token counts (MiniLM token count of the prompt when input_tokens "
                f"is absent; {DEFAULT_OUTPUT_TOKENS} output tokens, or the task's expected "
                "length, when output_tokens is absent) x prices per 1M tokens. NaN where a "
                "(prompt, model) pair is missing."
            ),
        },
    )


def _estimate_cells(
    src: str,
    cells: list[_Cell],
    prompts: list[str],
    tasks: list[str],
    prices: Mapping[str, Mapping],
) -> np.ndarray:
    """Estimated USD of outcomes without a cost: token counts x the model's prices."""
    for c in cells:
        p = prices.get(c.model)
        if p is None or not all(isinstance(p.get(k), int | float) for k in ("input", "output")):
            raise DataError(
                f"{src}:{c.line}: field 'cost': no cost given and no price for model "
                f"{c.model!r}: add a `cost` (USD) to its rows, or an input/output price per "
                "1M tokens for the model to datasets/prices.json"
            )
    need = sorted({c.row for c in cells if c.input_tokens is None})
    counted = dict(zip(need, count_tokens([prompts[i] for i in need]).tolist(), strict=True))
    n_in = np.array(
        [c.input_tokens if c.input_tokens is not None else counted[c.row] for c in cells]
    )
    n_out = np.array(
        [
            c.output_tokens
            if c.output_tokens is not None
            else EXPECTED_OUTPUT_TOKENS.get(tasks[c.row], DEFAULT_OUTPUT_TOKENS)
            for c in cells
        ]
    )
    p_in = np.array([float(prices[c.model]["input"]) for c in cells])
    p_out = np.array([float(prices[c.model]["output"]) for c in cells])
    return (n_in * p_in + n_out * p_out) / 1e6
