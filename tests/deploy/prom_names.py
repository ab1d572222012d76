"""What a PromQL expression reads (metric names, label names) and what the gateway exports, so
an alert or a dashboard panel naming a metric or label that ``service.metrics`` does not have
(a rename, a typo) fails a test instead of staying silently empty."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import promql_parser
from prometheus_client.metrics import MetricWrapperBase

# Labels Prometheus adds to every scraped series, and its own per-target series.
TARGET_LABELS = frozenset({"job", "instance"})
BUILTIN = {"up": frozenset()}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                               "_created"), "gauge": ("",)}
# Grafana's variables, replaced by something PromQL parses before an expression is read.
_GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_GRAFANA_VAR = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")


def exported() -> dict[str, frozenset[str]]:
    """Every series name the gateway's ``/metrics`` can show, with its label names."""
    from service.metrics import Metrics

    out: dict[str, frozenset[str]] = dict(BUILTIN)
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = frozenset(metric._labelnames)
        for suffix in _SUFFIXES[metric._type]:
            out[metric._name + suffix] = labels | (
                {"le"} if suffix == "_bucket" else frozenset())
    return out


def from_grafana(expr: str) -> str:
    """A panel's query with Grafana's variables replaced, as PromQL."""
    for var, value in _GRAFANA_RANGES.items():
        expr = expr.replace(var, value)
    return _GRAFANA_VAR.sub(".*", expr)


@dataclass
class Reads:
    """The metrics an expression selects, with the labels it matches on or groups by."""

    selectors: list[tuple[str, set[str]]] = field(default_factory=list)
    grouped: list[tuple[set[str], set[str]]] = field(default_factory=list)  # (by, metrics)


def reads(expr: str) -> Reads:
    """Parse ``expr`` (``ValueError`` when it is not PromQL) and list what it reads."""
    tree = promql_parser.parse(expr)
    found = Reads()

    def selectors_under(node: object) -> set[str]:
        names: set[str] = set()
        promql_parser.walk(node, lambda n: names.add(n.name)
                           if isinstance(n, promql_parser.VectorSelector) else None)
        return names

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers} - {"__name__"}
            found.selectors.append((node.name, labels))
        elif (isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None
              and node.modifier.type == promql_parser.AggModifierType.By):
            found.grouped.append((set(node.modifier.labels), selectors_under(node.expr)))

    promql_parser.walk(tree, visit)
    return found


def problems(expr: str, known: dict[str, frozenset[str]]) -> list[str]:
    """What in ``expr`` the gateway does not export: unknown metrics, unknown labels."""
    try:
        found = reads(expr)
    except ValueError as exc:
        return [f"not PromQL: {exc}"]
    out = []
    for name, labels in found.selectors:
        if name not in known:
            out.append(f"unknown metric {name!r}")
        elif bad := labels - known[name] - TARGET_LABELS:
            out.append(f"{name} has no label {sorted(bad)}")
    for by, names in found.grouped:
        have = set(TARGET_LABELS).union(*(known.get(n, frozenset()) for n in names))
        if bad := by - have:
            out.append(f"by {sorted(bad)}: not a label of {sorted(names)}")
    return out
