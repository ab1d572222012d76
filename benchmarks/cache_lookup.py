"""How fast the cache answers and what it adds to a miss: the semantic index's search at 100k
and 1M entries, and hits and misses end to end through the gateway, cache on against off.

    python benchmarks/cache_lookup.py [--json FILE] [--sizes 100000,1000000] [--queries 2000]
        [--fill 2000] [--rounds 400] [--k8-rounds 200] [--all-cores-rounds 200]
        [--config FILE]

End to end first (``_cache_e2e.py``: two gateways in this process, cache on and off, requests
alternated): ``hit_exact_e2e_p50_ms``, ``hit_semantic_e2e_p50_ms`` (= ``hit_e2e_p50_ms``),
``miss_cache_on_e2e_p50_ms`` (entries of the request's scope present: the lookup embeds,
searches and verifies), ``miss_cache_on_no_scope_e2e_p50_ms`` (none: no embedding for the
lookup), ``miss_e2e_p50_ms`` (the same misses, cache off) and ``miss_on_off_ratio``, with the
lookup's parts timed inside the cache-on gateway; ``cache.candidates`` 1 (shipped) and 8.
The gateway runs FAISS on one OpenMP thread (``router.cache.semantic`` pins it); unless
``--all-cores-rounds 0``, the same again with FAISS on every core, under ``faiss_all_cores``:
what the lookup cost before that pin.

Then the index alone: for each size, one tenant namespace of that many entries (the worst
case: every entry in the namespace the query searches) with random unit 384-d vectors, built
with the factory string the size calls for (``Flat`` and ``HNSW32`` at 100k, ``HNSW32``
beyond), then ``--queries`` searches of a vector near a stored one (one scope), one at a time,
timed around ``SemanticIndex.search`` (the encoder excluded) with k = 1 (``cache.candidates``'
default; the index asks FAISS for 16 neighbours) and k = 8, on one OpenMP thread. Memory per
entry: the process's resident set before and after filling (each entry with its own metadata:
an entry id and a ~60-character question), divided by the entries; the answers themselves are
the exact tier's (bounded by ``cache.max_bytes``). The exact tier's ``get`` is timed too.
``--static-dim 256`` adds, per size, ``HNSW32`` with each entry's static vector beside its
transformer vector (what a gated cache keeps on a static-routing config): its bytes per entry
and the gate's k = 1 search of the static vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 384


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unit_rows(n: int, rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def measure(size: int, factory: str, queries: int, seed: int = 0,
            static_dim: int | None = None) -> dict:
    """One index's build time, bytes per entry and search times; with ``static_dim``, each
    entry also keeps a static vector of that size (a gated cache's second space), whose
    k = 1 search (the gate's) is timed too."""
    import faiss

    from router.cache.semantic import Meta, SemanticIndex

    faiss.omp_set_num_threads(1)  # single queries: one thread is faster (NOTES.md)
    rng = np.random.default_rng(seed)
    before = rss_mib()
    index = SemanticIndex(DIM, factory, max_entries=size + 1, static_dim=static_dim)
    t0 = time.perf_counter()
    block = 50_000
    for start in range(0, size, block):
        n = min(block, size - start)
        # Each entry its own metadata, as served: an entry id and a question of QQP's
        # typical length (~60 characters), so the memory per entry counts them.
        metas = [Meta(entry=f"ce-{i:016x}", tenant="t", user=None, scope="s",
                      text=f"How do I get the most out of question number {i} today?",
                      expires=1e18) for i in range(start, start + n)]
        index.add_many(unit_rows(n, rng), metas,
                       unit_rows(n, rng, static_dim) if static_dim else None)
    build_s = time.perf_counter() - t0
    after = rss_mib()
    stored = unit_rows(queries, np.random.default_rng(seed + 1))
    noise = unit_rows(queries, rng)
    queries_ = stored + 0.05 * noise
    queries_ /= np.linalg.norm(queries_, axis=1, keepdims=True)
    times: dict[int, list[float]] = {1: [], 8: []}
    for q in queries_:  # k = 1 and k = 8 alternately, so both see the same moments
        for k in (1, 8):
            t = time.perf_counter()
            index.search(q, "t", "s", k=k)
            times[k].append((time.perf_counter() - t) * 1e3)
    if static_dim:  # the gate's search: k = 1 over the static vectors
        times[0] = []
        for q in unit_rows(queries, rng, static_dim):
            t = time.perf_counter()
            index.search(q, "t", "s", k=1, space="static")
            times[0].append((time.perf_counter() - t) * 1e3)
    row = {"size": size, "factory": factory + (f"+static{static_dim}" if static_dim else ""),
           "build_s": round(build_s, 1),
           "bytes_per_entry": round((after - before) * 1024 * 1024 / size, 1)}
    for k, suffix in ((1, ""), (8, "_k8"), (0, "_static")):
        if k in times:
            row[f"p50_ms{suffix}"] = round(float(np.percentile(times[k], 50)), 4)
            row[f"p99_ms{suffix}"] = round(float(np.percentile(times[k], 99)), 4)
    return row


def exact_get(n: int = 100_000, queries: int = 20_000) -> dict:
    from router.cache import Entry, ExactCache

    cache = ExactCache(n + 1, 10**12)
    for i in range(n):
        cache.put(Entry(id=f"e{i}", key=f"{i:032x}", tenant="t", user=None, route="auto",
                        model="m", body=b"x" * 500, created=0.0, expires=1e18))
    keys = [f"{i:032x}" for i in np.random.default_rng(0).integers(0, n, queries)]
    times = []
    for k in keys:
        t = time.perf_counter()
        cache.get(k)
        times.append((time.perf_counter() - t) * 1e3)
    return {"size": n, "p99_ms": round(float(np.percentile(times, 99)), 5)}


def index_rows(sizes: list[int], queries: int, static_dim: int | None = None) -> list[dict]:
    """``measure`` for every size (FAISS on one thread meanwhile; restored after); with
    ``static_dim``, HNSW32 again with each entry's static vector too."""
    import faiss

    threads = faiss.omp_get_max_threads()
    rows = []
    try:
        for size in sizes:
            kinds = [(f, None) for f in (("Flat", "HNSW32") if size <= 100_000 else ("HNSW32",))]
            for factory, static in kinds + ([("HNSW32", static_dim)] if static_dim else []):
                row = measure(size, factory, queries, static_dim=static)
                rows.append(row)
                gate = (f"  gate k=1 p50 {row['p50_ms_static']:.3f} p99 "
                        f"{row['p99_ms_static']:.3f} ms" if static else "")
                print(f"{size:>9,} {row['factory']:<7} build {row['build_s']:>7.1f} s  "
                      f"k=1 p50 {row['p50_ms']:.3f} p99 {row['p99_ms']:.3f} ms  "
                      f"k=8 p50 {row['p50_ms_k8']:.3f} p99 {row['p99_ms_k8']:.3f} ms  "
                      f"{row['bytes_per_entry']:.0f} B/entry{gate}", flush=True)
    finally:
        faiss.omp_set_num_threads(threads)
    return rows


E2E_ROWS = (("hit, exact", "hit_exact_e2e_p50_ms", None, None),
            ("hit, semantic", "hit_semantic_e2e_p50_ms", "hit_semantic_k8_e2e_p50_ms", None),
            ("miss, scope has entries", "miss_cache_on_e2e_p50_ms", "miss_cache_on_k8_e2e_p50_ms",
             "miss_e2e_p50_ms"),
            ("miss, scope empty", "miss_cache_on_no_scope_e2e_p50_ms", None,
             "miss_no_scope_off_e2e_p50_ms"))


def e2e_table(r: dict, title: str) -> None:
    def ms(key):
        return "-" if key is None or r.get(key) is None else f"{r[key]:.2f}"

    print(f"\n{title}\n{'p50 ms':26s} {'cache on':>9s} {'on, k=8':>9s} {'cache off':>9s} "
          f"{'on/off':>7s}")
    for name, on, k8, off in E2E_ROWS:
        ratio = f"{r[on] / r[off]:.3f}" if off and r.get(on) and r.get(off) else "-"
        print(f"{name:26s} {ms(on):>9s} {ms(k8):>9s} {ms(off):>9s} {ratio:>7s}")
    print("cache on minus off, same prompt, p50 ms: " + ", ".join(
        f"{kind} {r[f'{kind}_added_paired_p50_ms']:.2f}"
        for kind in ("miss", "miss_no_scope", "miss_k8")
        if r.get(f"{kind}_added_paired_p50_ms") is not None))
    if r.get("miss_e2e_mean_ms"):
        print(f"miss (scope has entries) mean ms: cache on {r['miss_cache_on_e2e_mean_ms']:.2f}, "
              f"off {r['miss_e2e_mean_ms']:.2f}, on/off "
              f"{r['miss_cache_on_e2e_mean_ms'] / r['miss_e2e_mean_ms']:.3f}")
    if r.get("miss_gate_passed_share") is not None:
        print(f"gate ({r.get('routing_encoder')}, threshold {r.get('gate_threshold')}): "
              f"{r['miss_gate_passed_share']:.1%} of misses passed it; miss p50 ms passed "
              f"{r['miss_on_gate_passed_e2e_p50_ms']}, stopped "
              f"{r['miss_on_gate_stopped_e2e_p50_ms']}; work after the response "
              f"{r['after_response_count']} times, mean {r['after_response_mean_ms']} ms")
    print("lookup parts in the cache-on gateway, mean ms: " + "; ".join(
        f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if v)
        for kind, parts in r["cache_on_parts_mean_ms"].items()))
    print("lookup parts in the cache-on gateway (p50 ms): " + "; ".join(
        f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if v)
        for kind, parts in r["cache_on_parts_p50_ms"].items()))


