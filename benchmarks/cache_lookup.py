"""How fast the cache finds candidates: the semantic index's search at 100k and 1M entries.

    python benchmarks/cache_lookup.py [--json FILE] [--sizes 100000,1000000] [--queries 2000]

For each size, one tenant namespace of that many entries (the worst case: every entry in the
namespace the query searches) with random unit 384-d vectors, built with the factory string
the size calls for (``Flat`` and ``HNSW32`` at 100k, ``HNSW32`` beyond), then ``--queries``
searches of a vector near a stored one (k = 8, one scope), one at a time, timed around
``SemanticIndex.search`` (the encoder excluded). Memory per entry: the process's resident set
before and after filling, divided by the entries. The exact tier's ``get`` is timed too.

The end-to-end keys DESIGN.md lists for this benchmark (hit, miss with the cache on, miss with
it off, through the gateway) come when the semantic tier is wired into the request path.
"""

from __future__ import annotations

import argparse
import json
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


def unit_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def measure(size: int, factory: str, queries: int, seed: int = 0) -> dict:
    import faiss

    from router.cache.semantic import Meta, SemanticIndex

    faiss.omp_set_num_threads(1)  # single queries: one thread is faster (NOTES.md)
    rng = np.random.default_rng(seed)
    before = rss_mib()
    index = SemanticIndex(DIM, factory, max_entries=size + 1)
    t0 = time.perf_counter()
    block = 50_000
    meta = Meta(entry="e", tenant="t", user=None, scope="s", text="", expires=1e18)
    for start in range(0, size, block):
        n = min(block, size - start)
        index.add_many(unit_rows(n, rng), [meta] * n)
    build_s = time.perf_counter() - t0
    after = rss_mib()
    stored = unit_rows(queries, np.random.default_rng(seed + 1))
    times = []
    for q in stored:
        q = q + 0.05 * unit_rows(1, rng)[0]
        q /= np.linalg.norm(q)
        t = time.perf_counter()
        index.search(q, "t", "s", k=8)
        times.append((time.perf_counter() - t) * 1e3)
    ms = np.array(times)
    return {"size": size, "factory": factory, "build_s": round(build_s, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "bytes_per_entry": round((after - before) * 1024 * 1024 / size, 1)}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for factory in (("Flat", "HNSW32") if size <= 100_000 else ("HNSW32",)):
            row = measure(size, factory, args.queries)
            rows.append(row)
            print(f"{size:>9,} {factory:<7} build {row['build_s']:>7.1f} s  p50 "
                  f"{row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  "
                  f"{row['bytes_per_entry']:.0f} B/entry", flush=True)
    exact = exact_get()
    print(f"exact tier get at {exact['size']:,}: p99 {exact['p99_ms']:.4f} ms")
    hnsw = {r["size"]: r for r in rows if r["factory"] == "HNSW32"}
    result = {"rows": rows, "exact": exact,
              "p99_ms_100k": hnsw.get(100_000, {}).get("p99_ms"),
              "p99_ms_1m": hnsw.get(1_000_000, {}).get("p99_ms"),
              "bytes_per_entry": hnsw.get(max(hnsw), {}).get("bytes_per_entry") if hnsw else None}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
