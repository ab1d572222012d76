"""``contextforge eval ab`` end to end on a tiny user-data file and two tiny knn routers."""

import json

import pytest

from eval import metrics
from router.encoders import load_encoder
from service.cli import main
from tests.static_tables import TOPICS, build_tiny_static
from training.fit import train_router

PNG = b"\x89PNG\r\n\x1a\n"


def _write_data(path, models, n=64):
    """'strong' is always right, 'weak' only on even topics, 'mid' on all but the last."""
    rows = []
    for i in range(n):
        prompt = f"Question {i}: explain {TOPICS[i % 8]} with an example."
        right = {"strong": True, "weak": i % 8 % 2 == 0, "mid": i % 8 != 7}
        cost = {"strong": 0.01, "weak": 0.001, "mid": 0.004}
        split = "test" if i % 3 == 0 else "train"
        rows += [{"prompt": prompt, "model": m, "score": float(right[m]), "cost": cost[m],
                  "split": split} for m in models]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture()
def two_routers(tmp_path, monkeypatch, embed_cache):
    """(data file, router A over strong+weak, router B over all three), in a working folder
    where the routers' encoder is found by its id, as a built encoder would be."""
    encoder = load_encoder(build_tiny_static(tmp_path / "tiny-static"))
    monkeypatch.chdir(tmp_path)
    data = _write_data(tmp_path / "three.jsonl", ["strong", "weak", "mid"])
    two = _write_data(tmp_path / "two.jsonl", ["strong", "weak"])
    a = train_router(str(two), tmp_path / "a", kind="knn", encoder=encoder, calibrate=False)
    b = train_router(str(data), tmp_path / "b", kind="knn", encoder=encoder, calibrate=False)
    return data, a, b


def _config(tmp_path):
    # Prices in the data's proportions (USD per 1M prompt tokens; answers priced at 0): the
    # routers decide with these, as the gateway would.
    price = {"strong": 1000, "weak": 100, "mid": 400}
    models = [{"name": m, "input_price": price[m], "output_price": 0, "context_window": 8000,
               "expected_output_tokens": 1} for m in ("strong", "weak")]
    models.append({"name": "mid", "input_price": price["mid"], "output_price": 0,
                   "context_window": 8000, "expected_output_tokens": 1,
                   "stands_in_for": "weak"})
    (tmp_path / "cf.yaml").write_text(json.dumps({"models": models}))
    return tmp_path / "cf.yaml"


def test_eval_ab_on_data_writes_json_markdown_and_plot(tmp_path, capsys, two_routers):
    data, a, b = two_routers
    out_json, out_md, out_png = tmp_path / "ab.json", tmp_path / "ab.md", tmp_path / "ab.png"
    assert main(["eval", "ab", "--a", str(a), "--b", str(b), "--data", str(data),
                 "--config", str(_config(tmp_path)), "--bootstrap", "200", "--seed", "7",
                 "--json", str(out_json), "--markdown", str(out_md),
                 "--plot", str(out_png)]) == 0
    r = json.loads(out_json.read_text())
    for key in ("mode", "dataset", "split", "n", "a", "b", "diff", "bootstrap", "seed"):
        assert key in r, key
    assert (r["mode"], r["split"], r["n"], r["bootstrap"], r["seed"]) == ("data", "test", 22,
                                                                          200, 7)
    for side in ("a", "b"):
        assert set(r[side]) >= {"router", "quality", "cost", "aiq", "curve"}
    assert r["a"]["stand_ins"] == {"mid": "weak"} and r["b"]["stand_ins"] == {}
    assert r["decision_costs"] == "catalog prices"
    for key in ("quality", "cost", "aiq"):
        d = r["diff"][key]
        assert d["estimate"] == pytest.approx(r["b"][key] - r["a"][key])
        assert d["ci95"][0] <= d["estimate"] <= d["ci95"][1]
    # B learned where 'mid' is right; A sees it as 'weak' and reaches full quality dearer.
    assert r["diff"]["aiq"]["ci95"][0] > 0
    assert metrics.cost_at_quality(r["b"]["curve"], 1.0) < metrics.cost_at_quality(
        r["a"]["curve"], 1.0)
    text = out_md.read_text()
    assert "A: a" in text and "B: b" in text and "A predicts by stand-ins: mid as weak." in text
    assert text == capsys.readouterr().out
    assert out_png.read_bytes()[:8] == PNG


def test_eval_ab_without_stand_ins_names_the_models_a_router_lacks(tmp_path, capsys,
                                                                   two_routers):
    data, a, b = two_routers
    assert main(["eval", "ab", "--a", str(a), "--b", str(b), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"router 'a' ({a}): no column for mid" in err and "--config" in err


def test_eval_ab_of_a_router_with_itself_differs_by_exactly_zero(tmp_path, capsys,
                                                                 two_routers):
    _, a, _ = two_routers
    out = tmp_path / "same.json"
    two = tmp_path / "two.jsonl"
    assert main(["eval", "ab", "--a", str(a), "--b", str(a), "--data", str(two),
                 "--bootstrap", "100", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert all(r["diff"][k] == {"estimate": 0.0, "ci95": [0.0, 0.0]}
               for k in ("quality", "cost", "aiq"))


def test_eval_ab_on_logs_estimates_both_routers_from_scored_traffic(tmp_path, capsys,
                                                                   two_routers):
    from router.traffic import ScoreRow, TrafficLog, TrafficRecord

    _, a, b = two_routers
    log = TrafficLog(f"sqlite:///{tmp_path / 'traffic.sqlite3'}")
    models = ["strong", "weak", "mid"]
    for i in range(90):  # uniform logging over three models
        model = models[i % 3]
        right = {"strong": True, "weak": i % 8 % 2 == 0, "mid": i % 8 != 7}[model]
        log.write(TrafficRecord(id=f"r{i}", ts=1000.0 + i, status=200, model=model,
                                prompt=f"Question {i}: explain {TOPICS[i % 8]} with an example.",
                                answer="x", cost_usd={"strong": 0.01, "weak": 0.001,
                                                      "mid": 0.004}[model],
                                propensity=1 / 3))
        log.flush()
        log.write_scores([ScoreRow(f"r{i}", "reference", float(right))])
    dsn = log.dsn
    log.close()
    out = tmp_path / "logs.json"
    assert main(["eval", "ab", "--a", str(a), "--b", str(b), "--logs", dsn, "--config",
                 str(_config(tmp_path)), "--willingness-to-pay", "1.0", "--bootstrap", "50",
                 "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["mode"] == "logs" and got["n"] == 90 and got["models"] == sorted(models)
    assert got["logging"]["quality"]["estimate"] == pytest.approx(
        sum(1 for i in range(90) if {"strong": True, "weak": i % 8 % 2 == 0,
                                     "mid": i % 8 != 7}[models[i % 3]]) / 90)
    assert {"ips", "snips", "dr"} <= set(got["a"]) and {"ips", "snips", "dr"} <= set(got["b"])
    assert "logged traffic" in capsys.readouterr().out
    # No curves to draw from logs: a clear refusal.
    assert main(["eval", "ab", "--a", str(a), "--b", str(b), "--logs", dsn, "--plot",
                 str(tmp_path / "x.png")]) == 2
    assert "--plot" in capsys.readouterr().err