def end_to_end(args: argparse.Namespace, rounds: int, k8_rounds: int) -> dict:
    import asyncio
    import tempfile

    from _cache_e2e import end_to_end as run

    config = Path(args.config).resolve() if args.config else None
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(Path(tmp), args.fill, rounds, k8_rounds, config))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--sizes", default="100000,1000000", help="index sizes ('' for none)")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--fill", type=int, default=2000, help="entries of the scope, end to end")
    ap.add_argument("--rounds", type=int, default=400, help="end-to-end samples per kind")
    ap.add_argument("--k8-rounds", type=int, default=200)
    ap.add_argument("--all-cores-rounds", type=int, default=200,
                    help="the end-to-end run again with FAISS on every core (0: skip)")
    ap.add_argument("--static-dim", type=int, default=0,
                    help="also HNSW32 with a static vector of this size per entry (256)")
    ap.add_argument("--config", help="the config the end-to-end part serves (default: the "
                                     "shipped contextforge.yaml)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import router.cache.semantic  # noqa: F401  (pins FAISS to one thread, as serving does)

    rows = index_rows([int(s) for s in args.sizes.split(",") if s], args.queries,
                      args.static_dim or None)
    exact = exact_get()
    print(f"exact tier get at {exact['size']:,}: p99 {exact['p99_ms']:.4f} ms", flush=True)
    e2e = end_to_end(args, args.rounds, args.k8_rounds)
    e2e_table(e2e, "end to end, shipped settings (FAISS on one OpenMP thread)")
    if args.all_cores_rounds:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count() or 1)
        e2e["faiss_all_cores"] = end_to_end(args, args.all_cores_rounds,
                                            args.all_cores_rounds // 2)
        e2e_table(e2e["faiss_all_cores"], "end to end, FAISS on every core (before the pin)")
        faiss.omp_set_num_threads(1)
    hnsw = {r["size"]: r for r in rows if r["factory"] == "HNSW32"}  # without static vectors
    result = {"p99_ms_100k": hnsw.get(100_000, {}).get("p99_ms"),
              "p99_ms_1m": hnsw.get(1_000_000, {}).get("p99_ms"),
              "bytes_per_entry": hnsw[max(hnsw)]["bytes_per_entry"] if hnsw else None,
              **e2e, "rows": rows, "exact": exact,
              "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
