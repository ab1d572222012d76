"""Latency of one routing decision (encode + predict + policy) and micro-batched throughput.

    python benchmarks/routing_latency.py [--json FILE] [--n 300] [--config FILE]

Beside it, in the same process right after, sentence-transformers' own ``encode`` of the same
prompt: the baseline. The two are timed in separate blocks, not interleaved call by call: each
runtime's worker threads spin-wait after a call, and interleaving makes them starve each other.
``load_s`` is measured in a fresh process: import, load encoder + router + config, first
decision; it must not import torch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = ("Which of these is a renewable energy source? A) coal B) natural gas C) wind "
          "D) oil. Answer with the letter only.")  # ~30 tokens

LOAD = """
import sys, time
t0 = time.perf_counter()
from router.config import load_config
from router.engine import RoutingEngine
engine = RoutingEngine.from_config(load_config({config!r}))
engine.decide("warm-up prompt")
print(time.perf_counter() - t0, "torch" in sys.modules)
"""


def load_seconds(config: str | None) -> tuple[float, bool]:
    out = subprocess.run([sys.executable, "-c", LOAD.format(config=config)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), out[1] == "True"


def timed(fn, n: int, warm: int = 20) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


async def throughput(engine, prompts: list[str], concurrency: int) -> float:
    from router.embedding import MicroBatcher

    async with MicroBatcher(engine.encoder, max_wait_ms=0.0, max_batch=64,
                            layers=engine.router.layers) as mb:
        sem = asyncio.Semaphore(concurrency)

        async def one(p: str) -> None:
            async with sem:
                await engine.adecide(p, mb)

        await asyncio.gather(*(one(p) for p in prompts[:32]))  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return len(prompts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--config")
    args = ap.parse_args()

    from router.config import load_config
    from router.engine import RoutingEngine

    load_s = min(load_seconds(args.config)[0] for _ in range(3))
    torch_loaded = load_seconds(args.config)[1]
    engine = RoutingEngine.from_config(load_config(args.config))
    print(f"prompt: {engine.encoder.count_tokens(PROMPT)} tokens")

    # Ours first, before torch is even imported: its thread pool must not share the run.
    ours = timed(lambda: engine.decide(PROMPT), args.n)
    # The same decision with onnxruntime's threads spinning (encoder.spin: true): faster
    # alone, but not the default, since the spinning steals CPU from a gateway's event loop.
    from router.embedding import Encoder

    enc = engine.config.encoder
    spinning = RoutingEngine(engine.config, Encoder.load(
        engine.config.resolve(enc.path), quantized=enc.quantized, threads=enc.threads,
        spin=True), engine.router)
    spun = timed(lambda: spinning.decide(PROMPT), args.n)
    rng = np.random.default_rng(0)
    words = PROMPT.split()
    prompts = [" ".join(rng.permutation(words)) for _ in range(1024)]
    tput = asyncio.run(throughput(engine, prompts, concurrency=64))

    from sentence_transformers import SentenceTransformer

    from training.export_encoder import default_source

    st = SentenceTransformer(str(default_source()), device="cpu")
    base = timed(lambda: st.encode([PROMPT], normalize_embeddings=True), args.n)
    r = {
        "p50_ms": float(np.percentile(ours, 50) * 1e3),
        "p99_ms": float(np.percentile(ours, 99) * 1e3),
        "throughput_per_s": tput,
        "load_s": load_s,
        "spin_p50_ms": float(np.percentile(spun, 50) * 1e3),
        "spin_p99_ms": float(np.percentile(spun, 99) * 1e3),
        "spin_default": engine.config.encoder.spin,
        "baseline_p50_ms": float(np.percentile(base, 50) * 1e3),
        "baseline_p99_ms": float(np.percentile(base, 99) * 1e3),
        "torch_imported_on_load": torch_loaded,
        "router_kind": engine.router.spec.kind,
        "n": args.n,
    }
    print(f"{'':<34}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'decision (onnx fp32 + router)':<34}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
    print(f"{'same, encoder.spin: true':<34}{r['spin_p50_ms']:>9.2f}{r['spin_p99_ms']:>9.2f}")
    print(f"{'sentence-transformers encode only':<34}{r['baseline_p50_ms']:>9.2f}"
          f"{r['baseline_p99_ms']:>9.2f}")
    print(f"micro-batched decisions/s (64 concurrent): {tput:.0f}")
    print(f"load (fresh process, first decision): {load_s:.2f} s; torch imported: {torch_loaded}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
