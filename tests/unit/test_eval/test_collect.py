"""eval.collect against a scripted gateway (httpx.MockTransport): retries, refusals, failed
scoring, the spend cap with requests in flight, resuming a file."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from eval.collect import CollectError, collect, read_collected
from eval.pack import PackReference, PackRow
from training.data import load

PRICING = {"input_per_million": 1000.0, "output_per_million": 0.0, "expected_output_tokens": 1}


@dataclass
class Score:
    value: float
    detail: str


async def letter(answer: str, ref: PackReference) -> Score:
    return Score(float(answer.strip() == ref.answer), f"answered {answer.strip()!r}")


def pack(n: int) -> list[PackRow]:
    return [PackRow(id=f"t/{i}", task="arc_challenge", prompt=f"question number {i}?",
                    reference=PackReference(kind="choice", answer="A",
                                            choices={"A": "yes", "B": "no"}))
            for i in range(n)]


class Gateway:
    """A scripted gateway: ``reply(model, prompt, attempt)`` gives (status, answer text)."""

    def __init__(self, reply: Callable[[str, str, int], tuple[int, str]], *,
                 models=("big", "small"), pricing=PRICING, delay_s=0.0, cost=0.001):
        self.reply, self.models, self.pricing = reply, models, pricing
        self.delay_s, self.cost = delay_s, cost
        self.calls: Counter = Counter()
        self.in_flight = self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            cards = [{"id": m, "kind": "model", "aliases": [], "pricing": self.pricing}
                     for m in self.models] + [{"id": "auto", "kind": "route", "pricing": None}]
            return httpx.Response(200, json={"object": "list", "data": cards})
        body = json.loads(request.content)
        assert body["temperature"] == 0 and len(body["messages"]) == 1
        model, prompt = body["model"], body["messages"][0]["content"]
        self.calls[model, prompt] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        status, text = self.reply(model, prompt, self.calls[model, prompt])
        if status != 200:
            return httpx.Response(status, json={"error": {"message": text}},
                                  headers={"retry-after": "0"})
        if status == 200 and text == "GARBLED":
            return httpx.Response(200, json={"choices": "none"})
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "finish_reason": "stop"}
        usage = {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
        return httpx.Response(200, headers={"x-contextforge-cost-usd": f"{self.cost:.8f}"},
                              json={"id": "c1", "created": 0, "model": model,
                                    "object": "chat.completion", "choices": [choice],
                                    "usage": usage})

    def run(self, rows, out, models=("big", "small"), **kw):
        kw.setdefault("scorer", letter)
        return asyncio.run(collect(rows, list(models), out, transport=httpx.MockTransport(self),
                                   backoff_s=0, **kw))


def test_rows_are_user_data_and_the_file_trains(tmp_path):
    gw = Gateway(lambda m, p, n: (200, "A" if m == "big" else "B"))
    out = tmp_path / "out.jsonl"
    report = gw.run(pack(3), out, concurrency=2)
    assert (report.written, report.rows_in_file, report.remaining) == (6, 6, 0)
    assert report.mean_score == {"big": 1.0, "small": 0.0}
    assert report.spent_usd == pytest.approx(0.006)
    row = json.loads(out.read_text().splitlines()[0])
    assert row == {"prompt": "question number 0?", "model": "big", "score": 1.0,
                   "cost": 0.001, "input_tokens": 12, "output_tokens": 1,
                   "task": "arc_challenge", "pack_id": "t/0", "detail": "answered 'A'",
                   "answer": "A", "split": "train"}
    table = load(out)  # the user-data reader takes the extra keys
    assert table.models == ["big", "small"] and len(table) == 3
    assert table.scores.tolist() == [[1.0, 0.0]] * 3


def test_5xx_is_retried_then_an_error_never_a_score_and_a_rerun_retries_it(tmp_path):
    def reply(model, prompt, n):
        if prompt.startswith("question number 0") and model == "big":
            return 503, "upstream down"
        return (502, "flaky") if n == 1 else (200, "A")

    gw = Gateway(reply)
    out = tmp_path / "out.jsonl"
    report = gw.run(pack(2), out, attempts=3)
    assert (report.written, report.errors, report.remaining) == (3, 1, 1)
    assert gw.calls["big", "question number 0?"] == 3
    assert gw.calls["small", "question number 1?"] == 2  # once failed, once answered
    [failed] = [json.loads(x) for x in (tmp_path / "out.jsonl.errors.jsonl").read_text()
                .splitlines()]
    assert failed == {"pack_id": "t/0", "model": "big", "kind": "error", "status": 503,
                      "error": "after 3 attempts: upstream down"}
    assert ("t/0", "big") not in {(r.pack_id, r.model) for r in read_collected(out)}
    again = gw.run(pack(2), out, attempts=1)
    assert gw.calls["big", "question number 0?"] == 4 and again.errors == 1
    assert sum(gw.calls.values()) == 4 + 2 + 2 + 2  # nothing already written was resent


def test_a_4xx_is_skipped_at_once_and_on_reruns(tmp_path):
    gw = Gateway(lambda m, p, n: (422, "no candidate fits") if m == "small" else (200, "A"))
    out = tmp_path / "out.jsonl"
    report = gw.run(pack(2), out)
    assert (report.written, report.skipped, report.errors, report.remaining) == (2, 2, 0, 0)
    assert gw.calls["small", "question number 0?"] == 1
    gw.run(pack(2), out)
    assert sum(gw.calls.values()) == 4


def test_a_failing_scorer_or_an_unreadable_answer_is_an_error_row(tmp_path):
    async def broken(answer, ref):
        raise RuntimeError("sandbox died")

    gw = Gateway(lambda m, p, n: (200, "A"))
    report = gw.run(pack(1), tmp_path / "out.jsonl", models=["big"], scorer=broken)
    assert (report.written, report.errors) == (0, 1)
    text = (tmp_path / "out.jsonl.errors.jsonl").read_text()
    assert "scoring failed: RuntimeError: sandbox died" in text
    garbled = Gateway(lambda m, p, n: (200, "GARBLED"))
    report = garbled.run(pack(1), tmp_path / "g.jsonl", models=["big"])
    assert (report.written, report.errors) == (0, 1)
    assert "unreadable answer" in (tmp_path / "g.jsonl.errors.jsonl").read_text()
    assert not (tmp_path / "ok.jsonl.errors.jsonl").exists()
    assert gw.run(pack(1), tmp_path / "ok.jsonl", models=["big"]).written == 1
    assert not (tmp_path / "ok.jsonl.errors.jsonl").exists()  # only made for a failure


def test_the_cap_counts_requests_in_flight(tmp_path):
    # The cap fits three estimates: eight slots must not let a fourth pair start while three
    # are unanswered, and each settled (free) pair makes room for the next.
    gw = Gateway(lambda m, p, n: (200, "A"), delay_s=0.05, cost=0.0)
    out = tmp_path / "out.jsonl"
    probe = gw.run(pack(1), tmp_path / "probe.jsonl", models=["big"], max_usd=0.0)
    estimate = probe.next_estimate_usd
    assert probe.stopped_at_cap and estimate > 0 and sum(gw.calls.values()) == 0
    report = gw.run(pack(10), out, models=["big"], max_usd=3.5 * estimate, concurrency=8)
    assert gw.max_in_flight == 3 and report.written == 10 and not report.stopped_at_cap


def test_the_cap_counts_what_the_file_already_spent(tmp_path):
    gw = Gateway(lambda m, p, n: (200, "A"), cost=0.01)
    out = tmp_path / "out.jsonl"
    first = gw.run(pack(10), out, models=["big"], max_usd=0.045, concurrency=1)
    assert first.stopped_at_cap and first.written == 4 and first.remaining == 6
    again = gw.run(pack(10), out, models=["big"], max_usd=0.045, concurrency=1)
    assert again.stopped_at_cap and again.written == 0  # a rerun keeps the file's cap
    more = gw.run(pack(10), out, models=["big"], max_usd=1.0, concurrency=1)
    assert more.written == 6 and more.file_spent_usd == pytest.approx(0.1)


def test_a_torn_last_line_is_redone_and_a_foreign_file_refused(tmp_path):
    gw = Gateway(lambda m, p, n: (200, "A"))
    out = tmp_path / "out.jsonl"
    gw.run(pack(2), out, models=["big"])
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(lines[0] + lines[1][:20])  # killed while writing the second row
    report = gw.run(pack(2), out, models=["big"])
    assert report.written == 1 and report.rows_in_file == 2
    assert [r.pack_id for r in read_collected(out)] == ["t/0", "t/1"]
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text('{"prompt": "q", "model": "m", "score": 1}\n')
    with pytest.raises(CollectError, match=r"mine.jsonl:1: not a row collect wrote"):
        gw.run(pack(1), foreign, models=["big"])


def test_unknown_models_a_refused_key_and_missing_prices_stop_before_any_request(tmp_path):
    gw = Gateway(lambda m, p, n: (200, "A"))
    with pytest.raises(ValueError, match=r"'auto': not a catalog model.*known: big, small"):
        gw.run(pack(1), tmp_path / "a.jsonl", models=["auto"])
    no_prices = Gateway(lambda m, p, n: (200, "A"), pricing=None)
    with pytest.raises(ValueError, match="gives no prices"):
        no_prices.run(pack(1), tmp_path / "b.jsonl", max_usd=1.0)
    assert no_prices.run(pack(1), tmp_path / "c.jsonl").written == 2  # no cap: no prices needed
    refused = Gateway(lambda m, p, n: (401, "bad key"))
    with pytest.raises(CollectError, match="refused the key"):
        refused.run(pack(3), tmp_path / "d.jsonl", concurrency=1)
    assert sum(refused.calls.values()) == 1
    assert sum(gw.calls.values()) == 0


def test_the_default_scorer_converts_pack_references_to_eval_scoring_ones(monkeypatch):
    # eval.scoring as its interface is specified: Reference, Score, ascore_reference.
    import sys
    import types

    import msgspec

    class Reference(msgspec.Struct, frozen=True):
        kind: str
        answer: str | list[str] | None = None
        tests: list[str] = []
        setup: str = ""
        choices: dict[str, str] = {}

    seen = []

    async def ascore_reference(answer_text, ref):
        seen.append(ref)
        return Score(float(answer_text == ref.answer), "exact")

    fake = types.ModuleType("eval.scoring")
    fake.Reference, fake.ascore_reference = Reference, ascore_reference
    monkeypatch.setitem(sys.modules, "eval.scoring", fake)
    from eval.collect import reference_scorer

    ref = pack(1)[0].reference
    score = asyncio.run(reference_scorer()("A", ref))
    assert score.value == 1.0 and seen == [Reference(kind="choice", answer="A",
                                                     choices={"A": "yes", "B": "no"})]
