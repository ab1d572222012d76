"""Routing tables from scored traffic, and `contextforge train --from-logs` on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router.artifact import load_router
from router.encoders import load_encoder
from router.traffic import ScoreRow, TrafficLog, TrafficRecord
from service.cli import main
from tests.static_tables import TOPICS, topics_table
from training.from_logs import TRAFFIC_TASK, parse_since, table_from_logs


def logged(tmp_path, rows):
    """A SQLite log of (prompt, model, score or None, cost) rows, each answered and scored."""
    dsn = f"sqlite:///{tmp_path / 'traffic.sqlite3'}"
    log = TrafficLog(dsn)
    for i, (prompt, model, _, cost) in enumerate(rows):
        log.write(TrafficRecord(id=f"r{i}", ts=1000.0 + i, status=200, model=model,
                                prompt=prompt, answer="an answer", cost_usd=cost,
                                propensity=0.5))
    log.write(TrafficRecord(id="failed", ts=2000.0, status=502, model="new", prompt="x"))
    log.flush()
    log.write_scores([ScoreRow(f"r{i}", "reference", score)
                      for i, (_, _, score, _) in enumerate(rows) if score is not None])
    log.write_scores([ScoreRow("failed", "reference", 1.0)])  # never answered: not learned
    return dsn, log


def test_each_logged_outcome_fills_one_cell_and_repeats_average(tmp_path):
    _, log = logged(tmp_path, [("p1", "new", 1.0, 0.01), ("p1", "new", 0.0, 0.03),
                                 ("p1", "old", 1.0, 0.1), ("p2", "new", None, 0.01),
                                 ("p3", "old", 0.0, 0.2)])
    table, window = table_from_logs(log, scorer="reference")
    log.close()
    assert table.models == ["new", "old"] and table.prompts == ["p1", "p3"]
    assert np.allclose(table.scores, [[0.5, 1.0], [np.nan, 0.0]], equal_nan=True)
    assert np.allclose(table.costs, [[0.02, 0.1], [np.nan, 0.2]], equal_nan=True)
    assert set(table.splits) == {"train"} and set(table.tasks) == {TRAFFIC_TASK}
    assert window.rows_read == 4 and window.observations == {"new": 2, "old": 2}
    assert window.as_dict()["first"].startswith("1970-01-01T00:16:40")


def test_logs_stack_on_a_base_dataset_sharing_columns_and_tasks(tmp_path):
    base = topics_table()
    prompt = base.prompts[0]
    _, log = logged(tmp_path, [(prompt, "weak", 1.0, 0.001), (prompt, "fresh", 1.0, 0.002),
                                 ("never seen before", "fresh", 0.0, 0.002)])
    table, _ = table_from_logs(log, base=base)
    log.close()
    n = len(base.split("train")) if (base.splits == "train").any() else len(base)
    assert table.models == [*base.models, "fresh"]
    assert len(table) == n + 2
    assert np.isnan(table.scores[:n, -1]).all()  # base rows never observed the new model
    row = table.scores[n]
    assert row[base.models.index("weak")] == 1.0 and row[-1] == 1.0
    assert table.tasks[n] == base.tasks[0] and table.tasks[n + 1] == TRAFFIC_TASK


def test_nothing_scored_is_a_clear_error(tmp_path):
    log = TrafficLog(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    with pytest.raises(ValueError, match="eval score"):
        table_from_logs(log, scorer="judge")
    log.close()


def test_since_takes_iso_dates_and_refuses_others():
    assert parse_since("1970-01-02") == 86400.0
    assert parse_since("1970-01-01T01:00:00+01:00") == 0.0
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since("last tuesday")


def test_train_from_logs_gives_new_catalog_models_their_own_column(tmp_path, monkeypatch,
                                                                   tiny_static):
    monkeypatch.setenv("CONTEXTFORGE_EMBED_CACHE", str(tmp_path / "emb"))
    # "fresh" is right on the odd topics only (the base's "weak" on the even ones): the
    # router must learn that from traffic (on the base's prompts, so of its task) rather than
    # keep a stand-in's prediction.
    rows = [(f"Question {i}: explain {TOPICS[i % 8]} with an example.", "fresh",
             float(i % 8 % 2 == 1), 0.001) for i in range(48)]
    dsn, log = logged(tmp_path, rows)
    log.close()
    cfg = tmp_path / "catalog.yaml"
    cfg.write_text(json.dumps({
        "encoder": {"path": str(tiny_static), "text_path": str(tiny_static)},
        "models": [{"name": "fresh", "input_price": 1, "output_price": 1,
                    "context_window": 1000, "stands_in_for": "strong"},
                   {"name": "other", "input_price": 1, "output_price": 1,
                    "context_window": 1000, "stands_in_for": "weak"}]}))
    out = tmp_path / "v2"
    assert main(["train", "--from-logs", dsn, "--base", str(_base_file(tmp_path)),
                 "--out", str(out), "--router", "knn", "--encoder", str(tiny_static),
                 "--config", str(cfg)]) == 0
    router = load_router(out)
    assert router.models[-1] == "fresh"
    asked = [f"Question {i}: explain {TOPICS[i % 8]} with an example." for i in range(200, 216)]
    x = load_encoder(tiny_static).encode_routing(router.routing_texts(asked))
    q = router.predict(x, asked)[:, -1]
    odd = np.array([i % 8 % 2 == 1 for i in range(200, 216)])
    assert q[odd].mean() > q[~odd].mean() + 0.3  # learned: odd topics right, even ones wrong
    card = json.loads((out / "card.json").read_text())
    assert card["traffic"]["learned"] == ["fresh"]
    assert card["traffic"]["stand_ins"] == {"other": "weak"}
    assert card["traffic"]["window"]["observations"] == {"fresh": len(rows)}
    assert card["traffic"]["window"]["prior_kept"] == {}
    assert "masked per-model regression" in (out / "CARD.md").read_text()


def _base_file(tmp_path):
    """topics_table as a user-data JSONL (one row per prompt and model)."""
    table = topics_table()
    path = tmp_path / "base.jsonl"
    with path.open("w") as f:
        for i, p in enumerate(table.prompts):
            for j, m in enumerate(table.models):
                f.write(json.dumps({"prompt": p, "model": m, "score": table.scores[i, j],
                                    "cost": table.costs[i, j], "split": "train"}) + "\n")
    return path


def test_a_task_the_traffic_never_showed_a_model_keeps_its_stand_ins_outcomes(tmp_path):
    from training.from_logs import MIN_TASK_OBSERVATIONS
    from training.table import RoutingTable

    base = RoutingTable(
        name="base", prompts=[f"quiz {i}" for i in range(4)] + [f"code {i}" for i in range(4)],
        models=["old"], scores=np.array([[1.0], [0.0], [1.0], [0.0]] * 2),
        costs=np.full((8, 1), 0.01), tasks=np.array(["quiz"] * 4 + ["code"] * 4),
        splits=np.array(["train"] * 8))
    # "new" is seen on quiz prompts often enough to learn them, never on code.
    rows = [(f"quiz {i % 4}", "new", 1.0, 0.002) for i in range(MIN_TASK_OBSERVATIONS)]
    _, log = logged(tmp_path, rows)
    table, window = table_from_logs(log, base=base, stand_ins={"new": "old"})
    log.close()
    new = table.models.index("new")
    code = np.flatnonzero(table.tasks == "code")
    assert np.array_equal(table.scores[code, new], table.scores[code, 0])  # the prior stays
    assert np.isnan(table.costs[code, new]).all()  # the stand-in's bills are not its prices
    quiz_base = np.flatnonzero((table.tasks == "quiz") & (np.arange(len(table)) < 8))
    assert np.isnan(table.scores[quiz_base, new]).all()  # learned from traffic instead
    assert window.prior_kept == {"new": {"code": "old"}}
