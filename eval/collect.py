"""``contextforge collect``: a labelled prompt pack through the running gateway to the user's own
deployments, every answer scored: a dataset in the user-data format (``training/data.py``).

Each (pack row, model) pair is one ``POST /v1/chat/completions`` pinned to that catalog model,
so the gateway's own dispatch (deployments, retries, failover) serves it; its answer is scored
against the row's reference and appended to ``--out`` as one JSONL row::

    {"prompt", "model", "score", "cost", "input_tokens", "output_tokens", "split": "train",
     "task", "pack_id", "detail", "answer"}

A pair the gateway refuses (4xx) or that keeps failing (5xx, connection, scoring, after
collect's own retries) is never a score: it goes to ``<out>.errors.jsonl`` as a
:class:`FailedPair`. Rows are flushed as they complete, so a killed run loses at most the
pairs in flight: a rerun skips the pairs already written (and those refused with a 4xx) and
drops a torn last line. ``max_usd`` caps the file's total spend: a pair is only sent while the
spend so far, the estimates of the pairs in flight and its own estimate (prices from
``/v1/models`` x the prompt's tokens and the model's expected answer length) stay within it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import httpx
import msgspec

from eval.gateway_client import CollectError, GatewayClient, PairFailed, Price
from eval.pack import PackReference, PackRow

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
PROMPT_OVERHEAD_TOKENS = 6  # OpenAI's chat framing of one user message (router.wire.openai)


class ScoreLike(Protocol):
    """What a scorer returns: ``eval.scoring.Score`` or any object with these fields."""

    value: float
    detail: str


Scorer = Callable[[str, PackReference], Awaitable[ScoreLike]]


def reference_scorer() -> Scorer:
    """The default scorer, ``eval.scoring.ascore_reference``: imported when a run starts, so
    a missing scorer fails before the first paid request, not after each."""
    from eval.scoring import Reference, ascore_reference

    async def score(answer: str, reference: PackReference) -> ScoreLike:
        return await ascore_reference(answer, msgspec.convert(msgspec.to_builtins(reference),
                                                              Reference))

    return score


class CollectedRow(msgspec.Struct, frozen=True):
    """One scored (prompt, model) pair: a user-data row with the pack id, the scorer's detail
    and the answer beside it (the reader ignores keys it does not know)."""

    prompt: str
    model: str
    score: float
    cost: float
    input_tokens: int
    output_tokens: int
    task: str
    pack_id: str
    detail: str
    answer: str
    split: str = "train"


class FailedPair(msgspec.Struct, frozen=True):
    """A pair without a score. ``skipped``: the gateway refused it (4xx), a rerun skips it too;
    ``error``: it kept failing (5xx, connection, scoring), a rerun tries again."""

    pack_id: str
    model: str
    kind: Literal["skipped", "error"]
    status: int | None
    error: str


class CollectReport(msgspec.Struct):
    """What a run did, and the file it leaves."""

    written: int  # rows this run
    skipped: int  # pairs refused with a 4xx this run
    errors: int  # pairs that kept failing this run
    remaining: int  # pack pairs neither written nor skipped: what a rerun would send
    spent_usd: float  # this run
    file_spent_usd: float  # every row of the file
    rows_in_file: int
    mean_score: dict[str, float]  # per model, over the file
    stopped_at_cap: bool = False
    next_estimate_usd: float = 0.0  # the pair that would have exceeded the cap


class _Seen(msgspec.Struct):
    pack_id: str
    model: str
    score: float
    cost: float = 0.0


def _errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.jsonl")


def _complete_lines(path: Path) -> list[bytes]:
    """The file's newline-terminated lines. A torn last line (a kill mid-write) is cut off the
    file, so the next append starts on a line of its own and the pair is redone."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
    return data[:end].splitlines()


def _decode_line(line: bytes, kind: type, path: Path, n: int):
    try:
        return msgspec.json.decode(line, type=kind)
    except msgspec.DecodeError as exc:
        raise CollectError(f"{path}:{n}: not a row collect wrote ({exc}); give another --out, "
                           "or remove the line") from None


