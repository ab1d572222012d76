"""The reserve stage: once routing has chosen the model, the limits that depend on it.

Chat and embeddings alike (an embeddings request's input is its whole charge). Between the
route stage (the model and the prompt's token count are known) and dispatch (the
provider is called): the model's own request limits, tokens per minute on every scope — the
prompt's tokens plus the most the model may write (``max_tokens``, else what its context
window leaves), corrected to the real count when the answer is in — and the budgets: the most
the request can cost at the chosen model's prices (twice that when it may be hedged: two calls
could both answer) is reserved against each budget it falls under, and replaced by the real
cost when it ends (released if it failed at no cost). See ``router.limits`` for why this cannot
overspend.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from router.catalog import Catalog
from router.limits.plan import budgets_for, request_charges, token_charges
from router.limits.windows import Admission, Charge
from router.wire.openai import ChatRequest, EmbeddingUsage, Usage
from service.hedging import hedge_config
from service.pipeline import Exchange
from service.stages.headers import rate_headers

if TYPE_CHECKING:
    from service.gateway import Gateway


class Reserve:
    name = "reserve"
    kinds = frozenset({"chat", "embeddings"})

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        limits, model = gw.limits, ex.model
        if limits is None or model is None:
            return
        request = ex.request
        if isinstance(request, ChatRequest):
            most_out = request.output_limit or max(model.context_window - ex.input_tokens, 1)
        else:  # embeddings: the input is the whole charge
            most_out = 0
        # The provider counts the prompt with its own tokenizer, plus per-message overhead:
        # charge an upper bound, so the corrected real count never exceeds what was admitted.
        prompt = math.ceil(ex.input_tokens * (1 + limits.config.input_token_margin)) + 16
        requests, caps = request_charges(limits.config.rules, ex.principal, model.name)
        tokens = token_charges(limits.config.rules, ex.principal, model.name,
                               prompt + most_out)
        if caps:  # given back with the guard's, when the guard stage leaves
            await limits.acquire(ex.id, caps, gw.config.server.upstream_timeout_s * 3 + 60)
            ex.slots = [*ex.slots, *caps]
        if requests or tokens:
            admission = await limits.admit(ex.id, [*requests, *tokens])
            ex.headers.update(rate_headers(requests, admission, "requests"))
            ex.headers.update(rate_headers(tokens, _tail(admission, len(requests)), "tokens"))
            ex.token_charges = tokens
        budgets = budgets_for(limits.config.budgets, ex.principal)
        most = Catalog.cost_usd(model, prompt, most_out)
        # a hedge may pay for a second call (chat only: embeddings are never hedged)
        if isinstance(request, ChatRequest) and hedge_config(ex, gw).enabled:
            most *= 2
        if budgets and most > 0:  # a free model (the gateway's own encoder) spends nothing
            ex.hold = await limits.reserve(ex.id, budgets, most)

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        limits = gw.limits
        if limits is None:
            return
        # The account stage has left already (stages leave in reverse): the cost is known.
        if ex.hold is not None:
            gw.spawn(limits.settle(ex.hold, ex.cost_usd, failed=ex.status != 200))
            ex.hold = None
        if ex.token_charges:
            u = ex.usage
            used = (u.prompt_tokens + u.completion_tokens if isinstance(u, Usage)
                    else u.prompt_tokens if isinstance(u, EmbeddingUsage) else ex.input_tokens)
            for c in ex.token_charges:
                gw.spawn(limits.adjust(ex.id, Charge(c.bucket, c.window_s, c.limit, used)))
            ex.token_charges = []


def _tail(admission: Admission, start: int) -> Admission:
    return Admission(admission.allowed, admission.remaining[start:], admission.reset_s[start:],
                     admission.refused_by, admission.retry_after_s)
