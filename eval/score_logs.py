"""``contextforge eval score``: score logged answers and write the verdicts beside their rows.

The log's ``scores`` table holds one verdict per (request, scorer), so a run is idempotent (a
rerun finds nothing left to score and scores nothing twice) and resumable (verdicts commit a
batch at a time; an interrupted run loses at most the batch in flight and the next run reads
only what is still unscored). Scorers:

- ``reference``: the answer against the reference of the prompt it answered, from a labelled
  prompt pack (``--references PACK``, matched by the logged routing prompt); rows whose prompt
  has no reference are left unscored for a later run with more references.
- ``feedback``: users' ratings from ``POST /v1/feedback`` (their mean, in [0, 1]); rows
  nobody rated are left for later.
- ``judge`` / ``pairwise``: an LLM judge called through a gateway (``--gateway``, ``--judge``),
  absolute 1-10 or against a reference model's answer with positions swapped; the judge's
  cost is recorded with each verdict.

Scale: rows stream from the log in batches (a server-side cursor on PostgreSQL); each batch's
reference scoring is a pure function (``score_batch``) mapped over an executor — in-process by
default, or any ``concurrent.futures.Executor`` such as a Dask cluster's
(``--executor dask://HOST:PORT``), so a bigger run is a configuration, not a rewrite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.traffic import ScoreRow, TrafficLog, TrafficRecord

if TYPE_CHECKING:
    from eval.scoring import Reference

SCORERS = ("reference", "feedback", "judge", "pairwise")


def reference_key(prompt: str) -> str:
    """How a logged routing prompt finds its pack row: whitespace collapsed."""
    return " ".join(prompt.split())


@dataclass
class ScoreRun:
    """What one run did."""

    scorer: str
    read: int = 0  # unscored answered rows read
    scored: int = 0  # verdicts written (a value, or None for "could not score")
    unscorable: int = 0  # verdicts that are None (e.g. a judge's unparseable reply)
    left: int = 0  # rows left for a later run (no reference, nobody rated them yet)
    cost_usd: float = 0.0  # what scoring cost (a judge's calls)
    by_model: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "read": self.read, "scored": self.scored,
                "unscorable": self.unscorable, "left": self.left,
                "cost_usd": round(self.cost_usd, 6),
                "mean_by_model": {m: round(sum(v) / len(v), 4)
                                  for m, v in sorted(self.by_model.items()) if v}}


def score_batch(rows: list[tuple[str, str, str | None]],
                references: Mapping[str, Reference]) -> list[ScoreRow]:
    """Reference verdicts for (request id, routing prompt, answer) rows that have a reference;
    rows without one get none. Pure (picklable inputs), so an executor can run it anywhere."""
    from eval.scoring import score_reference

    out = []
    now = time.time()
    for request_id, prompt, answer in rows:
        ref = references.get(reference_key(prompt))
        if ref is None:
            continue
        s = score_reference(answer or "", ref)
        out.append(ScoreRow(request_id, "reference", s.value, s.detail, 0.0, now))
    return out


def _batches(log: TrafficLog, scorer: str, since: float | None, batch_size: int,
             ) -> Iterator[list[TrafficRecord]]:
    for batch in log.batches(unscored_by=scorer, since=since, answered=True,
                             batch_size=batch_size):
        yield [record for record, _ in batch]


def _record(run: ScoreRun, log: TrafficLog, rows: list[TrafficRecord],
            verdicts: list[ScoreRow]) -> None:
    run.read += len(rows)
    run.scored += log.write_scores(verdicts)
    run.left += len(rows) - len(verdicts)
    model = {r.id: r.model or "?" for r in rows}
    for v in verdicts:
        run.cost_usd += v.cost_usd
        if v.score is None:
            run.unscorable += 1
        else:
            run.by_model.setdefault(model[v.request_id], []).append(v.score)


def score_references(log: TrafficLog, references: Mapping[str, Reference], *,
                     since: float | None = None, batch_size: int = 500,
                     executor: Executor | None = None,
                     progress: Callable[[int], None] | None = None) -> ScoreRun:
    """The ``reference`` scorer over every answered, not yet scored row of the log."""
    run = ScoreRun("reference")
    pending: list[tuple[list[TrafficRecord], Any]] = []

    def drain(keep: int) -> None:
        while len(pending) > keep:
            rows, fut = pending.pop(0)
            _record(run, log, rows, fut.result() if executor else fut)
            if progress:
                progress(len(rows))

    for rows in _batches(log, "reference", since, batch_size):
        args = [(r.id, r.prompt or "", r.answer) for r in rows if r.prompt is not None]
        if executor is None:
            pending.append((rows, score_batch(args, references)))
        else:  # a few batches in flight: the cluster works while the log reads on
            pending.append((rows, executor.submit(score_batch, args, references)))
        drain(keep=4 if executor else 0)
    drain(keep=0)
    return run


def score_feedback(log: TrafficLog, *, since: float | None = None, batch_size: int = 500,
                   progress: Callable[[int], None] | None = None) -> ScoreRun:
    """The ``feedback`` scorer: each rated row's mean rating."""
    from eval.scoring import feedback as verdict

    run = ScoreRun("feedback")
    ratings: dict[str, list[float]] = {}
    for fb in log.feedback():
        ratings.setdefault(fb.request_id, []).append(fb.rating)
    for rows in _batches(log, "feedback", since, batch_size):
        now, verdicts = time.time(), []
        for r in rows:
            s = verdict(ratings[r.id]) if r.id in ratings else None
            if s is not None:
                verdicts.append(ScoreRow(r.id, "feedback", s.value, s.detail, 0.0, now))
        _record(run, log, rows, verdicts)
        if progress:
            progress(len(rows))
    return run


