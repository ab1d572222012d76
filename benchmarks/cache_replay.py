"""The response cache on a replayed request stream: how many repeats it answers, and how many
answers it gives that it must not.

    python benchmarks/cache_replay.py [--json FILE] [--requests 2000] [--tenants 4] [--seed 0]

The stream is built from QQP's fixed *test* split only (``training.data``: nothing the verifier
was fitted or calibrated on is replayed), each question used in one place only, in items whose
requests are spread at random over the stream (each item's order kept):

- ``repeat`` (half the requests): a label-1 pair (a, b) in one tenant: a is asked, later a
  again (an exact repeat) and b (a paraphrase repeat), in random order;
- ``near``: a label-0 pair (c, d) in one tenant: c is asked, later d, which must not hit (a
  hard non-repeat: QQP's label-0 pairs are near questions that ask something else);
- ``other tenant``: a question asked in one tenant, later the same question (half the items)
  or its labelled paraphrase (the other half) in another tenant: must miss.

Every request is deterministic (temperature 0), ``model: "auto"``, one user turn. They run one
at a time through the gateway's request path in this process (the app ``service.app`` builds
with ``CacheConfig(enabled=True)``, every other setting the shipped config's, simulated
providers; traffic log in a temporary folder): ``Gateway.pipeline.run`` on an ``Exchange``
carrying the tenant, as the HTTP front end runs it (tenants have no HTTP form yet: API keys
bring them). A hit's served entry is the exchange's ``cache_entry``; the entry's exact key
names the request that made it (each miss's key is recorded), so each hit is classified by
the question that created its entry: right when it is the same text or a QQP label-1
paraphrase of it (any split), a *false hit* otherwise. ``cross_tenant_hits``: hits served by
another tenant's entry.

Every decision the verifier made is kept and its candidate judged by QQP's labels: the same
question or a labelled paraphrase, a labelled non-duplicate, or a pair QQP never labelled.
``expected_false_hits``: the shipped verifier's false-hit rate on the label-0 pairs of QQP's test
split that a lookup would decide (one question the other's nearest among the split's questions:
``false_hit_rate_nearest``), computed in this run by ``eval.cache_eval.evaluate_cache`` as
``benchmarks/cache_quality.py`` does (embeddings cached in ``.cache/embeddings``), times the
labelled non-duplicate candidates the index put before the verifier; the hits among them are
what it predicts. The rate over all label-0 pairs (``false_hit_rate``) is reported beside it:
it is measured on easier pairs than a lookup selects, and under-predicts. A hit on a pair QQP
never labelled counts in ``false_hits`` (conservatively) but cannot be judged by the labels.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPEAT, NEAR, OTHER_TENANT = "repeat", "near", "other tenant"


@dataclass(frozen=True)
class Ask:
    """One request of the stream: who asks what, and what it is in its item."""

    tenant: str
    text: str
    item: int
    kind: str  # REPEAT, NEAR or OTHER_TENANT (the item's)
    role: str  # "first", "exact", "paraphrase", "near", "other_exact", "other_paraphrase"
    origin: str | None = None  # the item's first question, for every later request


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _take(pairs: list[tuple[str, str]], n: int, used: set[str]) -> list[tuple[str, str]]:
    """The first ``n`` pairs of distinct texts none of which is in ``used`` (then used)."""
    out = []
    for a, b in pairs:
        na, nb = _norm(a), _norm(b)
        if len(out) == n:
            break
        if not na or not nb or na == nb or na in used or nb in used:
            continue
        used.update((na, nb))
        out.append((a, b))
    if len(out) < n:
        raise ValueError(f"only {len(out)} usable pairs, {n} needed")
    return out


def build_stream(positives: list[tuple[str, str]], negatives: list[tuple[str, str]],
                 requests: int, tenants: int, seed: int = 0) -> list[Ask]:
    """About ``requests`` requests over ``tenants`` tenants (``tenants`` >= 2): a quarter of
    them first asks of label-1 ``positives``, each repeated once exactly and once as its
    paraphrase (half the stream repeats), a tenth ``other tenant`` items, the rest ``near``
    pairs of label-0 ``negatives``; items spread at random, each item's order kept."""
    if tenants < 2:
        raise ValueError("the other-tenant items need at least two tenants")
    rng = np.random.default_rng(seed)
    n_rep, n_other = requests // 4, requests // 20
    n_near = (requests - 3 * n_rep - 2 * n_other) // 2
    shuffled = [positives[i] for i in rng.permutation(len(positives))]
    used: set[str] = set()
    reps = _take(shuffled, n_rep + n_other, used)
    nears = _take([negatives[i] for i in rng.permutation(len(negatives))], n_near, used)
    items: list[list[Ask]] = []
    for k, (a, b) in enumerate(reps[:n_rep]):
        t = f"t{rng.integers(tenants)}"
        later = [Ask(t, a, k, REPEAT, "exact", a), Ask(t, b, k, REPEAT, "paraphrase", a)]
        items.append([Ask(t, a, k, REPEAT, "first"), *(later[i] for i in rng.permutation(2))])
    for k, (a, b) in enumerate(reps[n_rep:], start=len(items)):
        t, u = (f"t{i}" for i in rng.choice(tenants, 2, replace=False))
        second = Ask(u, a, k, OTHER_TENANT, "other_exact", a) if k % 2 else \
            Ask(u, b, k, OTHER_TENANT, "other_paraphrase", a)
        items.append([Ask(t, a, k, OTHER_TENANT, "first"), second])
    for k, (c, d) in enumerate(nears, start=len(items)):
        t = f"t{rng.integers(tenants)}"
        items.append([Ask(t, c, k, NEAR, "first"), Ask(t, d, k, NEAR, "near", c)])
    timed = [(float(when), ask) for item in items
             for when, ask in zip(np.sort(rng.random(len(item))), item, strict=True)]
    timed.sort(key=lambda x: x[0])
    return [ask for _, ask in timed]


