"""The forward stage: a batch line's stand-in for dispatch, which holds the line for its
model's provider batch API instead of calling the model now.

Only batch lines pass here (``service.batch_runner`` builds its own stage list, with this in
dispatch's place); live requests never do. By the time a line reaches it, the guard has
admitted it (rate limits, the credential's models), the cache has not answered it, the route
stage has chosen its model, and the reserve stage has checked its budgets. When that model
has a deployment with ``native_batch`` (``router.providers.native_batch``: the first one,
in the config's order, that the line's regions allow; its breaker is not consulted), the
exchange is marked ``deferred`` and answered with nothing: the account and cache stages skip
it, the reserve stage releases its hold, and the runner records the line as forwarded
(``service.batch_native`` takes it from there). Otherwise the line is dispatched live, as
any request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.providers.native_batch import forwards
from router.wire.openai import ChatRequest
from service.pipeline import Exchange, Stage

if TYPE_CHECKING:
    from router.dispatch import Upstream
    from service.gateway import Gateway


def native_upstream(gw: Gateway, model: str, regions: frozenset[str] | None = None
                    ) -> Upstream | None:
    """The deployment of ``model`` whose provider batch API takes its batch lines, if any."""
    dispatcher = gw.dispatchers.get(model)
    for up in dispatcher.upstreams if dispatcher is not None else ():
        if forwards(up.provider) and (regions is None or up.region in regions):
            return up
    return None


def has_native(gw: Gateway) -> bool:
    """Whether any deployment forwards batch lines (else the stage is never needed)."""
    return any(native_upstream(gw, name) is not None for name in gw.dispatchers)


class Forward:
    """Dispatch's place in a batch line's stages (see the module docstring)."""

    name = "forward"

    def __init__(self, live: Stage):
        self.live = live
        self.kinds = live.kinds

    async def enter(self, ex: Exchange, gw: Gateway) -> None:
        if ex.model is not None and isinstance(ex.request, ChatRequest):
            up = native_upstream(gw, ex.model.name, ex.regions)
            if up is not None:
                ex.upstream, ex.deferred, ex.answered = up, True, True
                return
        await self.live.enter(ex, gw)

    def leave(self, ex: Exchange, gw: Gateway) -> None:
        self.live.leave(ex, gw)
