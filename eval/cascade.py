"""Offline evaluation of LLM cascades: ask cheap model(s) first, escalate when a check fails.

``table.meta["responses"]`` holds every model's real answer, so the simulation is exact: a row
costs the billed costs of the models actually called and scores the answer finally returned.
The check depends on the answer type read from the prompt: multiple choice needs a quorum of
equal letters (:func:`mc_answer`); code takes the first answer that parses (:func:`code_parses`).
:func:`search` keeps the train-Pareto cascades of a modest family and :func:`evaluate_cascades`
scores exactly those on test. ``RoutingTable.select`` does not subset ``meta["responses"]``, so
rows travel as :class:`Prepared` blocks (answers checked once) instead.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from eval import metrics
from training.table import RoutingTable

Plan = Mapping[str, "Cascade"]  # answer kind (see kind_of) -> cascade

_BARE = re.compile(r"\s*[(\[]?([A-Z])[)\]]?[.:]?\s*")
_LEAD = re.compile(r"\s*[(\[]?([A-Z])(?:[)\]:.]|\s+\()")
_KEYED = re.compile(r"\b(?i:answer|choice|option)\b(?:\s+is)?\s*[:=\-]?\s*[(\[]?([A-Z])\b")
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_TAG = re.compile(r"\[PYTHON\](.*?)(?:\[/PYTHON\]|\Z)", re.S)
_CODE_START = re.compile(r"^(?:def|class|import|from|@)\b", re.M)
_CODE_LINE = re.compile(r"(?:def|class|import|from|@|#|return\b|[A-Za-z_][\w.\[\]]*\s*[=(])")
_OPTION = re.compile(r"^[(\[]?([A-Z])[)\]]", re.M)


def mc_answer(response: str, letters: str = "ABCD") -> str | None:
    """The option letter a multiple-choice answer picks, or None when it is unclear.

    Accepts a bare letter (``"D"``, ``"(B)"``, ``"B)"``, ``"C."``), an answer that starts with
    its option (``"A) west"``, ``"D (because ...)"``) or names it (``"Answer: B"``, ``"The
    answer is (C)"``). None for refusals, prose, letters outside ``letters`` or conflicting picks.
    """
    text = response.replace("*", "")
    m = _BARE.fullmatch(text) or _LEAD.match(text)
    if m and m.group(1) in letters:
        return m.group(1)
    picks = {g for g in _KEYED.findall(text) if g in letters}
    return picks.pop() if len(picks) == 1 else None


def code_blocks(response: str) -> list[str]:
    """Candidate code in an answer: fenced or ``[PYTHON]`` blocks, else the ``def ...`` region."""
    blocks = _FENCE.findall(response) or _TAG.findall(response)
    if blocks:
        return blocks
    start = _CODE_START.search(response)
    if not start:
        return []
    lines: list[str] = []
    for line in response[start.start():].splitlines():
        if line.strip() and not line[0].isspace() and not _CODE_LINE.match(line):
            break  # back to prose
        lines.append(line)
    return ["\n".join(lines)]


def code_parses(response: str) -> bool:
    """True when some code block of the answer parses and defines a function."""
    for block in code_blocks(response):
        try:
            tree = ast.parse(block)
        except (SyntaxError, ValueError):
            continue
        if any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in ast.walk(tree)):
            return True
    return False


def kind_of(prompt: str) -> str:
    """Answer kind from the prompt alone: the option letters of its last block, else ``"code"``."""
    block = prompt.rstrip().rsplit("\n\n", 1)[-1]
    letters = "".join(dict.fromkeys(_OPTION.findall(block)))
    return letters if len(letters) >= 2 else "code"


@dataclass(frozen=True)
class Cascade:
    """Ask ``first`` together; escalate through ``then`` one model at a time.

    Multiple choice: after each step the answers so far are pooled; if the most common letter
    has at least ``quorum`` votes (0 = ``len(first)``: unanimity) it is returned (the score of
    the first model that gave it); else the next model of ``then`` is asked. The last model of
    ``then`` is always accepted; with ``then`` empty the step-1 vote wins. Code: models of
    ``first + then`` are asked in order and the first answer whose code parses is returned.
    """

    first: tuple[str, ...]
    then: tuple[str, ...] = ()
    quorum: int = 0

    def __str__(self) -> str:
        q = self.quorum or len(self.first)
        short = [m.rsplit("/", 1)[-1] for m in (*self.first, *self.then)]
        head = "+".join(short[: len(self.first)]) + f" ({q}/{len(self.first)})" * (q > 1)
        return " -> ".join([head, *short[len(self.first):]])


@dataclass(frozen=True)
class Prepared:
    """A table's rows with every answer pre-checked: letter codes (-1: none) and parse flags."""

    models: list[str]
    scores: np.ndarray  # (n, m)
    costs: np.ndarray  # (n, m)
    tasks: np.ndarray  # (n,)
    kinds: np.ndarray  # (n,) str, see kind_of
    letters: np.ndarray  # (n, m) int8: 0 = "A", ...; -1 = unclear
    parses: np.ndarray  # (n, m) bool

    @classmethod
    def from_table(cls, table: RoutingTable) -> Prepared:
        """Check every response of ``table`` (whose ``meta["responses"]`` must be aligned)."""
        resp = table.meta.get("responses", {})
        if any(len(resp.get(m, ())) != len(table) for m in table.models):
            raise ValueError(f"{table.name}: meta['responses'] needs one answer per row and model")
        kinds = np.array([kind_of(p) for p in table.prompts], dtype=str)
        n, m = table.scores.shape
        letters, parses = np.full((n, m), -1, np.int8), np.zeros((n, m), bool)
        for i, j in itertools.product(range(n), range(m)):
            r = resp[table.models[j]][i]
            if kinds[i] == "code":
                parses[i, j] = code_parses(r)
            elif (a := mc_answer(r, kinds[i])) is not None:
                letters[i, j] = ord(a) - ord("A")
        return cls(list(table.models), np.asarray(table.scores, float),
                   np.asarray(table.costs, float), np.asarray(table.tasks), kinds, letters, parses)

    def __len__(self) -> int:
        return len(self.kinds)

    def take(self, mask: np.ndarray) -> Prepared:
        """The rows where ``mask`` holds (boolean mask or index array)."""
        return Prepared(self.models, self.scores[mask], self.costs[mask], self.tasks[mask],
                        self.kinds[mask], self.letters[mask], self.parses[mask])


def _run(p: Prepared, c: Cascade) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (score, cost) of one cascade on every row of ``p``."""
    col = {m: j for j, m in enumerate(p.models)}
    first, then = [col[m] for m in c.first], [col[m] for m in c.then]
    n, rows = len(p), np.arange(len(p))
    score, cost = np.full(n, np.nan), np.zeros(n)
    code = p.kinds == "code"
    # code rows: one model at a time, the first parsing answer (or the last model) wins
    active = code.copy()
    seq = first + then
    for k, j in enumerate(seq):
        cost[active] += p.costs[active, j]
        take = active & (p.parses[:, j] | (k == len(seq) - 1))
        score[take] = p.scores[take, j]
        active &= ~take
    # multiple-choice rows: pooled letter votes against the quorum
    active, pool = ~code, list(first)
    cost[active] += p.costs[np.ix_(active, first)].sum(axis=1)
    quorum = c.quorum or len(first)
    for k in range(len(then) + 1):
        lt = p.letters[:, pool]
        votes = ((lt[:, :, None] == lt[:, None, :]) & (lt[:, None, :] >= 0)).sum(axis=2)
        best = np.argmax(votes, axis=1)  # earliest model holding the top letter
        win = p.scores[rows, np.asarray(pool)[best]]
        done = active & (votes[rows, best] >= quorum) if then else active
        score[done] = win[done]
        active &= ~done
        if k == len(then):
            break
        j = then[k]
        cost[active] += p.costs[active, j]
        if k == len(then) - 1:
            score[active] = p.scores[active, j]
            break
        pool.append(j)
    return score, cost


def simulate(rows: RoutingTable | Prepared, cascade: Cascade | Plan
             ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """``(mean_cost, mean_quality, per_row_scores, per_row_costs)`` of a cascade on ``rows``.

    ``cascade`` may be a plan ``{kind: Cascade}`` (kinds from :func:`kind_of`), one per kind.
    """
    p = rows if isinstance(rows, Prepared) else Prepared.from_table(rows)
    if isinstance(cascade, Cascade):
        score, cost = _run(p, cascade)
    else:
        score, cost = np.full(len(p), np.nan), np.zeros(len(p))
        for kind in np.unique(p.kinds):
            m = p.kinds == kind
            score[m], cost[m] = _run(p.take(m), cascade[_nearest(str(kind), cascade)])
    return float(cost.mean()), float(score.mean()), score, cost


def _nearest(kind: str, plan: Plan) -> str:
    """The plan's kind for ``kind``: itself, else the same type with the closest option count
    (ties: more options)."""
    same = [k for k in plan if (k == "code") == (kind == "code")]
    if not same:
        raise ValueError(f"the plan has no cascade for answer kind {kind!r}")
    return kind if kind in plan else min(same, key=lambda k: (abs(len(k) - len(kind)), -len(k)))


def family(models: list[str], mean_costs: np.ndarray, n_cheap: int = 8,
           max_first: int = 3) -> list[Cascade]:
    """Every single model, plus: 1..``max_first`` of the ``n_cheap`` cheapest models at step 1
    (quorum: all, or a strict majority of 3+), then nothing, an escalation model, or a middle
    model then a pricier escalation model (neither asked at step 1)."""
    order = [models[j] for j in np.argsort(mean_costs, kind="stable")]
    price = dict(zip(models, mean_costs, strict=True))
    out = [Cascade((m,)) for m in models]
    for k in range(1, max_first + 1):
        for first in itertools.combinations(order[:n_cheap], k):
            rest = [m for m in order if m not in first]
            tails = [(x,) for x in rest]
            tails += [(a, b) for a, b in itertools.combinations(rest, 2) if price[a] < price[b]]
            out += [Cascade(first, t, q) for q in sorted({k, k // 2 + 1}) for t in tails]
            out += [Cascade(first)] * (k > 1)  # no escalation: the step-1 vote
    return list(dict.fromkeys(out))


def pareto(points: np.ndarray) -> np.ndarray:
    """Indices of the (cost, quality) points no other point beats, sorted by cost."""
    order = np.lexsort((-points[:, 1], points[:, 0]))
    keep, best = [], -np.inf
    for i in order:
        if points[i, 1] > best:
            keep.append(int(i))
            best = points[i, 1]
    return np.array(keep, dtype=int)


def search(train: RoutingTable | Prepared, *, n_cheap: int = 8, max_first: int = 3,
           by_kind: bool = False, min_kind_rows: int = 50) -> list[Cascade] | list[Plan]:
    """The cascades of :func:`family` on the Pareto front of ``train`` (cost, quality).

    ``by_kind``: one cascade per answer kind (read from the prompt, no labels): each kind's
    front on its rows, combined into plans whose summed (cost, quality) is Pareto-optimal.
    Kinds with fewer than ``min_kind_rows`` rows, bar the largest of each answer type (code or
    multiple choice), get none: they borrow the nearest kind's (see :func:`simulate`).
    """
    p = train if isinstance(train, Prepared) else Prepared.from_table(train)
    cands = family(p.models, p.costs.mean(axis=0), n_cheap, max_first)
    if not by_kind:
        pts = np.array([simulate(p, c)[:2] for c in cands])
        return [cands[i] for i in pareto(pts)]
    plans: list[Plan] = [{}]
    total = np.zeros((1, 2))
    kinds, counts = np.unique(p.kinds, return_counts=True)
    own = counts >= min_kind_rows
    for is_code in (True, False):  # every answer type keeps at least its largest kind
        same = np.flatnonzero((kinds == "code") == is_code)
        if len(same):
            own[same[np.argmax(counts[same])]] = True
    for kind in kinds[own]:
        sub = p.take(p.kinds == kind)
        pts = np.array([simulate(sub, c)[:2] for c in cands]) * len(sub)
        front = pareto(pts)
        sums = (total[:, None, :] + pts[front][None, :, :]).reshape(-1, 2)
        keep = pareto(sums)
        plans = [{**plans[i // len(front)], str(kind): cands[front[i % len(front)]]}
                 for i in keep]
        total = sums[keep]
    return plans


def _describe(c: Cascade | Plan) -> str:
    return str(c) if isinstance(c, Cascade) else "; ".join(f"{k}: {v}" for k, v in c.items())


def _figures(p: Prepared, points: np.ndarray) -> dict[str, Any]:
    """AIQ, zero-router AIQ and cost at the best single model's quality of ``points`` on ``p``."""
    single = metrics.single_models(p.scores, p.costs, p.models)
    sp = np.array([[v["cost"], v["quality"]] for v in single.values()])
    best = max(single, key=lambda m: (single[m]["quality"], -single[m]["cost"]))
    c_min, c_max = float(sp[:, 0].min()), float(sp[:, 0].max())
    at = metrics.cost_at_quality(points, single[best]["quality"])
    return {
        "n": len(p),
        "best_single": {"model": best, **single[best]},
        "aiq": metrics.aiq(points, c_min, c_max),
        "zero_router_aiq": metrics.zero_router_aiq(sp, c_min, c_max),
        "cost_at_best_quality": at,
        "cost_share_at_best_quality": None if at is None else at / single[best]["cost"],
    }


def evaluate_cascades(table: RoutingTable, train_split: str = "train", test_split: str = "test",
                      **search_kw: Any) -> dict[str, Any]:
    """Select cascades on the train rows (:func:`search`), then score exactly those on test.

    Only complete rows (every model scored and priced) are used. ``"aiq_hull_only"`` keeps
    just the cascades on the train upper hull (less test-side choice than the whole front).
    """
    p = Prepared.from_table(table)
    complete = ~np.isnan(p.scores).any(axis=1) & ~np.isnan(p.costs).any(axis=1)
    train = p.take(complete & (table.splits == train_split))
    test = p.take(complete & (table.splits == test_split))
    chosen = search(train, **search_kw)
    tr = np.array([simulate(train, c)[:2] for c in chosen])
    runs = [simulate(test, c) for c in chosen]
    te = np.array([r[:2] for r in runs])
    on_hull = (tr[:, None, :] == metrics.upper_hull(tr)[None]).all(axis=2).any(axis=1)
    out = {"n_train": len(train), "front": te.tolist(), "hull": metrics.upper_hull(te).tolist(),
           "train_front": tr.tolist(), "train_best_single": _figures(train, tr)["best_single"],
           **_figures(test, te),
           "aiq_hull_only": _figures(test, te[on_hull])["aiq"],
           "cascades": [f"{_describe(c)} | train {a:.2e} {b:.4f} | test {x:.2e} {y:.4f}"
                        for c, (a, b), (x, y) in zip(chosen, tr, te, strict=True)],
           "tasks": {}}
    for task in np.unique(test.tasks):
        m = test.tasks == task
        pts = np.array([[r[3][m].mean(), r[2][m].mean()] for r in runs])
        out["tasks"][str(task)] = _figures(test.take(m), pts)
    return out