@dataclass(frozen=True)
class Outcome:
    """What the gateway did with one request: its ``x-contextforge-cache`` value and, for a
    hit, the question and tenant of the request that created the serving entry."""

    cache: str
    served_text: str | None = None
    served_tenant: str | None = None
    similarity: float | None = None


def _is_repeat(ask: Ask) -> bool:
    return ask.role in ("exact", "paraphrase")


def tally(stream: list[Ask], outcomes: list[Outcome], paraphrases: set[frozenset[str]],
          non_paraphrases: set[frozenset[str]] | None = None) -> dict:
    """The replay's counts: right hits of repeats by kind, false hits (a hit served by an
    entry whose question is neither the request's text nor in ``paraphrases`` with it; how
    many of them are in ``non_paraphrases``, labelled as asking something else),
    cross-tenant hits, and the ``near`` requests whose near question was kept (a miss) in
    their tenant before them."""
    non_paraphrases = non_paraphrases or set()
    kept: set[tuple[str, str]] = set()
    c: Counter[str] = Counter()
    wrong: list[dict] = []
    for ask, out in zip(stream, outcomes, strict=True):
        c[f"{ask.role}_requests"] += 1
        hit = out.cache.startswith("hit-")
        if ask.role == "near" and (ask.tenant, _norm(ask.origin or "")) in kept:
            c["near_with_origin_cached"] += 1
        if not hit:
            if out.cache == "miss":
                kept.add((ask.tenant, _norm(ask.text)))
            continue
        c["hits"] += 1
        c[out.cache] += 1
        c[f"{ask.role}_hits"] += 1
        if out.served_tenant != ask.tenant:
            c["cross_tenant_hits"] += 1
        served = out.served_text or ""
        if _norm(served) != _norm(ask.text) and frozenset((served, ask.text)) not in paraphrases:
            c["false_hits"] += 1
            c[f"{ask.role}_false_hits"] += 1
            c["labelled"] += frozenset((served, ask.text)) in non_paraphrases
            wrong.append({"role": ask.role, "tier": out.cache, "query": ask.text,
                          "served": served, "similarity": out.similarity})
            if ask.role == "near" and _norm(served) == _norm(ask.origin or ""):
                c["near_served_by_its_near_question"] += 1
        elif _is_repeat(ask):
            c[f"{ask.role}_right_hits"] += 1
    repeats = c["exact_requests"] + c["paraphrase_requests"]
    rate = (lambda hits, n: hits / n if n else None)  # noqa: E731
    return {
        "requests": len(stream), "repeats": repeats,
        "repeat_hit_rate": rate(c["exact_right_hits"] + c["paraphrase_right_hits"], repeats),
        "exact_repeat_hit_rate": rate(c["exact_right_hits"], c["exact_requests"]),
        "paraphrase_hit_rate": rate(c["paraphrase_right_hits"], c["paraphrase_requests"]),
        "hits": c["hits"], "hits_exact": c["hit-exact"], "hits_semantic": c["hit-semantic"],
        "false_hits": c["false_hits"],
        "false_hits_labelled_non_duplicate": c["labelled"],
        "false_hits_unlabelled_pair": c["false_hits"] - c["labelled"],
        "near_requests": c["near_requests"],
        "near_with_origin_cached": c["near_with_origin_cached"],
        "hard_negative_false_hits": c["near_false_hits"],
        "hard_negative_served_by_near_question": c["near_served_by_its_near_question"],
        "first_ask_false_hits": c["first_false_hits"],
        "repeat_false_hits": c["exact_false_hits"] + c["paraphrase_false_hits"],
        "cross_tenant_hits": c["cross_tenant_hits"],
        "other_tenant_requests": c["other_exact_requests"] + c["other_paraphrase_requests"],
        "other_tenant_hits": c["other_exact_hits"] + c["other_paraphrase_hits"],
        "other_tenant_false_hits": c["other_exact_false_hits"] + c["other_paraphrase_false_hits"],
        "false_hit_examples": wrong,
    }


