"""``contextforge eval cache`` on a tiny JSONL of pairs: the shipped verifier and its encoder."""

import json

import numpy as np

from router.cache.verifier import Verifier
from router.encoders import load_encoder
from service.cli import main

ROWS = [
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?", 1),
    ("Show me flights from Paris to Rome", "Show me flights from Rome to Paris", 0),
    ("Is it safe to drink tap water?", "Is it not safe to drink tap water?", 0),
    ("What is 15% of 200?", "What is 20% of 150?", 0),
    ("How can I lose weight fast?", "What is the quickest way to lose weight?", 1),
    ("What is the capital of France?", "What's the capital city of France?", 1),
]


def _write(path, split=None):
    recs = [{"text_a": a, "text_b": b, "label": y, **({"split": split(i)} if split else {})}
            for i, (a, b, y) in enumerate(ROWS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _cosines(encoder, rows):
    a = encoder.encode([r[0] for r in rows])
    b = encoder.encode([r[1] for r in rows])
    return np.einsum("ij,ij->i", a, b)


def test_eval_cache_writes_the_fixed_keys(tmp_path, encoder_dir, embed_cache, capsys):
    data, out = _write(tmp_path / "pairs.jsonl"), tmp_path / "cache.json"
    assert main(["eval", "cache", "--data", str(data), "--json", str(out),
                 "--encoder", str(encoder_dir)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == len(ROWS) and result["split"] == "all"
    for part in (result, *result["baselines"].values()):
        assert 0.0 <= part["false_hit_rate"] <= 1.0 and 0.0 <= part["hit_rate"] <= 1.0
    # The baselines are plain cosine under the encoder given; without a split the calibrated
    # threshold is the shipped verifier's, never one fitted on these rows.
    cos = _cosines(load_encoder(encoder_dir), ROWS)
    labels = np.array([r[2] for r in ROWS])
    fixed = result["baselines"]["cosine_0_8"]
    assert fixed["hit_rate"] == (cos[labels == 1] >= 0.8).mean()
    assert fixed["false_hit_rate"] == (cos[labels == 0] >= 0.8).mean()
    assert result["baselines"]["cosine_calibrated"]["threshold"] == Verifier.load().cosine_threshold
    # The label-0 pairs a lookup would decide: here each is the other's nearest question (the
    # reversed flight, the negation, the swapped numbers), so all three.
    assert fixed["n_nearest_non_duplicates"] == 3
    assert fixed["false_hit_rate_nearest"] == fixed["false_hit_rate"]
    assert "false hits" in capsys.readouterr().out


def test_eval_cache_reads_only_the_test_split(tmp_path, encoder_dir, embed_cache):
    data = _write(tmp_path / "pairs.jsonl", split=lambda i: "test" if i % 2 else "train")
    out = tmp_path / "cache.json"
    main(["eval", "cache", "--data", str(data), "--json", str(out), "--encoder", str(encoder_dir)])
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["n"] == 3
    assert result["n_duplicates"] == sum(r[2] for r in ROWS[1::2])
    assert "train" in result["baselines"]["cosine_calibrated"]["calibrated_on"]
