"""Calibrate the cache's static-vector gate (``router.cache.gate``) on QQP's train split.

    python -m training.cache_gate [--static DIR] [--encoder DIR] [--verifier FILE]
        [--out models/cache/gate.json] [--target 0.95] [--evaluate test] [--json FILE]

The lookup the gate guards, replayed as ``cache_replay.py`` does it: one scope holding many
questions, and queries looked up in it one by one. The split's pairs are dealt at random
(seed 0) into two halves: the first question ``text_a`` of each *planted* pair is cached, and
every pair's second question ``text_b`` is a query, unless it is itself cached (an exact hit,
never a semantic lookup). A planted query has its pair's question in the index (QQP pairs are
near questions: a paraphrase, or a near miss), the hard case for a gate; a *cold* query has
none of its own, only the many other questions: a new question, the miss whose tax the gate
removes. For each query, the transformer's nearest entry and the verifier's decision on that
pair (``cache.candidates`` 1): a *verifier hit* is one the cache would serve. And the nearest
entry by the static table's vectors: its cosine is what the gate reads; every query at or
above the threshold is sent on to the transformer. The threshold is the highest static cosine
that ``target`` of the verifier hits have *to the very entry that served them*: a hit passes
the gate whenever its own entry clears it, whatever else is cached, so the share kept is at
least ``target`` at any cache size (other near entries only add to it; calibrated on the
nearest entry instead, a threshold chosen on a large index kept 90 % of the hits on a small
one).

Only the train split chooses it. ``--evaluate test`` then reports, with that threshold fixed,
the same shares on the test split: its own planted questions as the index, and again with
every train first question added to it as distractors (an index as large as train's; they
choose nothing), since the share sent on grows with the number of entries the nearest one is
drawn from. Searches are exact (FAISS ``Flat``), so HNSW's approximation is not in the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from router.cache.gate import GateSpec, save_spec
from training.data import Pairs, load_pairs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATIC = ROOT / "models" / "encoders" / "all-MiniLM-L6-v2-static256"
DEFAULT_ENCODER = ROOT / "models" / "encoders" / "all-MiniLM-L6-v2"
DEFAULT_VERIFIER = ROOT / "models" / "cache" / "verifier.npz"
DEFAULT_OUT = ROOT / "models" / "cache" / "gate.json"
DEFAULT_TARGET = 0.95


@dataclass(frozen=True)
class Replay:
    """Per query of one replayed scope: the verifier's hit on its nearest entry, and the
    static cosine of its nearest entry by the table's vectors."""

    index_size: int
    planted: np.ndarray  # (queries,) bool: its pair's first question is cached
    hit: np.ndarray  # (queries,) bool
    static_best: np.ndarray  # (queries,) float: to the nearest entry by the table
    static_to_best: np.ndarray  # (queries,) float: to the transformer's nearest entry
    in_static_top10: np.ndarray  # (queries,) bool: the transformer's best is in the top 10

    def shares(self, threshold: float) -> dict[str, float]:
        """What a gate at ``threshold`` keeps of the verifier's hits and sends on: over every
        query, the planted ones and the cold ones."""
        passed = self.static_best >= threshold
        hits = self.hit
        return {"index": self.index_size, "queries": len(hits),
                "planted_queries": int(self.planted.sum()),
                "verifier_hits": int(hits.sum()),
                "verifier_hits_cold": int(hits[~self.planted].sum()),
                "kept": _mean(passed[hits]),
                "kept_at_least": _mean(self.static_to_best[hits] >= threshold),
                "sent_on": _mean(passed),
                "sent_on_planted": _mean(passed[self.planted]),
                "sent_on_cold": _mean(passed[~self.planted]),
                "hits_in_static_top10": _mean(self.in_static_top10[hits])}


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def scope_of(pairs: Pairs, extra_index: Sequence[str] = (), seed: int = 0
             ) -> tuple[list[str], list[str], np.ndarray]:
    """(index questions, query questions, whether each query is planted), stripped as the
    cache strips a last user turn."""
    planted = np.random.default_rng(seed).random(len(pairs)) < 0.5
    firsts = [a.strip() for a, p in zip(pairs.text_a, planted, strict=True) if p]
    index = list(dict.fromkeys(t for t in [*firsts, *(t.strip() for t in extra_index)] if t))
    cached = set(index)
    queries: dict[str, bool] = {}
    for b, p in zip(pairs.text_b, planted, strict=True):
        b = b.strip()
        if b and b not in cached:
            queries[b] = queries.get(b, False) or bool(p)
    return index, list(queries), np.array(list(queries.values()), dtype=bool)