class CountingVerifier:
    """The gateway's verifier, counting the lookups that reach it and keeping every pair it
    decided: (query, candidate's question, logit)."""

    def __init__(self, inner):
        self.inner, self.calls, self.pairs = inner, 0, 0
        self.decided: list[tuple[str, str, float]] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def score(self, text_a, text_b, vec_a, vec_b):
        self.calls += 1
        self.pairs += len(text_a)
        logits = self.inner.score(text_a, text_b, vec_a, vec_b)
        self.decided += [(a, b, float(x)) for a, b, x in zip(text_a, text_b, logits, strict=True)]
        return logits


def decisions(decided: list[tuple[str, str, float]], threshold: float,
              paraphrases: set[frozenset[str]], non_paraphrases: set[frozenset[str]],
              false_hit_rate: float) -> dict:
    """Every verifier decision by what its candidate was, judged by QQP's labels (texts
    compared normalised): the same question or a labelled paraphrase (a hit is right), a
    labelled non-duplicate (a hit is wrong), or a pair QQP never labelled (unknown).

    The held-out false-hit rate is measured on labelled non-duplicate pairs, so it predicts the
    wrong hits among the labelled non-duplicate candidates the index actually put before the
    verifier (``expected_false_hits``): those are the nearest same-scope entries, a selection
    the pair-level measurement does not make, and this is where the prediction is checked."""
    from scipy.stats import beta

    norm_pos = {frozenset(map(_norm, p)) for p in paraphrases}
    norm_neg = {frozenset(map(_norm, p)) for p in non_paraphrases}
    n: Counter[str] = Counter()
    for a, b, logit in decided:
        pair = frozenset((_norm(a), _norm(b)))
        kind = ("match" if len(pair) == 1 or pair in norm_pos
                else "non_duplicate" if pair in norm_neg else "unlabelled")
        n[kind] += 1
        n[f"{kind}_accepted"] += logit >= threshold
    k, m = n["non_duplicate_accepted"], n["non_duplicate"]
    return {
        "candidates_match": n["match"], "candidates_match_accepted": n["match_accepted"],
        "candidates_non_duplicate": m, "candidates_non_duplicate_accepted": k,
        "candidates_unlabelled": n["unlabelled"],
        "candidates_unlabelled_accepted": n["unlabelled_accepted"],
        "expected_false_hits": false_hit_rate * m,
        # Clopper-Pearson 95 % interval of the false-hit rate among those candidates
        "non_duplicate_accept_rate_ci95": [
            float(beta.ppf(0.025, k, m - k + 1)) if k else 0.0,
            float(beta.ppf(0.975, k + 1, m - k)) if k < m else 1.0] if m else None,
    }


