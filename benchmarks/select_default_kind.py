"""Which router kind ships as the default: chosen by cross-validation on training rows only.

    python benchmarks/select_default_kind.py [--data routerbench] [--kinds knn,linear,...]
                                             [--no-surface] [--layers 2,3,4|none]

Five fixed folds (seed 0) over the ``train`` split; each kind is fitted on four folds and
predicts the fifth; the table is the AIQ (and cost at the best single model's quality) of the
out-of-fold predictions. Test rows are never read: the choice cannot be tuned on them.
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

from eval.experiment import cross_val_predict  # noqa: E402
from eval.routing import summarize  # noqa: E402
from training.data import load  # noqa: E402
from training.encoders import ENCODER_HELP, load_choice  # noqa: E402
from training.fit import (  # noqa: E402
    LAYERS_HELP,
    parse_layers,
    training_rows,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="routerbench")
    ap.add_argument("--kinds", default="knn,linear,mlp,mf,ensemble,taskmix")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-surface", action="store_true", help="embeddings only")
    ap.add_argument("--layers", help=LAYERS_HELP + "; none for a static encoder")
    ap.add_argument("--encoder", help=ENCODER_HELP)
    args = ap.parse_args()
    encoder = load_choice(args.encoder)
    table = training_rows(load(args.data))
    # Rows with a missing score cannot be scored out of fold.
    table = table.select(~np.isnan(table.scores).any(axis=1))
    out = {}
    print(f"{args.data}: {len(table)} train rows, 5-fold CV, encoder {encoder.id}")
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        q, c = cross_val_predict(kind, table, encoder, surface=not args.no_surface,
                                 layers=None if args.layers is None else parse_layers(args.layers))
        s = summarize(table, q, c, per_task=False)
        out[kind] = {"aiq": s["router"]["aiq"], "zero_router_aiq": s["zero_router_aiq"],
                     "apgr": s.get("apgr"),
                     "cost_share_at_best_quality": s.get("cost_share_at_best_quality"),
                     "seconds": round(time.perf_counter() - t0, 1)}
        apgr = "" if s.get("apgr") is None else f"  APGR {s['apgr']:.4f}"
        print(f"{kind:10} AIQ {out[kind]['aiq']:.4f}{apgr}  cost share at best single "
              f"{out[kind]['cost_share_at_best_quality']}  ({out[kind]['seconds']} s)",
              flush=True)
    best = max(out, key=lambda k: out[k]["aiq"])
    print(f"best by CV AIQ: {best}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": args.data, "encoder": encoder.id, "kinds": out,
                                         "best": best}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
