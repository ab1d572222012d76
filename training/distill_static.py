"""Distil a static (token-lookup) routing encoder from the installed MiniLM, reproducibly.

The method is model2vec's (``model2vec.distill.distill``, 0.10.0): every vocabulary token
(MiniLM's ``[unused*]`` placeholders left out) is run through the transformer alone, as
``[CLS] token [SEP]``, and its output mean-pooled; the vectors are reduced by PCA, scaled by a
SIF weight from the token's rank (Zipf's law over the vocabulary order), and stored as float16.
A text is then the normalised mean of its tokens' rows: no transformer at serving time.

It is reimplemented here rather than called, for two reasons. Reproducibility: a shipped
router's weights are committed, but the table is rebuilt on every fresh machine, so it must come
out bit-identical. model2vec works in float32 (forward pass, then PCA), where BLAS kernels of
different CPUs differ in the last bits and thousands of float16 values land on the other side of
a rounding boundary. Here everything runs in float64 and is rounded to float16 once, at the end:
float64 differences between machines (~1e-15 relative) are far below the smallest distance of
any value to a float16 rounding boundary, which is measured and written to the manifest
(``rounding_margin``). And dependencies: model2vec's ``distill`` extra pins transformers < 5.4.

``StaticEncoder`` (``router.static_encoder``) reads the folder this writes:
``table.npy`` (float16, one row per MiniLM token id; zero rows for the left-out tokens),
``tokenizer.json`` (MiniLM's own) and ``encoder.json`` (id, kind ``static``, dim, sha256 of both
files, source, the distillation settings). Run ``python -m training.distill_static``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from training.export_encoder import REPO, _publish, default_source, file_sha256

DEFAULT_PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
MAX_SEQ_LENGTH = 512  # tokens read per text (model2vec's default); a lookup is cheap
_LEFT_OUT = re.compile(r"\[unused\d+\]")
_BATCH = 512
METHOD = "model2vec-0.10-mean-pca-sif/float64"


def static_name(pca_dims: int = DEFAULT_PCA_DIMS) -> str:
    """The encoder id and folder name for a table of ``pca_dims`` columns."""
    return f"all-MiniLM-L6-v2-static{pca_dims}"


def _token_vectors(source: str, ids: np.ndarray, cls_id: int, sep_id: int) -> np.ndarray:
    """(len(ids), hidden) float64: the mean of the last layer over ``[CLS] id [SEP]``."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source, attn_implementation="eager").double().eval()
    out = np.empty((len(ids), model.config.hidden_size), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(ids), _BATCH):
            chunk = torch.as_tensor(ids[start : start + _BATCH], dtype=torch.long)
            seq = torch.stack([torch.full_like(chunk, cls_id), chunk,
                               torch.full_like(chunk, sep_id)], dim=1)
            # Every sequence has three tokens: no padding, so no mask can change the result.
            hidden = model(input_ids=seq, attention_mask=torch.ones_like(seq),
                           token_type_ids=torch.zeros_like(seq)).last_hidden_state
            out[start : start + len(chunk)] = hidden.mean(dim=1).numpy()
    return np.nan_to_num(out)


def pca_scores(x: np.ndarray, k: int) -> np.ndarray:
    """Scores on the top ``k`` principal components, each signed so that its largest-magnitude
    score is positive (model2vec's convention: eigenvector signs are otherwise arbitrary)."""
    xc = x - x.mean(axis=0)
    _, eigvecs = np.linalg.eigh(xc.T @ xc / (len(x) - 1))
    components = eigvecs[:, ::-1][:, :k]
    scores = xc @ components
    peak = np.argmax(np.abs(scores), axis=0)
    return scores * np.sign(scores[peak, np.arange(k)])


def sif_weights(n: int, coefficient: float = SIF_COEFFICIENT) -> np.ndarray:
    """model2vec's SIF weight of the token at each rank 0..n-1, from a Zipf estimate of its
    frequency: frequent (early) tokens count less in a text's mean."""
    inv_rank = 1.0 / np.arange(2, n + 2)
    p = inv_rank / inv_rank.sum()
    return coefficient / (coefficient + p)


