"""The semantic cache's hit decision on held-out QQP: false-hit and hit rates; one table.

    python benchmarks/cache_quality.py [--json FILE] [--verifier FILE]

Rows: the shipped verifier (``Verifier.load()``: ``models/cache/cross_encoder/verifier.npz`` when
that has been built, else ``models/cache/verifier.npz``; either fitted and calibrated on QQP's
train split only) and two cosine baselines (0.8; calibrated on the train split to the same target),
all from this run, on

- ``test``: QQP's fixed test split (``training.data``: seed-0 permutation, first 20 %);
- ``test_unseen_texts``: the test pairs neither of whose questions occurs anywhere in the train
  split — QQP reuses questions across pairs, so this slice checks that the setting does not
  lean on questions it saw. The rule was fixed before the verifier was fitted.

Also the verifier's own cost of one decision on one pair and on four (one query against four
cached entries, as one lookup checks them): features and scoring, and the cross-encoder when
the verifier reads one, ms; the vectors are the encoder's, already made for the lookup.
Embeddings are cached (``.cache/embeddings``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.cache_eval import evaluate_cache, format_result
from router.cache.verifier import DEFAULT_PATH, Verifier
from router.encoders import load_encoder
from training.data import Pairs, load_pairs

ENCODERS = Path(__file__).resolve().parents[1] / "models" / "encoders"


def unseen_text_slice(pairs: Pairs) -> Pairs:
    """Test pairs whose two texts never occur in the train split, as split-less pairs (so the
    calibrated cosine baseline is the verifier's, fitted on the train split)."""
    seen = set(pairs.split("train").text_a) | set(pairs.split("train").text_b)
    test = pairs.split("test")
    keep = np.array([a not in seen and b not in seen
                     for a, b in zip(test.text_a, test.text_b, strict=True)])
    part = test.select(keep)
    return Pairs(part.text_a, part.text_b, part.labels, np.full(len(part), ""),
                 name=f"{pairs.name} test, unseen texts")


def verifier_ms(verifier: Verifier, pairs: Pairs, repeats: int = 300,
                candidates: int = 1) -> dict:
    """p50/p99 of one ``decide`` call on ``candidates`` pairs (one query against that many
    cached entries, as one lookup checks them; fresh pairs each time: nothing memoised)."""
    rng = np.random.default_rng(0)
    vec = rng.normal(size=(2 * candidates, 384))
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    times = []
    for i in range(repeats):
        rows = range(i * candidates, (i + 1) * candidates)
        query = [pairs.text_a[i * candidates]] * candidates
        t0 = time.perf_counter()
        verifier.decide(query, [pairs.text_b[j] for j in rows], vec[:candidates],
                        vec[candidates:])
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--verifier", default=str(DEFAULT_PATH))
    args = p.parse_args(argv)

    verifier = Verifier.load(args.verifier)
    encoder = load_encoder(ENCODERS / verifier.encoder)
    qqp = load_pairs("qqp")
    results = {
        "test": evaluate_cache(qqp, verifier, encoder=encoder),
        "test_unseen_texts": evaluate_cache(unseen_text_slice(qqp), verifier, encoder=encoder),
        "verifier_cost": verifier_ms(verifier, qqp.split("test")),
        "verifier_cost_4": verifier_ms(verifier, qqp.split("test"), candidates=4),
    }
    for name in ("test", "test_unseen_texts"):
        print(format_result(results[name]) + "\n")
    cost = results["verifier_cost"]
    print(f"verifier per pair: p50 {cost['p50_ms']:.3f} ms, p99 {cost['p99_ms']:.3f} ms")
    cost = results["verifier_cost_4"]
    print(f"verifier, 4 candidates: p50 {cost['p50_ms']:.3f} ms, p99 {cost['p99_ms']:.3f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