async def score_with_judge(log: TrafficLog, judge: Callable[[TrafficRecord], Any], *,
                           scorer: str, since: float | None = None, batch_size: int = 100,
                           concurrency: int = 8,
                           progress: Callable[[int], None] | None = None) -> ScoreRun:
    """An LLM-judge scorer: ``judge(record)`` is a coroutine giving ``(value | None, detail,
    cost_usd)`` or None to leave the row for later; ``concurrency`` judge calls at a time,
    one batch committed at a time."""
    run = ScoreRun(scorer)
    gate = asyncio.Semaphore(concurrency)

    async def one(r: TrafficRecord) -> ScoreRow | None:
        async with gate:
            got = await judge(r)
        if got is None:
            return None
        value, detail, cost = got
        return ScoreRow(r.id, scorer, value, detail, cost, time.time())

    # The judge's event loop must not wait on the database: batches are read in a thread.
    batches = _batches(log, scorer, since, batch_size)
    while (rows := await asyncio.to_thread(next, batches, None)) is not None:
        verdicts = [v for v in await asyncio.gather(*(one(r) for r in rows)) if v is not None]
        await asyncio.to_thread(_record, run, log, rows, verdicts)
        if progress:
            progress(len(rows))
    return run


def gateway_judge(client: Any, base_url: str, model: str, *, scorer: str,
                  reference_model: str | None = None, api_key: str | None = None,
                  ) -> Callable[[TrafficRecord], Any]:
    """``score_with_judge``'s ``judge`` for ``judge`` (absolute 1-10) or ``pairwise`` (against
    ``reference_model``'s answer to the same prompt, asked through the gateway too): the judge
    model is called through the gateway at ``base_url``, so its cost is accounted like any
    request's, and each verdict records it."""
    from eval.scoring import Judge, judge_absolute, judge_pairwise

    judge = Judge(client, base_url, model, api_key=api_key)
    if scorer == "pairwise" and not reference_model:
        raise SystemExit("--scorer pairwise needs --reference-model (the answer to compare with)")

    async def verdict(r: TrafficRecord) -> tuple[float | None, str, float] | None:
        if r.prompt is None:
            return None
        answer = r.answer or r.tool_calls or ""
        if scorer == "judge":
            s = await judge_absolute(judge, r.prompt, answer)
            return s.value, s.detail, s.cost_usd
        assert reference_model is not None
        ref = await Judge(client, base_url, reference_model, api_key=api_key).ask(r.prompt)
        s = await judge_pairwise(judge, r.prompt, answer, ref.text)
        return s.value, f"{s.detail} (reference {reference_model})", s.cost_usd + ref.cost_usd

    return verdict


def executor_for(spec: str | None) -> Executor | None:
    """``--executor``: none (in-process), ``processes[:N]`` (local processes), or
    ``dask://HOST:PORT`` (a running Dask scheduler; needs ``distributed`` installed)."""
    if not spec or spec == "local":
        return None
    if spec.startswith("processes"):
        from concurrent.futures import ProcessPoolExecutor

        _, _, n = spec.partition(":")
        return ProcessPoolExecutor(max_workers=int(n) if n else None)
    if spec.startswith("dask://"):
        try:
            from distributed import Client
        except ImportError:
            raise SystemExit("--executor dask://...: install dask's `distributed` "
                             "package") from None
        return Client(spec.removeprefix("dask://")).get_executor()
    raise SystemExit(f"--executor {spec!r}: use local, processes[:N] or dask://HOST:PORT")
