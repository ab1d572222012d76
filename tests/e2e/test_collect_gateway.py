"""``contextforge collect`` against the real gateway (uvicorn) on simulated deployments that
answer RouterBench prompts with the recorded answers of distinct data models."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from eval.build_pack import strict_letter
from eval.collect import collect, read_collected
from eval.pack import (
    PackReference,
    answered_as,
    compare_recorded,
    read_pack,
    recorded_outcomes,
)
from router.config import load_config
from router.engine import RoutingEngine
from tests.e2e.gateway_server import gateway

REPO = Path(__file__).resolve().parents[2]
# Catalog model -> the data model its simulated deployment answers as.
ANSWERS_AS = {"frontier": "gpt-4-1106-preview", "budget": "mistralai/mistral-7b-chat",
              "chatty": "claude-v2", "coder": "meta/code-llama-instruct-34b-chat"}
MODELS = list(ANSWERS_AS)


@dataclass
class LetterScore:
    value: float
    detail: str


async def letter_scorer(answer: str, ref: PackReference) -> LetterScore:
    """Strict letter equality: the stand-in for eval.scoring in these tests."""
    got = strict_letter(answer)
    return LetterScore(float(got == ref.answer),
                       f"answered {got or answer[:30]!r}, reference {ref.answer}")


def catalog_config(folder: Path) -> Path:
    models = [{"name": name, "input_price": 1.0 + i, "output_price": 4.0 + i,
               "context_window": 32000, "stands_in_for": data_model,
               "deployments": [{"provider": "simulated",
                                "simulated": {"answers_as": data_model, "ttft_ms": 5}}]}
              for i, (name, data_model) in enumerate(ANSWERS_AS.items())]
    path = folder / "collect.yaml"
    path.write_text(json.dumps({
        "encoder": {"path": str(REPO / "models/encoders/all-MiniLM-L6-v2"),
                    "text_path": str(REPO / "models/encoders/all-MiniLM-L6-v2")},
        "router": {"path": str(REPO / "models/routers/default")},
        "traffic": {"enabled": False},
        "dispatch": {"backoff_ms": 0},
        "models": models, "routes": [{"name": "auto"}]}))
    return path


@pytest.fixture(scope="module")
def pack():
    return read_pack("starter")[:20]  # tasks alternate: ten of each


@pytest.fixture(scope="module")
def served(tmp_path_factory, encoder_dir, pack):
    """(gateway URL, config path): the test catalog served until the module ends, once the
    recorded answers (loaded in the background) are being served."""
    path = catalog_config(tmp_path_factory.mktemp("collect"))
    config = load_config(path)
    with gateway(config, RoutingEngine.from_config(config)) as url:
        body = {"model": "frontier", "messages": [{"role": "user", "content": pack[0].prompt}]}
        deadline = time.monotonic() + 30
        while strict_letter(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
                            .json()["choices"][0]["message"]["content"]) is None:
            assert time.monotonic() < deadline, "recorded answers never loaded"
            time.sleep(0.1)
        yield url, path


def run(pack, out, url, **kw):
    kw.setdefault("scorer", letter_scorer)
    return asyncio.run(collect(pack, MODELS, out, gateway=url, **kw))


def pairs(out: Path) -> Counter:
    return Counter((r.pack_id, r.model) for r in read_collected(out))


def test_collect_reproduces_the_recorded_outcomes(served, pack, tmp_path):
    url, _ = served
    out = tmp_path / "collected.jsonl"
    report = run(pack, out, url, concurrency=6)
    assert report.written == report.rows_in_file == len(pack) * len(MODELS) == 80
    assert (report.remaining, report.errors, report.skipped) == (0, 0, 0)
    rows = read_collected(out)
    recorded = recorded_outcomes(pack, ANSWERS_AS.values())
    agree = sum(r.score == recorded[r.pack_id, ANSWERS_AS[r.model]] for r in rows)
    assert agree >= 0.98 * len(rows)
    by_id = {p.id: p for p in pack}
    for r in rows:
        assert r.prompt == by_id[r.pack_id].prompt and r.task == by_id[r.pack_id].task
        assert r.split == "train" and r.cost > 0 and r.input_tokens > 0 and r.output_tokens >= 1
    assert set(report.mean_score) == set(MODELS)
    assert report.spent_usd == pytest.approx(sum(r.cost for r in rows))
    # The comparison the CLI prints, with each model's data model read from the config.
    mapping = answered_as(load_config(served[1]), MODELS, set(ANSWERS_AS.values()))
    assert mapping == ANSWERS_AS
    agreement = compare_recorded(rows, pack, mapping)
    assert agreement.compared == 80 and agreement.agreed == agree
    assert len(agreement.disagreements) == 80 - agree


def test_a_cancelled_run_resumes_without_repeating_a_pair(served, pack, tmp_path):
    url, _ = served
    out = tmp_path / "collected.jsonl"

    async def interrupted() -> None:
        task = asyncio.create_task(collect(pack, MODELS, out, gateway=url, concurrency=2,
                                           scorer=letter_scorer))
        while not out.exists() or out.read_bytes().count(b"\n") < 10:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    first = pairs(out)
    assert 10 <= sum(first.values()) < 80 and max(first.values()) == 1
    with out.open("ab") as f:  # a kill in the middle of a write leaves a torn line
        f.write(b'{"prompt": "torn')
    report = run(pack, out, url, concurrency=4)
    assert report.written == 80 - sum(first.values())
    final = pairs(out)
    assert len(final) == 80 and max(final.values()) == 1
    assert set(first) <= set(final)


def test_the_spend_cap_stops_before_it_is_exceeded_and_a_higher_cap_resumes(served, pack,
                                                                           tmp_path):
    url, _ = served
    out = tmp_path / "collected.jsonl"
    cap = 0.02  # a few pairs' estimates at these prices
    report = run(pack, out, url, concurrency=1, max_usd=cap)
    assert report.stopped_at_cap and 0 < report.written < 80
    assert report.remaining == 80 - report.written
    # One at a time, the cap is checked against the real spend: the next pair would pass it.
    assert report.file_spent_usd <= cap < report.file_spent_usd + report.next_estimate_usd
    more = run(pack, out, url, concurrency=4, max_usd=cap * 4)
    assert more.file_spent_usd <= cap * 4
    assert more.rows_in_file == report.written + more.written
    assert max(pairs(out).values()) == 1


def test_a_router_trained_on_the_collected_file_has_a_column_per_catalog_model(
        served, pack, tmp_path, embed_cache):
    from eval.routing import predict_rows
    from router.artifact import load_router
    from training.data import load
    from training.encoders import encoder_for
    from training.fit import train_router

    url, _ = served
    out = tmp_path / "collected.jsonl"
    run(pack, out, url)
    table = load(out)
    assert table.models == sorted(MODELS) and len(table) == len(pack)
    router = load_router(train_router(table, tmp_path / "router", kind="knn",
                                      calibrate=False))
    assert router.models == sorted(MODELS)
    predicted, _ = predict_rows(router, table, encoder_for(router))
    for i in range(len(MODELS)):
        for j in range(i):
            assert not np.array_equal(predicted[:, i], predicted[:, j]), (i, j)


def test_the_cli_verb_collects_compares_and_says_how_to_resume(served, tmp_path, capsys,
                                                              monkeypatch):
    from service.cli import main

    url, config = served
    monkeypatch.setattr("eval.collect.reference_scorer", lambda: letter_scorer)
    out = tmp_path / "collected.jsonl"
    args = ["collect", "--pack", "starter", "--limit", "3", "--models", "frontier,chatty",
            "--out", str(out), "--gateway", url]
    assert main([*args, "--max-usd", "0.005"]) == 1
    err = capsys.readouterr().err
    assert "stopped at the spend cap" in err and "rerun with a higher --max-usd" in err
    assert main([*args, "--compare-recorded", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "6 in the file" in printed and "frontier" in printed
    assert "recorded outcomes: 6/6 agree (100.00%); 0 rows not compared" in printed
    assert main([*args[:-1], "http://127.0.0.1:1"]) == 2  # nothing listens on port 1
    assert "is `contextforge serve` running there?" in capsys.readouterr().err
