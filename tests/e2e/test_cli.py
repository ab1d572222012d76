"""The contextforge CLI end to end: train -> eval routing -> route, and its error paths."""

import json

import numpy as np
import pytest

from service.cli import main

TOPICS = ["integrals in calculus", "python list comprehension", "french grammar",
          "chess openings", "tax law", "quantum physics", "baking bread", "sql joins"]


def _write_data(path, n=96):
    """Two models: 'strong' is right on hard (odd-topic) prompts, 'weak' only on easy ones."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        hard = (i % len(TOPICS)) % 2 == 1
        prompt = f"Question {i}: explain {topic} with an example number {i}."
        split = "test" if i % 5 == 0 else "train"
        rows.append({"prompt": prompt, "model": "strong", "score": 1.0, "cost": 0.01,
                     "split": split})
        rows.append({"prompt": prompt, "model": "weak", "score": 0.0 if hard else 1.0,
                     "cost": 0.001, "split": split})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_train_then_eval_routing_writes_a_full_report(tmp_path, capsys, embed_cache, encoder):
    data = _write_data(tmp_path / "mine.jsonl")
    out = tmp_path / "router"
    assert main(["train", "--data", str(data), "--router", "linear", "--out", str(out)]) == 0
    for name in ("router.json", "weights.npz", "calibration.npy", "card.json", "CARD.md"):
        assert (out / name).exists(), name
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "linear" and card["evaluations"][0]["split"] == "test"

    report, plot = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["eval", "routing", "--router", str(out), "--data", str(data),
                 "--json", str(report), "--plot", str(plot)]) == 0
    r = json.loads(report.read_text())
    for key in ("dataset", "n", "models", "single", "best_single", "oracle", "router",
                "zero_router_aiq", "cost_at_best_quality", "apgr", "cpt50", "cpt80"):
        assert key in r, key
    assert r["n"] == 20 and set(r["router"]) >= {"quality", "cost", "aiq", "curve"}
    # The prompts say which model is needed: the router must beat always-strong on cost at
    # the same quality, which only a router that learned from the prompt can do.
    assert r["cost_at_best_quality"] is not None
    assert r["cost_at_best_quality"] < 0.9 * r["single"]["strong"]["cost"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_stores_surface_scaling_and_layers_as_told(tmp_path, capsys, embed_cache,
                                                         encoder):
    data = _write_data(tmp_path / "mine.jsonl")
    cases = (([], True, [2, 3, 4]), (["--no-surface", "--layers", "none"], False, []),
             (["--layers", "5"], True, [5]))
    for i, (flags, has_surface, layers) in enumerate(cases):
        out = tmp_path / f"router{i}"
        assert main(["train", "--data", str(data), "--router", "linear", "--out", str(out),
                     *flags]) == 0
        spec = json.loads((out / "router.json").read_text())
        assert (spec.get("surface") is not None) is has_surface
        assert spec["layers"] == layers
        # the linear model reads 384 embedding dimensions, 384 per layer, 5 surface features
        with np.load(out / "weights.npz") as w:
            assert w["w"].shape[0] == 384 * (1 + len(layers)) + 5 * has_surface
        assert main(["eval", "routing", "--router", str(out), "--data", str(data)]) == 0
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"),
                 "--layers", "two"]) == 2
    assert "--layers 'two'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_bad_data_row_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "model": "m", "score": 0.5}\n'
                   '{"prompt": "b", "model": "m", "score": 1.5}\n')
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "score" in err
    assert not (tmp_path / "r").exists()


def test_route_json_explains_every_candidate(capsys):
    assert main(["route", "Write a Python function to merge two sorted lists.", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["route"] == "auto" and d["model"] in {c["model"] for c in d["candidates"]}
    for c in d["candidates"]:
        assert 0.0 <= c["predicted_quality"] <= 1.0 and c["estimated_cost_usd"] > 0
        assert c["stands_in_for"]


def test_route_honours_capabilities_and_context(capsys):
    assert main(["route", "Describe this image.", "--require", "vision", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    chosen = next(c for c in d["candidates"] if c["model"] == d["model"])
    assert chosen["eligible"]
    assert all(not c["eligible"] for c in d["candidates"] if c["model"].startswith("llama"))
    assert main(["route", "hi", "--max-tokens", "5000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    command = next(c for c in d["candidates"] if c["model"] == "command")
    assert not command["eligible"] and "context window" in command["excluded_because"]


@pytest.mark.parametrize("argv,message", [
    (["route", "hi", "--route", "nope"], "The model `nope` does not exist"),
    (["eval", "routing", "--router", "/nonexistent", "--data", "routerbench"], "no router.json"),
    (["train", "--data", "routerbench", "--router", "forest", "--out", "/tmp/x"],
     "unknown router kind 'forest'"),
])
def test_user_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_validate_refuses_what_serve_refuses(tmp_path, capsys, monkeypatch):
    """One pipeline: a non-loopback host without a master key fails validate, not only serve."""
    from pathlib import Path

    monkeypatch.delenv("CONTEXTFORGE_MASTER_KEY", raising=False)
    root = Path(__file__).resolve().parents[2]
    text = (root / "contextforge.yaml").read_text()
    cfg = tmp_path / "open.yaml"
    cfg.write_text(text.replace("version: 1", "version: 1\nserver: {host: 0.0.0.0}", 1)
                   .replace("models/", str(root / "models") + "/"))
    assert main(["validate", "--config", str(cfg)]) == 2
    assert "server.host: '0.0.0.0' is not loopback" in capsys.readouterr().err
    monkeypatch.setenv("CONTEXTFORGE_MASTER_KEY", "sk-x")
    assert main(["validate", "--config", str(cfg)]) == 0


def test_route_shows_a_pinned_model_the_way_the_gateway_serves_it(capsys):
    assert main(["route", "hi", "--route", "gpt-4o", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["route"] == "none" and d["mode"] == "pinned" and d["model"] == "gpt-4o"
    assert main(["route", "hi", "--route", "gpt-4o", "--require", "embeddings"]) == 2
    assert "it lacks embeddings" in capsys.readouterr().err


def test_train_on_a_static_encoder_records_it_and_refuses_layers(tmp_path, capsys, embed_cache,
                                                                  tiny_static):
    data = _write_data(tmp_path / "mine.jsonl")
    out = tmp_path / "router"
    assert main(["train", "--data", str(data), "--router", "knn", "--out", str(out),
                 "--encoder", str(tiny_static)]) == 0
    spec = json.loads((out / "router.json").read_text())
    manifest = json.loads((tiny_static / "encoder.json").read_text())
    assert spec["encoder"] == {"id": "tiny-static", "sha256": manifest["sha256"]["table"]}
    assert spec["layers"] == []  # a table has no inner layers: none by default
    card = json.loads((out / "card.json").read_text())
    assert card["evaluations"][0]["n"] == 20  # evaluated on the encoder it was trained on
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"),
                 "--encoder", str(tiny_static), "--layers", "2"]) == 2
    assert "no inner layers" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "bad"),
                 "--encoder", "nonsense"]) == 2
    assert "not minilm, static" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # eval routing finds a built encoder by the router's id, another one by --encoder
    assert main(["eval", "routing", "--router", str(out), "--data", str(data)]) == 2
    assert "'tiny-static'" in capsys.readouterr().err
    assert main(["eval", "routing", "--router", str(out), "--data", str(data),
                 "--encoder", str(tiny_static)]) == 0