def nearest(index: np.ndarray, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(cosines, ids) of each query's ``k`` nearest rows of ``index``, exactly."""
    import faiss

    flat = faiss.IndexFlatIP(index.shape[1])
    flat.add(np.ascontiguousarray(index, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def replay(index: list[str], queries: list[str], planted: np.ndarray, encoder, static,
           verifier) -> Replay:
    """The replay above for one scope: ``encoder`` the transformer (vectors from the embedding
    cache), ``static`` the table, ``verifier`` the cache's hit decision."""
    from training.embed_cache import embed_cached

    vi, vq = embed_cached(encoder, index), embed_cached(encoder, queries)
    _, best = nearest(vi, vq)
    best = best[:, 0]
    logits = np.concatenate([
        verifier.score(queries[s:s + 4096], [index[j] for j in best[s:s + 4096]],
                       vq[s:s + 4096], vi[best[s:s + 4096]])
        for s in range(0, len(queries), 4096)])
    si, sq = static.encode(index), static.encode(queries)
    cos, ids = nearest(si, sq, k=10)
    return Replay(len(index), planted, logits >= verifier.threshold, cos[:, 0],
                  np.einsum("ij,ij->i", sq, si[best]), (ids == best[:, None]).any(axis=1))


def calibrate(run: Replay, target: float = DEFAULT_TARGET) -> float:
    """The highest static cosine that at least ``target`` of the verifier hits have to the
    entry that served them (every query whose nearest entry is at or above it goes on)."""
    hits = np.sort(run.static_to_best[run.hit])
    if not len(hits):
        raise ValueError("no verifier hit to calibrate on")
    return float(hits[int(np.floor(len(hits) * (1 - target)))])


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    """Calibrate on the train split, write ``gate.json``; report held out when asked."""
    from router.cache.verifier import Verifier
    from router.embedding import Encoder
    from router.static_encoder import StaticEncoder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--static", default=str(DEFAULT_STATIC), help="the static table's folder")
    p.add_argument("--encoder", default=str(DEFAULT_ENCODER), help="the transformer's folder")
    p.add_argument("--verifier", default=str(DEFAULT_VERIFIER))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--target", type=float, default=DEFAULT_TARGET)
    p.add_argument("--evaluate", default="", help="a split to report on afterwards (test)")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)

    static, encoder = StaticEncoder.load(args.static), Encoder.load(args.encoder)
    verifier = Verifier.load(args.verifier)
    qqp = load_pairs("qqp")
    train = qqp.split("train")
    run = replay(*scope_of(train), encoder, static, verifier)
    threshold = calibrate(run, args.target)
    figures = run.shares(threshold)
    print(f"train: threshold {threshold:.4f}: {json.dumps(figures)}", flush=True)
    spec = GateSpec(encoder=static.id, sha256=static.sha256, dim=static.dim,
                    threshold=round(threshold, 6), target_kept=args.target,
                    verifier_sha256=file_sha256(Path(args.verifier)),
                    data="qqp train split: pairs dealt into halves (seed 0); index = the "
                         "planted half's text_a, queries = every text_b not in it",
                    figures={k: round(float(v), 4) for k, v in figures.items()})
    print(f"wrote {save_spec(spec, args.out)}")
    report = {"threshold": threshold, "train": figures}
    if args.evaluate:
        held = qqp.split(args.evaluate)
        report[args.evaluate] = replay(*scope_of(held), encoder, static,
                                       verifier).shares(threshold)
        padded = scope_of(held, extra_index=list(train.text_a))
        report[f"{args.evaluate}_with_train_distractors"] = replay(
            *padded, encoder, static, verifier).shares(threshold)
        for key in (args.evaluate, f"{args.evaluate}_with_train_distractors"):
            print(f"{key}: {json.dumps(report[key])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