def cache_config(tmp: Path):
    """The shipped config with the cache on and the traffic log in ``tmp``."""
    import msgspec

    from router.config import CacheConfig, load_config

    cfg = load_config()
    traffic = msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp / 'traffic.sqlite3'}")
    return msgspec.structs.replace(cfg, traffic=traffic, cache=CacheConfig(enabled=True))


async def replay(stream: list[Ask], tmp: Path) -> tuple[list[Outcome], dict]:
    """Run ``stream`` through a gateway with the cache on; each request's outcome, and what
    the cache did (verifier lookups, its stats)."""
    import msgspec

    from router.wire.openai import ChatRequest
    from service.app import create_app
    from service.pipeline import Exchange

    app = create_app(cache_config(tmp))
    outcomes: list[Outcome] = []
    made: dict[str, tuple[str, str]] = {}  # exact key -> (tenant, question) of a kept miss
    async with app.lifespan():
        gw = app.state.gateway
        verifier = gw.cache.verifier = CountingVerifier(gw.cache.verifier)
        t0 = time.perf_counter()
        for ask in stream:
            body = {"model": "auto", "temperature": 0,
                    "messages": [{"role": "user", "content": ask.text}]}
            ex = Exchange("chat", msgspec.convert(body, ChatRequest), tenant=ask.tenant)
            ex = await gw.pipeline.run(ex, gw)
            cache = gw.headers(ex)["x-contextforge-cache"]
            if cache == "miss" and ex.cache_key is not None:
                made[ex.cache_key] = (ask.tenant, ask.text)
                outcomes.append(Outcome(cache))
            elif cache.startswith("hit-"):
                entry = gw.cache.exact.get_id(ex.cache_entry, touch=False)
                tenant, text = made.get(entry.key, (entry.tenant, None)) if entry else (None, None)
                outcomes.append(Outcome(cache, text, tenant, ex.cache_similarity))
            else:
                outcomes.append(Outcome(cache))
        seconds = time.perf_counter() - t0
        await gw.drain()
        stats = await gw.cache.stats()
    return outcomes, {"verifier_lookups": verifier.calls, "verifier_pairs": verifier.pairs,
                      "seconds": round(seconds, 1), "cache_stats": stats,
                      "decided": verifier.decided, "threshold": float(verifier.threshold)}


def held_out_false_hit_rate(qqp) -> dict:
    """The shipped verifier on QQP's test split, as ``benchmarks/cache_quality.py`` measures it."""
    from eval.cache_eval import evaluate_cache
    from router.cache.verifier import Verifier
    from router.config import load_config
    from router.encoders import load_encoder

    cfg = load_config()
    verifier = Verifier.load(cfg.resolve(cfg.cache.verifier))
    encoder = load_encoder(ROOT / "models" / "encoders" / verifier.encoder)
    result = evaluate_cache(qqp, verifier, encoder=encoder)
    return {k: result[k] for k in ("n", "false_hit_rate", "hit_rate", "n_non_duplicates",
                                   "false_hit_rate_nearest", "n_nearest_non_duplicates")}


