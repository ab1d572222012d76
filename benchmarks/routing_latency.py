"""Latency of one routing decision (encode + predict + policy) and micro-batched throughput.

    python benchmarks/routing_latency.py [--json FILE] [--n 300] [--config FILE]

Beside it, in the same process right after, sentence-transformers' own ``encode`` of the same
prompt: the baseline. The two are timed in separate blocks, not interleaved call by call: each
runtime's worker threads spin-wait after a call, and interleaving makes them starve each other.
``load_s`` is measured in a fresh process: import, load encoder + router + config, first
decision; it must not import torch.

Because the fp32 encoder is bound by arithmetic, the figure follows the host. So the run also
reports the host's floor: the encoder graph's weight matmuls for this prompt (FLOPs read off
the ONNX file) timed one after another with numpy's BLAS at the same shapes, and numpy's
sgemm throughput on a large square product.

With a static routing encoder (``encoder.path`` a token table, ``router.static_encoder``) the
decision is a lookup: there is no onnxruntime pool to spin, and the floor printed is the
transformer's (``encoder.text_path``), for comparison.
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


def weight_matmuls(model_file: Path) -> list[tuple[int, int]]:
    """(K, N) of every MatMul/Gemm in the graph whose right operand is a stored weight."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_file))
    shapes = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(shapes.get(node.input[1], ())) == 2:
            k, n = shapes[node.input[1]]
            trans = any(a.name == "transB" and a.i for a in node.attribute)
            out.append((n, k) if trans else (k, n))
    return out


def host_floor(model_file: Path, tokens: int, reps: int = 300) -> dict:
    """What this host's BLAS needs for the encoder's weight matmuls at ``tokens`` tokens.

    Attention's own products (tokens x tokens per head) are left out: at ~30 tokens they are
    about 1% of the arithmetic. Medians over ``reps`` runs.
    """
    rng = np.random.default_rng(0)
    shapes = weight_matmuls(model_file)
    pairs = [(rng.standard_normal((tokens, k), dtype=np.float32),
              rng.standard_normal((k, n), dtype=np.float32)) for k, n in shapes]

    def chain() -> None:
        for a, w in pairs:
            a @ w

    flops = sum(2 * tokens * k * n for k, n in shapes)
    big = rng.standard_normal((1024, 1024), dtype=np.float32)
    sgemm = float(np.median(timed(lambda: big @ big, 30, warm=3)))
    return {"encoder_matmul_mflop": flops / 1e6,
            "host_matmul_chain_ms": float(np.median(timed(chain, reps)) * 1e3),
            "host_sgemm_gflops": 2 * 1024**3 / sgemm / 1e9}


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
    enc = engine.config.encoder
    static = engine.encoder.kind == "static"
    spun: list[float] = []
    if not static:
        # The same decision with onnxruntime's threads spinning (encoder.spin: true): faster
        # alone, but not the default, since the spinning steals CPU from a gateway's event loop.
        from router.embedding import Encoder

        spinning = RoutingEngine(engine.config, Encoder.load(
            engine.config.resolve(enc.path), quantized=enc.quantized, threads=enc.threads,
            spin=True), engine.router)
        spun = timed(lambda: spinning.decide(PROMPT), args.n)
    rng = np.random.default_rng(0)
    words = PROMPT.split()
    prompts = [" ".join(rng.permutation(words)) for _ in range(1024)]
    tput = asyncio.run(throughput(engine, prompts, concurrency=64))

    # The floor is the transformer's: a static encoder's decision is a table lookup.
    text_encoder = engine.text_encoder
    tokens = len(text_encoder.tokenize([PROMPT])[0])
    floor = host_floor(engine.config.resolve(enc.text_path) / "model.onnx", tokens)

    from sentence_transformers import SentenceTransformer

    from training.export_encoder import default_source

    st = SentenceTransformer(str(default_source()), device="cpu")
    base = timed(lambda: st.encode([PROMPT], normalize_embeddings=True), args.n)
    r = {
        "p50_ms": float(np.percentile(ours, 50) * 1e3),
        "p99_ms": float(np.percentile(ours, 99) * 1e3),
        "throughput_per_s": tput,
        "load_s": load_s,
        "spin_p50_ms": float(np.percentile(spun, 50) * 1e3) if spun else None,
        "spin_p99_ms": float(np.percentile(spun, 99) * 1e3) if spun else None,
        "spin_default": engine.config.encoder.spin,
        "baseline_p50_ms": float(np.percentile(base, 50) * 1e3),
        "baseline_p99_ms": float(np.percentile(base, 99) * 1e3),
        "torch_imported_on_load": torch_loaded,
        "router_kind": engine.router.spec.kind,
        "n": args.n,
        "encoder_quantized": enc.quantized,
        "encoder": engine.encoder.id,
        "encoder_kind": engine.encoder.kind,
        **floor,
    }
    print(f"{'':<34}{'p50 ms':>9}{'p99 ms':>9}")
    variant = "static table" if static else f"onnx {'int8' if enc.quantized else 'fp32'}"
    print(f"{f'decision ({variant} + router)':<34}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}")
    if spun:
        print(f"{'same, encoder.spin: true':<34}{r['spin_p50_ms']:>9.2f}{r['spin_p99_ms']:>9.2f}")
    print(f"{'sentence-transformers encode only':<34}{r['baseline_p50_ms']:>9.2f}"
          f"{r['baseline_p99_ms']:>9.2f}")
    print(f"micro-batched decisions/s (64 concurrent): {tput:.0f}")
    print(f"load (fresh process, first decision): {load_s:.2f} s; torch imported: {torch_loaded}")
    mflop, peak = floor["encoder_matmul_mflop"], floor["host_sgemm_gflops"]
    print(f"decision p50 / sentence-transformers p50: {r['p50_ms'] / r['baseline_p50_ms']:.3f}")
    print(f"host floor: the transformer's weight matmuls, {mflop:.0f} MFLOP at {tokens} tokens "
          f"([CLS] and [SEP] included), take {floor['host_matmul_chain_ms']:.2f} ms one after "
          f"another in numpy's BLAS, and {mflop / peak:.2f} ms even at its {peak:.0f} GFLOP/s "
          f"sgemm peak (1024 x 1024)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
