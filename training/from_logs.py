"""A routing table from scored traffic: what ``contextforge train --from-logs`` fits.

Each logged request observes one model's outcome on one prompt: the model that answered, the
score a scorer gave its answer (``contextforge eval score``), what it cost. A row of the table
is one logged prompt with that one model's score and cost; every other model's cell is NaN
(not observed). Repeats of a prompt that one model answered are averaged into one row per
(prompt, model).

How missing outcomes are handled, and why no inverse-propensity weights: the routers' fits
are masked per model (``training.estimators``: a model's loss reads only its observed cells),
so each model's column is a regression of its score on the prompt over the prompts where it
answered. The logging policy chose that model from the prompt alone (its prediction plus an
exploration draw, both logged), so given the prompt the outcome is missing at random and the
masked regression is consistent without weights; weighting by 1/propensity would correct
only the mix of prompts each model saw, at the price of a much noisier fit (propensities of
explored choices are small). Propensities are what the off-policy estimates of ``eval ab
--logs`` divide by. Rows after a fallback (no propensity) still teach their model's column.

Stacked on a base dataset (``--base``), the base rows keep their own models' columns; a log
model named like a base model (a catalog model trained under a data model's name) shares its
column. Log rows take the task label of the base prompt they repeat, else ``"traffic"``.

Where traffic never showed a model a task of the base data (fewer than
``MIN_TASK_OBSERVATIONS`` scored answers of that model on prompts of that task), the router
has nothing to learn that model's level there from, and a column fitted elsewhere would
extrapolate (a model strong on multiple choice is not thereby strong at code). There the
catalog's prior stays: the model's cells on that task's base rows take the outcomes of the
data model it stands in for (``stand_ins``), which is exactly what the router predicted for
it before retraining. The window records which (model, task) pairs kept the prior.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from router.requirements import routing_prompt
from router.traffic import TrafficLog
from router.wire.openai import ChatRequest, Message
from training.table import RoutingTable

TRAFFIC_TASK = "traffic"
# Below this many scored answers on a task, a model's own column is not trusted on that task:
# 20 outcomes put a 0/1 accuracy within about +-0.2 (95%), the size of the differences between
# models that routing acts on.
MIN_TASK_OBSERVATIONS = 20
METHOD = ("masked per-model regression on observed outcomes (missing at random given the "
          "prompt under the logging policy); no inverse-propensity weights")


def parse_since(text: str | None) -> float | None:
    """``--since``: an ISO 8601 date or time (UTC unless it says) as a Unix time."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r}: give an ISO 8601 date or time, e.g. 2026-12-01 "
                         "or 2026-12-01T08:00:00+00:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass
class LogWindow:
    """What a table from logs holds: for its card."""

    dsn: str
    scorer: str
    since: float | None
    until: float | None
    first_ts: float | None = None
    last_ts: float | None = None
    rows_read: int = 0  # scored log rows
    skipped_no_prompt: int = 0  # logged with traffic.log_prompts off
    observations: dict[str, int] = field(default_factory=dict)  # per model
    # model -> {task: the data model whose outcomes it kept there} (see the module's doc)
    prior_kept: dict[str, dict[str, str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        def iso(ts: float | None) -> str | None:
            return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()

        return {"dsn": _mask(self.dsn), "scorer": self.scorer, "since": iso(self.since),
                "until": iso(self.until), "first": iso(self.first_ts), "last": iso(self.last_ts),
                "rows_read": self.rows_read, "skipped_no_prompt": self.skipped_no_prompt,
                "observations": dict(sorted(self.observations.items())),
                "prior_kept": {m: dict(sorted(t.items()))
                               for m, t in sorted(self.prior_kept.items())}}


def _mask(dsn: str) -> str:
    from router.secrets import mask_url

    return mask_url(dsn)


def prompt_key(text: str) -> str:
    """How a logged routing prompt and a dataset prompt are matched: the routing prompt a
    single-message request of that text gives, whitespace collapsed."""
    request = ChatRequest(model="auto", messages=[Message(role="user", content=text)])
    return " ".join(routing_prompt(request).split())


def read_logged(log: TrafficLog, *, scorer: str, since: float | None = None,
                until: float | None = None, batch_size: int = 5000,
                ) -> tuple[dict[tuple[str, str], list[tuple[float, float]]], LogWindow]:
    """(prompt, model) -> [(score, cost), ...] of the scored, answered rows in the window."""
    window = LogWindow(dsn=log.dsn, scorer=scorer, since=since, until=until)
    seen: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for batch in log.batches(scored_by=scorer, since=since, until=until, answered=True,
                             batch_size=batch_size):
        for record, score in batch:
            window.rows_read += 1
            if record.prompt is None or record.model is None:
                window.skipped_no_prompt += 1
                continue
            if window.first_ts is None:
                window.first_ts = record.ts
            window.last_ts = record.ts
            seen[(record.prompt, record.model)].append((float(score), record.cost_usd or 0.0))
            window.observations[record.model] = window.observations.get(record.model, 0) + 1
    return seen, window


def table_from_logs(log: TrafficLog, *, scorer: str = "reference", since: float | None = None,
                    until: float | None = None, base: RoutingTable | None = None,
                    stand_ins: Mapping[str, str | None] | None = None,
                    ) -> tuple[RoutingTable, LogWindow]:
    """The scored traffic as a routing table (all rows ``train``), stacked under ``base``'s
    training rows when given; its window for the card. ``stand_ins`` (catalog model -> data
    model) keeps the catalog's prior on base tasks the traffic never showed a model (see the
    module's doc). ``ValueError`` when nothing was scored."""
    seen, window = read_logged(log, scorer=scorer, since=since, until=until)
    if not seen:
        raise ValueError(f"{window.as_dict()['dsn']}: no answered request scored by {scorer!r}"
                         f"{' in that window' if since or until else ''}: run `contextforge "
                         "eval score` first")
    base_rows = None
    if base is not None:
        base_rows = base.split("train") if (base.splits == "train").any() else base
    models = list(base_rows.models) if base_rows is not None else []
    for _, model in seen:
        if model not in models:
            models.append(model)
    prompts = list(dict.fromkeys(p for p, _ in seen))
    index = {p: i for i, p in enumerate(prompts)}
    col = {m: j for j, m in enumerate(models)}
    scores = np.full((len(prompts), len(models)), np.nan)
    costs = np.full((len(prompts), len(models)), np.nan)
    counts = np.zeros((len(prompts), len(models)), dtype=np.int64)
    for (prompt, model), obs in seen.items():
        values = np.array(obs, dtype=np.float64)
        scores[index[prompt], col[model]] = values[:, 0].mean()
        costs[index[prompt], col[model]] = values[:, 1].mean()
        counts[index[prompt], col[model]] = len(obs)
    tasks = np.full(len(prompts), TRAFFIC_TASK, dtype=object)
    name = f"logs:{scorer}"
    if base_rows is None:
        return RoutingTable(name=name, prompts=prompts, models=models, scores=scores,
                            costs=costs, tasks=tasks.astype(str),
                            splits=np.full(len(prompts), "train"), cost_source="real"), window
    task_of = {prompt_key(p): t for p, t in zip(base_rows.prompts, base_rows.tasks.tolist(),
                                                 strict=True)}
    for i, p in enumerate(prompts):
        tasks[i] = task_of.get(" ".join(p.split()), TRAFFIC_TASK)
    pad = len(models) - len(base_rows.models)
    base_scores = np.hstack([base_rows.scores, np.full((len(base_rows), pad), np.nan)])
    base_costs = np.hstack([base_rows.costs, np.full((len(base_rows), pad), np.nan)])
    _keep_prior(base_rows, base_scores, models, counts, tasks.astype(str), stand_ins or {},
                window)
    table = RoutingTable(
        name=f"{base_rows.name}+{name}",
        prompts=[*base_rows.prompts, *prompts],
        models=models,
        scores=np.vstack([base_scores, scores]),
        costs=np.vstack([base_costs, costs]),
        tasks=np.concatenate([base_rows.tasks.astype(str), tasks.astype(str)]),
        splits=np.full(len(base_rows) + len(prompts), "train"),
        cost_source=base_rows.cost_source,
    )
    return table, window


def _keep_prior(base: RoutingTable, base_scores: np.ndarray, models: list[str],
                log_counts: np.ndarray, log_tasks: np.ndarray,
                stand_ins: Mapping[str, str | None], window: LogWindow) -> None:
    """Copy a stand-in's base outcomes into a new model's cells on the base tasks where the
    traffic scored that model fewer than ``MIN_TASK_OBSERVATIONS`` times (costs stay NaN:
    the stand-in's bills say nothing about this model's prices)."""
    base_tasks = base.tasks.astype(str)
    for j in range(len(base.models), len(models)):
        model = models[j]
        source = stand_ins.get(model)
        if source is None or source not in base.models:
            continue
        src = base.models.index(source)
        for task in sorted(set(base_tasks.tolist())):
            if int(log_counts[log_tasks == task, j].sum()) >= MIN_TASK_OBSERVATIONS:
                continue
            rows = base_tasks == task
            base_scores[rows, j] = base_scores[rows, src]
            window.prior_kept.setdefault(model, {})[task] = source