def report(r: dict) -> None:
    def pct(x):
        return "-" if x is None else f"{x:.1%}"

    rows = [
        ("requests (tenants)", f"{r['requests']:,} ({r['tenants']})"),
        ("repeats (exact + paraphrase)", f"{r['repeats']:,}"),
        ("repeat_hit_rate", pct(r["repeat_hit_rate"])),
        ("  exact repeats hit", pct(r["exact_repeat_hit_rate"])),
        ("  paraphrase repeats hit", pct(r["paraphrase_hit_rate"])),
        ("hits: exact / semantic", f"{r['hits_exact']:,} / {r['hits_semantic']:,}"),
        ("lookups that reached the verifier", f"{r['verifier_lookups']:,}"),
        ("false_hits (all requests)", f"{r['false_hits']}"),
        ("  pair labelled 0 in QQP / unlabelled", f"{r['false_hits_labelled_non_duplicate']} / "
                                                  f"{r['false_hits_unlabelled_pair']}"),
        ("  on first asks / repeats", f"{r['first_ask_false_hits']} / {r['repeat_false_hits']}"),
        ("  on other-tenant asks", f"{r['other_tenant_false_hits']}"),
        ("  on hard non-repeats", f"{r['hard_negative_false_hits']} of {r['near_requests']} "
                                  f"({r['near_with_origin_cached']} with their near question "
                                  "cached)"),
        ("verifier decisions, by candidate", ""),
        ("  same question / labelled paraphrase", f"{r['candidates_match']:,} "
                                                  f"({r['candidates_match_accepted']:,} hit)"),
        ("  labelled non-duplicate", f"{r['candidates_non_duplicate']:,} "
                                     f"({r['candidates_non_duplicate_accepted']:,} hit)"),
        ("  never labelled", f"{r['candidates_unlabelled']:,} "
                             f"({r['candidates_unlabelled_accepted']:,} hit)"),
        ("expected_false_hits", f"{r['expected_false_hits']:.2f} "
                                f"(rate {r['held_out']['false_hit_rate_nearest']:.2%} x "
                                f"{r['candidates_non_duplicate']} labelled non-duplicates)"),
        ("  observed among them (95% CI of rate)",
         f"{r['candidates_non_duplicate_accepted']} "
         + ("" if r["non_duplicate_accept_rate_ci95"] is None else
            "({:.2%} - {:.2%})".format(*r["non_duplicate_accept_rate_ci95"]))),
        ("cross_tenant_hits", f"{r['cross_tenant_hits']} "
                              f"({r['other_tenant_hits']} of {r['other_tenant_requests']} "
                              "other-tenant asks hit)"),
    ]
    for name, value in rows:
        print(f"{name:36s} {value}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--tenants", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from training.data import load_pairs

    qqp = load_pairs("qqp")
    test = qqp.split("test")
    pairs = list(zip(test.text_a, test.text_b, strict=True))
    stream = build_stream([p for p, y in zip(pairs, test.labels, strict=True) if y == 1],
                          [p for p, y in zip(pairs, test.labels, strict=True) if y == 0],
                          args.requests, args.tenants, args.seed)
    labelled: tuple[set, set] = (set(), set())  # QQP's pairs, any split: label 0, label 1
    for a, b, y in zip(qqp.text_a, qqp.text_b, qqp.labels, strict=True):
        labelled[int(y)].add(frozenset((a, b)))
    held_out = held_out_false_hit_rate(qqp)
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, run = asyncio.run(replay(stream, Path(tmp)))
    decided = run.pop("decided")
    result = {**tally(stream, outcomes, labelled[1], labelled[0]), "tenants": args.tenants,
              "seed": args.seed, **run, "held_out": held_out,
              "false_hit_rate_source": "eval.cache_eval.evaluate_cache on QQP test, this run",
              **decisions(decided, run["threshold"], labelled[1], labelled[0],
                          held_out["false_hit_rate_nearest"])}
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
