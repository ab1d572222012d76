"""Deployments' health as the admin API and the dashboard show it."""

from __future__ import annotations

from typing import Any

from router.dispatch import state_of
from service.gateway import Gateway


def deployment_health(gateway: Gateway) -> list[dict[str, Any]]:
    """Each deployment's state, breaker, error rate, latency averages and load (in-process:
    microseconds, fine on the event loop); what ``/admin/deployments`` and the dashboard's
    stats show."""
    out = []
    for model, d in gateway.dispatchers.items():
        for u in d.upstreams:
            rate, window = u.breaker.error_rate()
            calls_1m, tokens_1m = u.health.minute()
            out.append({"model": model, "deployment": u.label, "weight": u.deployment.weight,
                        "region": u.region or None, "strategy": d.strategy,
                        "state": state_of(u.breaker), "breaker": u.breaker.state,
                        "consecutive_failures": u.breaker.failures,
                        "error_rate": round(rate, 4), "window_calls": window,
                        "latency_ewma_ms": _ms(u.health.latency_ms),
                        "ttft_ewma_ms": _ms(u.health.ttft_ms),
                        "inflight": u.health.inflight, "calls": u.calls,
                        "calls_last_minute": calls_1m, "tokens_last_minute": tokens_1m})
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
