"""Plots of routing results (PNG via matplotlib's Agg canvas; no pyplot, no global backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.metrics import upper_hull


def plot_routing(result: dict, path: str | Path) -> Path:
    """Write a cost (x) vs quality (y) PNG of an ``eval routing --json`` result.

    Shows single models as labelled points, the zero-router hull (dashed, flat to the most
    expensive model), the router curve, any ``extra_curves`` ({name: [[c, q], ...]}) and the
    oracle. The x axis is logarithmic when the plotted costs span more than 20x.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    costs = _draw_singles(ax, result.get("single", {}))
    curves = {"router": result.get("router", {}).get("curve", [])}
    curves.update(result.get("extra_curves") or {})
    for name, curve in curves.items():
        pts = np.asarray(curve, dtype=float).reshape(-1, 2)
        if len(pts):
            pts = pts[np.argsort(pts[:, 0], kind="stable")]
            ax.plot(pts[:, 0], pts[:, 1], marker=".", linewidth=1.5, label=name)
            costs.extend(pts[:, 0])
    if "oracle" in result:
        o = result["oracle"]
        ax.scatter(
            [o["cost"]],
            [o["quality"]],
            marker="*",
            s=160,
            color="gold",
            edgecolors="black",
            zorder=5,
            label="oracle",
        )
        costs.append(o["cost"])
    positive = [c for c in costs if c > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per prompt (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(_title(result))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, format="png")
    return out


def plot_ab(result: dict, path: str | Path) -> Path:
    """Write the PNG of an ``eval ab`` result on labelled data: both routers' cost-quality
    curves over the single models, the zero-router hull and the oracle (``plot_routing``)."""
    a, b = result["a"], result["b"]
    title = (f"{result.get('dataset', 'A/B')} | A {a['router']} AIQ {a['aiq']:.3f} | "
             f"B {b['router']} AIQ {b['aiq']:.3f}")
    return plot_routing({"dataset": title, "single": result.get("single", {}),
                         "oracle": result["oracle"],
                         "extra_curves": {f"A: {a['router']}": a["curve"],
                                          f"B: {b['router']}": b["curve"]}}, path)


def _draw_singles(ax, single: dict) -> list[float]:
    """Single models as labelled points and their hull as a dashed line; returns their costs."""
    if not single:
        return []
    names = list(single)
    pts = np.array([[single[m]["cost"], single[m]["quality"]] for m in names], dtype=float)
    ax.scatter(pts[:, 0], pts[:, 1], color="grey", zorder=4, label="single models")
    for name, (c, q) in zip(names, pts, strict=True):
        ax.annotate(name, (c, q), textcoords="offset points", xytext=(4, 4), fontsize=7)
    hull = upper_hull(pts)
    c_max = float(np.nanmax(pts[:, 0]))
    if len(hull) and hull[-1, 0] < c_max:
        hull = np.vstack([hull, [c_max, hull[-1, 1]]])
    xs = np.concatenate([hull[:, 0], np.linspace(hull[0, 0], hull[-1, 0], 200)])
    if hull[0, 0] > 0:  # dense samples so the straight segments also draw right on a log axis
        xs = np.concatenate([xs, np.geomspace(hull[0, 0], hull[-1, 0], 200)])
    xs = np.unique(xs)
    ys = np.interp(xs, hull[:, 0], hull[:, 1])
    ax.plot(xs, ys, linestyle="--", color="grey", label="zero router (hull)")
    return list(pts[:, 0])


def _title(result: dict) -> str:
    """Dataset name with router and zero-router AIQ when present."""
    parts = [str(result.get("dataset", "routing"))]
    aiq = result.get("router", {}).get("aiq")
    if aiq is not None:
        parts.append(f"router AIQ {aiq:.3f}")
    if result.get("zero_router_aiq") is not None:
        parts.append(f"zero-router AIQ {result['zero_router_aiq']:.3f}")
    return " | ".join(parts)
