"""Model-level fallback: where a chat request goes when every deployment of its model failed.

In order: the failed model's configured chain (``models[].fallbacks``), then the route's
(``routes[].fallbacks``, routed requests), then the route's next-best eligible candidates by
its policy (at most ``dispatch.fallback_models`` of them). After a content-policy refusal
(with ``dispatch.content_policy_failover``), only models no deployment of the refusing provider
serves. Every model tried must serve the
request as the first had to: its capabilities and context window, the credential's allowed
models, and a deployment in the request's required regions; none is tried twice.

A pinned request whose prompt does not fit its model's context window moves, before any call,
to the first model of that model's chain that holds it (``fitting``): the chain is the
operator's consent to answer with another model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from router.policy import NoEligibleModel
from router.requirements import Requirements, excluded_because
from service.arms import arm_key
from service.regions import models_in

if TYPE_CHECKING:
    from router.config import ModelEntry
    from service.gateway import Gateway
    from service.pipeline import Exchange

log = logging.getLogger("contextforge.gateway")


def configured_chain(ex: Exchange, gw: Gateway) -> list[str]:
    """The configured fallbacks of the request's first model, then of its route, as catalog
    names (aliases resolved, each once)."""
    engine = gw.engine
    assert ex.model is not None
    first = engine.catalog.get(ex.tried[0] if ex.tried else ex.model.name)
    names = list(first.fallbacks)
    if ex.decision is not None and ex.decision.route in engine.routes:
        names += engine.routes[ex.decision.route].entry.fallbacks
    out: list[str] = []
    for name in names:
        if name in engine.catalog and (model := engine.catalog.get(name).name) not in out:
            out.append(model)
    return out


def serves(ex: Exchange, gw: Gateway, model: ModelEntry, needs: Requirements,
           input_tokens: int, avoid: str | None = None) -> str | None:
    """Why ``model`` may not take over ``ex`` (``None``: it may); ``avoid``: a provider none
    of its deployments may be (one that refused the request on its content policy)."""
    why = excluded_because(model, needs, input_tokens, ex.principal.models)
    if why is None and model.name not in gw.dispatchers:
        why = "it has no deployments"
    if why is None and avoid is not None and not _avoids(gw, model.name, avoid):
        why = f"a deployment of it is {avoid}'s"
    if why is None and ex.regions is not None and model.name not in models_in(gw, ex.regions):
        why = f"no deployment in region(s) {', '.join(sorted(ex.regions))}"
    return why


def _avoids(gw: Gateway, model: str, provider: str) -> bool:
    return all(u.deployment.provider != provider for u in gw.dispatchers[model].upstreams)


def fall_back(ex: Exchange, gw: Gateway, reason: str, avoid: str | None = None) -> bool:
    """Move ``ex`` to the next model after its model failed (``reason``, for the log): the
    configured chain first, then a routed request's next-best candidate; ``avoid``: a
    provider the next model may not be served by. ``False`` when no model is left."""
    if ex.needs is None or ex.model is None:
        return False
    failed = (*ex.tried, ex.model.name)
    chain = configured_chain(ex, gw)
    for name in chain:
        model = gw.engine.catalog.get(name)
        if (name not in failed
                and serves(ex, gw, model, ex.needs, ex.input_tokens, avoid) is None):
            _move(ex, gw, failed, model, reason, "configured fallback")
            return True
    return _next_best(ex, gw, failed, chain, reason, avoid)


def _next_best(ex: Exchange, gw: Gateway, failed: tuple[str, ...], chain: list[str],
               reason: str, avoid: str | None) -> bool:
    d, engine = ex.decision, gw.engine
    assert ex.needs is not None
    picked = sum(m not in chain for m in failed[1:])  # next-best models already tried
    limit = engine.config.dispatch.fallback_models
    if d is None or d.route not in engine.routes or picked >= limit:
        return False
    allowed = {c.model for c in d.candidates if c.eligible} - set(failed)
    if ex.regions is not None:  # the route's choice kept to them already; kept here too
        allowed &= models_in(gw, ex.regions)
    if avoid is not None:
        allowed = {m for m in allowed if m in gw.dispatchers and _avoids(gw, m, avoid)}
    if not allowed:
        return False
    try:
        decision = engine.select(d.route, ex.prompt or "", needs=ex.needs,
                                 input_tokens=ex.input_tokens, embedding=ex.embedding,
                                 allowed=allowed, arm_key=arm_key(ex, engine, d.route))
    except NoEligibleModel:
        return False
    _move(ex, gw, failed, engine.catalog.get(decision.model), reason, decision.reason)
    ex.decision = decision
    return True


def _move(ex: Exchange, gw: Gateway, failed: tuple[str, ...], model: ModelEntry, reason: str,
          why: str) -> None:
    assert ex.model is not None and ex.request is not None
    log.warning("%s failed (%s); falling back to %s", ex.model.name, reason, model.name)
    gw.metrics.upstream_fallbacks.labels(ex.model.name, model.name).inc()
    if ex.decision is not None:
        ex.decision = msgspec.structs.replace(ex.decision, model=model.name, reason=why)
    ex.tried, ex.model = failed, model
    ex.request = msgspec.structs.replace(ex.request, model=model.name)


def fitting(ex: Exchange, gw: Gateway, model: ModelEntry, needs: Requirements,
            input_tokens: int) -> ModelEntry | None:
    """The first model of ``model``'s configured chain that can serve a request ``model``
    cannot (its prompt is too long for it, say), or ``None``."""
    for name in model.fallbacks:
        if name in gw.engine.catalog:
            other = gw.engine.catalog.get(name)
            if serves(ex, gw, other, needs, input_tokens) is None:
                return other
    return None
