"""One table for every routing dataset: a row per prompt, a column per candidate model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RoutingTable:
    """Prompts with every candidate model's observed score and cost.

    ``scores[i, j]`` is model ``j``'s quality on prompt ``i`` in [0, 1] (NaN: not observed);
    ``costs[i, j]`` is what that answer cost in USD. ``cost_source`` says whether the costs were
    billed (``"real"``) or estimated from token counts and catalog prices (``"estimated"``).
    """

    name: str
    prompts: list[str]
    models: list[str]
    scores: np.ndarray  # (n, m) float64, NaN where a model was not run on a prompt
    costs: np.ndarray  # (n, m) float64 USD
    tasks: np.ndarray  # (n,) str
    splits: np.ndarray  # (n,) str: "train", "test", "ood", or "" when the source has none
    cost_source: str = "real"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, m = len(self.prompts), len(self.models)
        for label, arr, shape in (
            ("scores", self.scores, (n, m)),
            ("costs", self.costs, (n, m)),
            ("tasks", self.tasks, (n,)),
            ("splits", self.splits, (n,)),
        ):
            if arr.shape != shape:
                raise ValueError(f"{self.name}: {label} has shape {arr.shape}, expected {shape}")

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, mask: np.ndarray) -> RoutingTable:
        """The rows where ``mask`` is true (a boolean mask or an index array)."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return RoutingTable(
            name=self.name,
            prompts=[self.prompts[i] for i in idx],
            models=list(self.models),
            scores=self.scores[idx],
            costs=self.costs[idx],
            tasks=self.tasks[idx],
            splits=self.splits[idx],
            cost_source=self.cost_source,
            meta={k: _rows_of(v, idx, len(self)) for k, v in self.meta.items()},
        )

    def split(self, name: str) -> RoutingTable:
        """The rows of one split (``train``, ``test``, ``ood``)."""
        return self.select(self.splits == name)


def _rows_of(value, idx: np.ndarray, n: int):
    """Subset meta values that are aligned with the rows (arrays, or dicts of per-row lists,
    such as each model's responses); pass anything else through."""
    if isinstance(value, np.ndarray) and value.shape[:1] == (n,):
        return value[idx]
    if isinstance(value, dict) and value and all(
        isinstance(v, list | np.ndarray) and len(v) == n for v in value.values()
    ):
        return {k: [v[i] for i in idx] for k, v in value.items()}
    return value


def stack(base: RoutingTable, extra: RoutingTable) -> RoutingTable:
    """``extra``'s rows under ``base``'s training rows (its ``train`` split, or all), over the
    union of their models (NaN where a row's source did not observe a model): a dataset of a
    user's own models that keeps the base's columns, which the catalog's stand-ins read."""
    rows = base.split("train") if (base.splits == "train").any() else base
    models = list(rows.models) + [m for m in extra.models if m not in rows.models]

    def widen(t: RoutingTable, block: np.ndarray) -> np.ndarray:
        out = np.full((len(t), len(models)), np.nan)
        out[:, [models.index(m) for m in t.models]] = block
        return out

    return RoutingTable(
        name=f"{rows.name}+{extra.name}", prompts=[*rows.prompts, *extra.prompts],
        models=models,
        scores=np.vstack([widen(rows, rows.scores), widen(extra, extra.scores)]),
        costs=np.vstack([widen(rows, rows.costs), widen(extra, extra.costs)]),
        tasks=np.concatenate([rows.tasks.astype(str), extra.tasks.astype(str)]),
        splits=np.concatenate([rows.splits.astype(str), extra.splits.astype(str)]),
        cost_source=rows.cost_source if rows.cost_source == extra.cost_source else "mixed")
