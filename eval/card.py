"""A router's card: ``card.json`` (machine-readable figures) and ``CARD.md`` (for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from router.artifact import load_router, weights_sha256


def _fmt(x: Any, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("dataset", "split", "n", "best_single", "oracle", "zero_router_aiq",
            "cost_at_best_quality", "cost_share_at_best_quality", "apgr", "cpt50", "cpt80")
    out = {k: r[k] for k in keys if k in r}
    out["router"] = {k: r["router"][k] for k in ("quality", "cost", "aiq")}
    if "tasks" in r:
        out["tasks"] = {t: {"aiq": v["router"]["aiq"], "zero_router_aiq": v["zero_router_aiq"],
                            "best_single": v["best_single"]} for t, v in r["tasks"].items()}
    return out


def write_card(path: Path, results: list[dict[str, Any]],
               traffic: dict[str, Any] | None = None) -> None:
    """Write the card of the router at ``path`` with its evaluation ``results``; ``traffic``:
    what a router trained from logs learned from (``training.from_logs``: the data window,
    rows, scorer, method, and which catalog models have columns or keep stand-ins)."""
    path = Path(path)
    router = load_router(path)
    spec = router.spec
    card = {
        "name": spec.name,
        "kind": spec.kind,
        "models": spec.models,
        "encoder": {"id": spec.encoder.id, "sha256": spec.encoder.sha256},
        "data": {"name": spec.data.name, "sha256": spec.data.sha256, "rows": spec.data.rows,
                 "splits": spec.data.splits},
        "weights_sha256": weights_sha256(path),
        "created": spec.created,
        "evaluations": [_summary(r) for r in results],
    }
    if traffic is not None:
        card["traffic"] = traffic
    (path / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    lines = [
        f"# Router `{spec.name}`", "",
        f"- kind: `{spec.kind}`; created {spec.created}",
        f"- encoder: `{spec.encoder.id}` (sha256 {spec.encoder.sha256[:16]}...)",
        f"- trained on `{spec.data.name}` splits {spec.data.splits}: {spec.data.rows} prompts "
        f"(data sha256 {spec.data.sha256[:16]}...)",
        f"- models: {', '.join(f'`{m}`' for m in spec.models)}",
        f"- boilerplate paragraphs stripped before embedding: {len(spec.boilerplate)}", "",
    ]
    if traffic is not None:
        lines += _traffic_lines(traffic)
    lines += ["## Evaluation (held-out rows only)", ""]
    if not results:
        lines.append("No held-out split in the training data: not evaluated.")
    for r in results:
        b, o, rr = r["best_single"], r["oracle"], r["router"]
        lines += [
            f"### `{r['dataset']}` split `{r['split']}` (n = {r['n']})", "",
            "| | quality | cost (USD/request) | AIQ |", "|---|---|---|---|",
            f"| router (max quality) | {_fmt(rr['quality'])} | {_fmt(rr['cost'], 6)} | "
            f"{_fmt(rr['aiq'])} |",
            f"| best single: {b['model']} | {_fmt(b['quality'])} | {_fmt(b['cost'], 6)} | |",
            f"| single-model hull (zero router) | | | {_fmt(r['zero_router_aiq'])} |",
            f"| oracle | {_fmt(o['quality'])} | {_fmt(o['cost'], 6)} | |", "",
            f"Least cost reaching the best single model's quality: "
            f"{_fmt(r['cost_at_best_quality'], 6)} USD "
            f"({_fmt(r.get('cost_share_at_best_quality'), 3)} of its cost).", "",
        ]
        if "apgr" in r:
            lines += [f"APGR {_fmt(r['apgr'])}, CPT(50%) {_fmt(r['cpt50'])}, "
                      f"CPT(80%) {_fmt(r['cpt80'])}", ""]
    (path / "CARD.md").write_text("\n".join(lines) + "\n")


def _traffic_lines(t: dict[str, Any]) -> list[str]:
    w = t["window"]
    lines = [
        "## Learned from traffic", "",
        f"- log `{w['dsn']}`, scorer `{w['scorer']}`: {w['rows_read']} scored rows "
        f"from {w['first']} to {w['last']}"
        + (f" ({w['skipped_no_prompt']} without a logged prompt, skipped)"
           if w["skipped_no_prompt"] else ""),
        f"- method: {t['method']}",
        "- observations per model: "
        + ", ".join(f"`{m}` {n}" for m, n in w["observations"].items()),
    ]
    if t.get("base"):
        lines.append(f"- stacked on the training rows of `{t['base']}`")
    for model, tasks in w.get("prior_kept", {}).items():
        lines.append(f"- `{model}` kept its stand-in's outcomes on tasks the traffic did not "
                     "show it: " + ", ".join(f"`{k}` (as `{s}`)" for k, s in tasks.items()))
    if t.get("learned") is not None:
        lines.append("- catalog models with their own column: "
                     + (", ".join(f"`{m}`" for m in t["learned"]) or "none"))
        lines.append("- catalog models that keep a stand-in: "
                     + (", ".join(f"`{m}` (as `{s}`)" for m, s in t["stand_ins"].items())
                        or "none"))
    return [*lines, ""]
