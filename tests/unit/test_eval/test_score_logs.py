"""`contextforge eval score`: verdicts beside the log's rows, idempotent and resumable."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from eval import score_logs
from eval.pack import load_references
from router.traffic import Feedback, TrafficLog, TrafficRecord
from service.cli import main

PACK = [("Which is a planet? A) Moon B) Mars\nAnswer:", "B"),
        ("Which is a colour? A) Red B) Seven\nAnswer:", "A"),
        ("Which is a number? A) Seven B) Red\nAnswer:", "A")]


def pack_file(tmp_path):
    path = tmp_path / "pack.jsonl"
    with path.open("w") as f:
        for i, (prompt, letter) in enumerate(PACK):
            f.write(json.dumps({"id": f"t/{i}", "task": "t", "prompt": prompt,
                                "reference": {"kind": "choice", "answer": letter}}) + "\n")
    return path


def log_with(tmp_path, answers):
    """A log with one answered row per (prompt index or None, answer), plus a failed one."""
    log = TrafficLog(f"sqlite:///{tmp_path / 'traffic.sqlite3'}")
    for i, (k, answer) in enumerate(answers):
        prompt = "  ".join(PACK[k][0].split(" ")) if k is not None else "an unlabelled prompt"
        log.write(TrafficRecord(id=f"r{i}", ts=100.0 + i, status=200, model=f"m{i % 2}",
                                prompt=prompt, answer=answer, propensity=1.0))
    log.write(TrafficRecord(id="failed", ts=99.0, status=502, model="m0", prompt=PACK[0][0]))
    log.flush()
    return log


ANSWERS = [(0, "B"), (1, "B"), (2, "The answer is A."), (None, "A"), (0, "A) Moon"), (1, "A")]


def test_reference_scores_are_written_once_and_a_rerun_scores_nothing(tmp_path):
    log = log_with(tmp_path, ANSWERS)
    refs = load_references(pack_file(tmp_path))
    run = score_logs.score_references(log, refs, batch_size=2)
    # Whitespace differences between the logged and the pack prompt do not matter.
    assert (run.read, run.scored, run.left) == (6, 5, 1)
    got = {s.request_id: s.score for s in log.scores(scorer="reference")}
    assert got == {"r0": 1.0, "r1": 0.0, "r2": 1.0, "r4": 0.0, "r5": 1.0}
    again = score_logs.score_references(log, refs)
    assert (again.read, again.scored, again.left) == (1, 0, 1)  # only the unlabelled one
    log.close()


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    log = log_with(tmp_path, ANSWERS)
    refs = load_references(pack_file(tmp_path))
    seen = []

    def stop_after_first_batch(n: int) -> None:
        seen.append(n)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_logs.score_references(log, refs, batch_size=2, progress=stop_after_first_batch)
    assert seen == [2] and len(log.scores()) == 2  # the first batch was committed
    rest = score_logs.score_references(log, refs, batch_size=2)
    assert rest.read == 4 and rest.scored == 3
    ids = [s.request_id for s in log.scores()]
    assert sorted(ids) == ["r0", "r1", "r2", "r4", "r5"]  # each once
    log.close()


def test_batches_can_be_scored_by_an_executor(tmp_path):
    log = log_with(tmp_path, ANSWERS)
    executor = score_logs.executor_for("processes:2")
    try:
        run = score_logs.score_references(log, load_references(pack_file(tmp_path)),
                                          batch_size=1, executor=executor)
    finally:
        executor.shutdown()
    assert run.scored == 5 and run.summary()["mean_by_model"] == {"m0": 0.6667, "m1": 0.5}
    log.close()
    with pytest.raises(SystemExit, match="dask://"):
        score_logs.executor_for("spark://x")


def test_feedback_scores_the_rated_rows(tmp_path):
    log = log_with(tmp_path, ANSWERS)
    log.add_feedback(Feedback("r0", 1.0, 1.0))
    log.add_feedback(Feedback("r0", 0.5, 2.0))
    log.add_feedback(Feedback("r3", 0.0, 3.0))
    run = score_logs.score_feedback(log)
    assert (run.scored, run.left) == (2, 4)
    assert {s.request_id: s.score for s in log.scores(scorer="feedback")} == {"r0": 0.75,
                                                                             "r3": 0.0}
    log.close()


def scripted_gateway(calls):
    """An OpenAI-shaped gateway whose judge rates 8/10 and whose reference model answers."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls.append(body)
        prompt = body["messages"][-1]["content"]
        if body["model"] == "ref-model":
            text = "a reference answer"
        elif "[[A]]" in prompt or "assistant A" in prompt.lower():
            text = "[[A]]"  # an order-biased judge: always the first position
        else:
            text = "Good enough. Rating: [[8]]"
        return httpx.Response(200, headers={"x-contextforge-cost-usd": "0.001"}, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})

    return httpx.MockTransport(handle)


def test_judges_score_through_the_gateway_and_account_their_cost(tmp_path):
    log = log_with(tmp_path, ANSWERS[:2])
    calls: list[dict] = []

    async def run(scorer, **kw):
        async with httpx.AsyncClient(transport=scripted_gateway(calls)) as client:
            judge = score_logs.gateway_judge(client, "http://gw", "judge-model", scorer=scorer,
                                             **kw)
            return await score_logs.score_with_judge(log, judge, scorer=scorer)

    absolute = asyncio.run(run("judge"))
    assert absolute.scored == 2 and absolute.cost_usd == pytest.approx(0.002)
    assert [s.score for s in log.scores(scorer="judge")] == pytest.approx([7 / 9, 7 / 9])
    assert all(c["model"] == "judge-model" for c in calls)
    calls.clear()
    pairwise = asyncio.run(run("pairwise", reference_model="ref-model"))
    # Per row: the reference model's answer, then the judge twice (positions swapped).
    assert [c["model"] for c in calls].count("ref-model") == 2 and len(calls) == 6
    assert pairwise.cost_usd == pytest.approx(0.006)
    verdicts = log.scores(scorer="pairwise")
    assert {s.score for s in verdicts} == {0.5}  # the order bias cancels to a tie
    assert all("ref-model" in s.detail for s in verdicts)
    assert asyncio.run(run("judge")).scored == 0  # nothing twice
    log.close()


def test_the_cli_scores_a_log_and_prints_a_summary(tmp_path, capsys):
    log = log_with(tmp_path, ANSWERS)
    dsn = log.dsn
    log.close()
    assert main(["eval", "score", "--logs", dsn, "--references",
                 str(pack_file(tmp_path))]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["scored"], out["left"], out["mean_by_model"]) == (5, 1, {"m0": 0.6667,
                                                                         "m1": 0.5})
    assert main(["eval", "score", "--logs", dsn, "--scorer", "judge"]) == 2  # a user error
    assert "needs --judge" in capsys.readouterr().err