class Ledger:
    """The out file and its errors file: which pairs are done, appends, totals."""

    def __init__(self, out: Path):
        self.out, self.errors_path = out, _errors_path(out)
        self.done: set[tuple[str, str]] = set()
        self.skipped: set[tuple[str, str]] = set()
        self.spent = 0.0
        self._sums: dict[str, list[float]] = {}
        for n, line in enumerate(_complete_lines(out), 1):
            if line.strip():
                seen = _decode_line(line, _Seen, out, n)
                self.done.add((seen.pack_id, seen.model))
                self._count(seen.model, seen.score, seen.cost)
        for n, line in enumerate(_complete_lines(self.errors_path), 1):
            if line.strip():
                failed = _decode_line(line, FailedPair, self.errors_path, n)
                if failed.kind == "skipped":
                    self.skipped.add((failed.pack_id, failed.model))
        self._rows: BinaryIO | None = None
        self._errors: BinaryIO | None = None  # opened on the first failure

    def _count(self, model: str, score: float, cost: float) -> None:
        s = self._sums.setdefault(model, [0.0, 0.0])
        s[0] += score
        s[1] += 1
        self.spent += cost

    def __enter__(self) -> Ledger:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._rows = self.out.open("ab")
        return self

    def __exit__(self, *exc: object) -> None:
        for f in (self._rows, self._errors):
            if f is not None:
                f.close()

    @staticmethod
    def _append(f: BinaryIO, obj: msgspec.Struct) -> None:
        f.write(msgspec.json.encode(obj) + b"\n")  # one write a row: a kill tears one line
        f.flush()

    def add(self, row: CollectedRow) -> None:
        assert self._rows is not None, "use the ledger as a context manager"
        self._append(self._rows, row)
        self.done.add((row.pack_id, row.model))
        self._count(row.model, row.score, row.cost)

    def fail(self, failed: FailedPair) -> None:
        if self._errors is None:
            self._errors = self.errors_path.open("ab")
        self._append(self._errors, failed)
        if failed.kind == "skipped":
            self.skipped.add((failed.pack_id, failed.model))

    @property
    def rows(self) -> int:
        return sum(int(s[1]) for s in self._sums.values())

    def mean_scores(self) -> dict[str, float]:
        return {m: s[0] / s[1] for m, s in sorted(self._sums.items())}


class _Run:
    """One run's shared state: spend so far, estimates in flight, what this run did."""

    def __init__(self, ledger: Ledger, scorer: Scorer, client: GatewayClient, bar) -> None:
        self.ledger, self.scorer, self.client, self.bar = ledger, scorer, client, bar
        self.in_flight_usd = self.spent_usd = 0.0
        self.in_flight = self.written = self.skipped = self.errors = 0
        self.fatal: CollectError | None = None
        self.settled = asyncio.Event()  # set whenever a pair finishes

    def fits(self, estimate: float, max_usd: float | None) -> bool:
        return max_usd is None or (self.ledger.spent + self.in_flight_usd + estimate
                                   <= max_usd)

    async def pair(self, row: PackRow, model: str, estimate: float,
                   slots: asyncio.Semaphore) -> None:
        try:
            answer = await self.client.ask(model, row.prompt)
            try:
                score = await self.scorer(answer.text, row.reference)
            except Exception as exc:  # this pair's failure, never a 0 score
                raise PairFailed("error", None, f"scoring failed: {type(exc).__name__}: "
                                  f"{exc}") from exc
            self.ledger.add(CollectedRow(
                prompt=row.prompt, model=model, score=float(score.value), cost=answer.cost,
                input_tokens=answer.input_tokens, output_tokens=answer.output_tokens,
                task=row.task, pack_id=row.id, detail=score.detail, answer=answer.text))
            self.written += 1
            self.spent_usd += answer.cost
        except PairFailed as exc:
            self._fail(FailedPair(row.id, model, exc.kind, exc.status, str(exc)))
        except CollectError as exc:
            self.fatal = exc
        finally:
            self.in_flight_usd -= estimate
            self.in_flight -= 1
            self.settled.set()
            slots.release()
            self.bar.update()
            self.bar.set_postfix_str(f"${self.spent_usd:.4f}")

    def _fail(self, failed: FailedPair) -> None:
        self.ledger.fail(failed)
        if failed.kind == "skipped":
            self.skipped += 1
        else:
            self.errors += 1


def _estimates(todo: Sequence[tuple[PackRow, str]],
               prices: dict[str, Price | None]) -> list[float]:
    """Each pair's cost estimate: the prompt's tokens (MiniLM's count, the gateway's own
    approximation) and the model's expected answer length at its prices."""
    from training.builtin_data import count_tokens

    texts = list(dict.fromkeys(row.prompt for row, _ in todo))
    tokens = dict(zip(texts, count_tokens(texts).tolist(), strict=True))
    return [p.estimate(tokens[row.prompt] + PROMPT_OVERHEAD_TOKENS)
            if (p := prices[model]) is not None else 0.0 for row, model in todo]