def rounding_margin(x: np.ndarray) -> float:
    """The smallest relative distance of any value of ``x`` to a float16 rounding boundary
    (the midpoint between two neighbouring float16 values): how far a float64 difference
    between machines would have to reach to change one bit of the stored table."""
    flat = x.ravel()
    lo = flat.astype(np.float16)
    # The neighbour on the side of x, and the midpoint to it.
    toward = np.where(flat > lo.astype(np.float64), np.float16(np.inf), -np.float16(np.inf))
    other = np.nextafter(lo, toward.astype(np.float16)).astype(np.float64)
    mid = (lo.astype(np.float64) + other) / 2
    nonzero = np.abs(flat) > 0
    return float(np.min(np.abs(flat - mid)[nonzero] / np.abs(flat[nonzero])))


def build_table(source: str, pca_dims: int = DEFAULT_PCA_DIMS) -> tuple[np.ndarray, float]:
    """(vocab_size, pca_dims) float16 table indexed by MiniLM token id, and its rounding
    margin (see ``rounding_margin``)."""
    vocab: dict[str, int] = json.loads((Path(source) / "tokenizer.json").read_text())[
        "model"]["vocab"]
    kept = np.array(sorted(i for t, i in vocab.items() if not _LEFT_OUT.fullmatch(t)))
    x = _token_vectors(source, kept, vocab["[CLS]"], vocab["[SEP]"])
    rows = pca_scores(x, pca_dims) * sif_weights(len(kept))[:, None]
    table = np.zeros((max(vocab.values()) + 1, pca_dims), dtype=np.float16)
    table[kept] = rows.astype(np.float16)  # numpy rounds float64 to float16 directly
    return table, rounding_margin(rows)


def distill_static(source: str | Path | None = None, out_dir: str | Path | None = None, *,
                   pca_dims: int = DEFAULT_PCA_DIMS, name: str | None = None) -> Path:
    """Build the static encoder folder from ``source`` (a MiniLM-style model folder with
    ``tokenizer.json``); default ``models/encoders/<static_name(pca_dims)>``. Written to a
    temporary sibling and renamed into place."""
    import torch

    source = str(source or default_source())
    name = name or static_name(pca_dims)
    out_dir = Path(out_dir) if out_dir else REPO / "models" / "encoders" / name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    threads = torch.get_num_threads()
    try:
        table, margin = build_table(source, pca_dims)
        np.save(tmp / "table.npy", table, allow_pickle=False)
        shutil.copyfile(Path(source) / "tokenizer.json", tmp / "tokenizer.json")
        weights = Path(source) / "model.safetensors"
        manifest = {
            "id": name,
            "kind": "static",
            "dim": pca_dims,
            "max_seq_length": MAX_SEQ_LENGTH,
            "source": source,
            "source_sha256": file_sha256(weights) if weights.exists() else None,
            "sha256": {"table": file_sha256(tmp / "table.npy"),
                       "tokenizer": file_sha256(tmp / "tokenizer.json")},
            "distill": {"method": METHOD, "pca_dims": pca_dims, "sif_coefficient": SIF_COEFFICIENT,
                        "rounding_margin": margin, "torch_threads": threads},
        }
        (tmp / "encoder.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_static_encoder(out_dir: str | Path | None = None, source: str | Path | None = None,
                          pca_dims: int = DEFAULT_PCA_DIMS) -> Path:
    """The static encoder folder, distilled first if its ``encoder.json`` is missing."""
    out_dir = Path(out_dir) if out_dir else REPO / "models" / "encoders" / static_name(pca_dims)
    if (out_dir / "encoder.json").exists():
        return out_dir
    return distill_static(source, out_dir, pca_dims=pca_dims)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.distill_static",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="model folder (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, help="output folder (default: models/encoders/<id>)")
    parser.add_argument("--pca-dims", type=int, default=DEFAULT_PCA_DIMS)
    args = parser.parse_args(argv)
    print(distill_static(args.source, args.out, pca_dims=args.pca_dims))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
