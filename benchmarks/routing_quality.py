"""Train and evaluate every router kind on every built-in dataset; print one table.

    python benchmarks/routing_quality.py [--json FILE] [--kinds knn,linear,...] [--data NAME,...]

Splits are the loaders' fixed ones; test rows never reach training, calibration or selection.
RouterBench, RouteLLM-MMLU: train split -> test split. RouterDC: train split -> test (in
distribution) and ood. RouteLLM-GSM8K: 5-fold cross-validation (seed 0), pooled predictions.
Embeddings are cached (``.cache/embeddings``), so reruns skip the encoder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.experiment import (
    cross_val_predict,
    features,
    fit_predict,
    predicted_costs,
    task_prior,
)
from eval.routing import eval_rows, summarize
from router.encoders import RoutingEncoder
from training.data import load
from training.encoders import ENCODER_HELP, load_choice
from training.fit import DEFAULT_KIND, LAYERS_HELP, parse_layers

KINDS = ["knn", "linear", "mlp", "mf", "ensemble", "taskmix"]


def routed_accuracy(scores: np.ndarray, pred_q: np.ndarray, tasks: np.ndarray) -> dict:
    """RouterDC's figure: per task, the score of the model with the highest predicted quality;
    averaged over tasks; against the single model with the best task average."""
    pick = np.argmax(pred_q, axis=1)
    names = sorted(set(tasks.tolist()))
    per_task = {t: float(scores[tasks == t][np.arange((tasks == t).sum()), pick[tasks == t]]
                         .mean()) for t in names}
    single = np.array([[scores[tasks == t, j].mean() for t in names]
                       for j in range(scores.shape[1])])
    best = int(np.argmax(single.mean(axis=1)))
    avg = float(np.mean(list(per_task.values())))
    return {"per_task": per_task, "average": avg, "best_single_index": best,
            "best_single_average": float(single[best].mean()),
            "gain_points": 100 * (avg - float(single[best].mean()))}


def cascade_rows(table) -> dict:
    """RouterBench cascades (eval.cascade), selected on train, scored on test, as extra rows.

    AIQ is over the test points of the cascades on the *train* hull only. ``budget50`` is the
    single cascade with the best train quality within 50% of the best single model's train
    cost, and its test quality and cost share: a figure chosen without looking at test rows.
    """
    from eval.cascade import evaluate_cascades

    out = {}
    for label, by_kind in (("cascade", False), ("cascade-by-kind", True)):
        c = evaluate_cascades(table, by_kind=by_kind)
        tr, te = np.array(c["train_front"]), np.array(c["front"])
        best = c["best_single"]
        within = np.flatnonzero(tr[:, 0] <= 0.5 * c["train_best_single"]["cost"])
        pick = within[np.argmax(tr[within, 1])] if len(within) else None
        out[label] = {
            "n": c["n"],
            "router": {"aiq": c["aiq_hull_only"], "quality": float(te[:, 1].max()),
                       "cost": float(te[np.argmax(te[:, 1]), 0])},
            "zero_router_aiq": c["zero_router_aiq"],
            "cost_share_at_best_quality": c["cost_share_at_best_quality"],
            "budget50": None if pick is None else {
                "test_quality": float(te[pick, 1]), "best_single_quality": best["quality"],
                "test_cost_share": float(te[pick, 0] / best["cost"]),
                "cascade": c["cascades"][pick]},
            "tasks": {t: {"router": {"aiq": v["aiq"]}, "zero_router_aiq": v["zero_router_aiq"]}
                      for t, v in c["tasks"].items()},
        }
    return out


def run_split(name: str, train, test, encoder, kinds, prior: bool = True, surface: bool = True,
              layers: tuple[int, ...] | None = None) -> dict:
    f = features(train, test, encoder, surface=surface, layers=layers)
    pc = predicted_costs(train, f)
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        pq = fit_predict(kind, train, f)
        out[kind] = summarize(test, pq, pc)
        out[kind]["fit_predict_s"] = round(time.perf_counter() - t0, 2)
        if name == "routerdc":
            out[kind]["routed_accuracy"] = routed_accuracy(test.scores, pq, test.tasks)
    if prior:
        pq = task_prior(train, test)
        out["task-prior"] = summarize(test, pq, pc)
        if name == "routerdc":
            out["task-prior"]["routed_accuracy"] = routed_accuracy(test.scores, pq, test.tasks)
    return out


def bench(datasets: list[str], kinds: list[str], encoder: RoutingEncoder,
          surface: bool = True, layers: tuple[int, ...] | None = None) -> dict:
    results: dict = {}
    for name in datasets:
        table = load(name)
        if name == "routellm-gsm8k":
            rows = eval_rows(table, None)
            runs = {}
            for kind in kinds:
                pq, pc = cross_val_predict(kind, rows, encoder, surface=surface, layers=layers)
                runs[kind] = summarize(rows, pq, pc)
            splits = {"cv5": runs}
        else:
            train = table.split("train")
            splits = {s: run_split(name, train, eval_rows(table, s), encoder, kinds,
                                   surface=surface, layers=layers)
                      for s in (["test", "ood"] if name == "routerdc" else ["test"])}
            if name == "routerbench":
                splits["test"].update(cascade_rows(table))
        main = DEFAULT_KIND if DEFAULT_KIND in kinds else kinds[0]
        first = next(iter(splits))
        results[name] = {"dataset": name, "split": first, "router_kind": main,
                         "encoder": encoder.id,
                         **splits[first][main], "routers": splits}
    return results


def _f(x, d=4):
    return "-" if x is None else f"{x:.{d}f}"


def print_table(results: dict) -> None:
    print(f"{'dataset':<16}{'split':<6}{'router':<17}{'n':>6}{'AIQ':>8}{'hull':>8}"
          f"{'q@max':>8}{'cost@best':>10}{'APGR':>8}{'CPT50':>8}{'CPT80':>8}{'acc+pts':>9}")
    for name, res in results.items():
        for split, runs in res["routers"].items():
            for kind, r in runs.items():
                gain = r.get("routed_accuracy", {}).get("gain_points")
                print(f"{name:<16}{split:<6}{kind:<17}{r['n']:>6}{_f(r['router']['aiq']):>8}"
                      f"{_f(r['zero_router_aiq']):>8}{_f(r['router']['quality']):>8}"
                      f"{_f(r.get('cost_share_at_best_quality'), 3):>10}{_f(r.get('apgr')):>8}"
                      f"{_f(r.get('cpt50'), 3):>8}{_f(r.get('cpt80'), 3):>8}{_f(gain, 2):>9}")
    rb = results.get("routerbench", {}).get("routers", {}).get("test", {})
    for kind in ("cascade", "cascade-by-kind"):
        b = rb.get(kind, {}).get("budget50")
        if b:
            print(f"routerbench {kind}, chosen on train within 50% of the best single's cost: "
                  f"test quality {b['test_quality']:.4f} vs {b['best_single_quality']:.4f} at "
                  f"{b['test_cost_share']:.3f} of its cost ({b['cascade']})")
    for kind, r in rb.items():
        if "tasks" in r:
            cells = "  ".join(f"{t}: AIQ {_f(v['router']['aiq'])} (hull "
                              f"{_f(v['zero_router_aiq'])})" for t, v in r["tasks"].items())
            print(f"routerbench per task, {kind}: {cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--data", default="routerbench,routerdc,routellm-mmlu,routellm-gsm8k")
    p.add_argument("--no-surface", action="store_true",
                   help="embeddings only: leave out the surface features (router.features)")
    p.add_argument("--layers", help=LAYERS_HELP + "; none for a static encoder")
    p.add_argument("--encoder", help=ENCODER_HELP)
    args = p.parse_args()
    encoder = load_choice(args.encoder)
    t0 = time.perf_counter()
    layers = None if args.layers is None else parse_layers(args.layers)
    results = bench(args.data.split(","), args.kinds.split(","), encoder,
                    surface=not args.no_surface, layers=layers)
    print_table(results)
    print(f"total {time.perf_counter() - t0:.1f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