async def collect(pack: Sequence[PackRow], models: Sequence[str], out: str | Path, *,
                  gateway: str = DEFAULT_GATEWAY, api_key: str | None = None,
                  max_usd: float | None = None, concurrency: int = 8,
                  scorer: Scorer | None = None, attempts: int = 4, backoff_s: float = 0.5,
                  timeout_s: float = 600.0, progress: bool = False,
                  transport: httpx.AsyncBaseTransport | None = None) -> CollectReport:
    """Send every (pack row, model) pair not yet in ``out`` through the gateway, score the
    answers and append them to ``out``; at most ``concurrency`` requests at a time, stopping
    before the file's estimated spend would exceed ``max_usd``. ``scorer`` defaults to
    ``eval.scoring.ascore_reference``; ``transport`` replaces the network (tests)."""
    if not models or len(set(models)) != len(models):
        raise ValueError("--models: give one or more distinct catalog models")
    if concurrency < 1 or (max_usd is not None and max_usd < 0):
        raise ValueError("--concurrency must be >= 1 and --max-usd >= 0")
    from tqdm import tqdm

    scorer = scorer or reference_scorer()
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=gateway.rstrip("/"), headers=headers, limits=limits,
                                 timeout=timeout_s, transport=transport) as http:
        client = GatewayClient(http, attempts=attempts, backoff_s=backoff_s)
        try:
            prices = await client.prices(models)
        except httpx.HTTPError as exc:
            raise CollectError(f"cannot list the gateway's models at {gateway}: {exc} (is "
                               "`contextforge serve` running there?)") from exc
        if max_usd is not None and None in prices.values():
            raise ValueError("--max-usd: the gateway's /v1/models gives no prices; upgrade it "
                             "or leave out --max-usd")
        out = Path(out)
        with Ledger(out) as ledger, tqdm(total=0, unit="pair", disable=not progress,
                                         dynamic_ncols=True) as bar:
            todo = [(r, m) for r in pack for m in models
                    if (r.id, m) not in ledger.done and (r.id, m) not in ledger.skipped]
            bar.reset(total=len(todo))
            run = _Run(ledger, scorer, client, bar)
            stop_at = await _schedule(run, todo, _estimates(todo, prices), max_usd,
                                      concurrency)
        if run.fatal is not None:
            raise run.fatal
    remaining = sum((r.id, m) not in ledger.done and (r.id, m) not in ledger.skipped
                    for r in pack for m in models)
    return CollectReport(
        written=run.written, skipped=run.skipped, errors=run.errors, remaining=remaining,
        spent_usd=run.spent_usd, file_spent_usd=ledger.spent, rows_in_file=ledger.rows,
        mean_score=ledger.mean_scores(), stopped_at_cap=stop_at is not None,
        next_estimate_usd=stop_at or 0.0)


async def _schedule(run: _Run, todo: Sequence[tuple[PackRow, str]], estimates: list[float],
                    max_usd: float | None, concurrency: int) -> float | None:
    """Start each pair when a slot frees up; None when all started, else the estimate of the
    pair the cap stopped at. In-flight pairs finish either way."""
    slots = asyncio.Semaphore(concurrency)
    async with asyncio.TaskGroup() as group:
        for (row, model), estimate in zip(todo, estimates, strict=True):
            await slots.acquire()
            # An estimate in flight gives way to its pair's real cost (usually less) when it
            # settles: while any is unsettled, wait for it rather than stop early.
            while not run.fits(estimate, max_usd) and run.in_flight and run.fatal is None:
                run.settled.clear()
                await run.settled.wait()
            if run.fatal is not None or not run.fits(estimate, max_usd):
                slots.release()
                return None if run.fatal is not None else estimate
            run.in_flight_usd += estimate
            run.in_flight += 1
            group.create_task(run.pair(row, model, estimate, slots))
    return None


def read_collected(out: str | Path) -> list[CollectedRow]:
    """The complete rows of a file ``collect`` wrote (a torn last line is left out)."""
    path = Path(out)
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].splitlines()
    return [_decode_line(line, CollectedRow, path, n)
            for n, line in enumerate(lines, 1) if line.strip()]

