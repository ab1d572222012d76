"""The model catalog: names and aliases, prices, context windows, capabilities, stand-ins."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from router.config import ModelEntry


class Catalog:
    """Look models up by name or alias and price a request for each."""

    def __init__(self, models: Iterable[ModelEntry]):
        self.models = list(models)
        self._by_key = {key: m for m in self.models for key in (m.name, *m.aliases)}

    def __contains__(self, name: str) -> bool:
        return name in self._by_key

    def get(self, name: str) -> ModelEntry:
        """The entry for a name or alias; ``KeyError`` naming the known models otherwise."""
        try:
            return self._by_key[name]
        except KeyError:
            known = ", ".join(sorted(m.name for m in self.models))
            raise KeyError(f"unknown model {name!r}; known: {known}") from None

    @staticmethod
    def cost_usd(model: ModelEntry, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * model.input_price + output_tokens * model.output_price) / 1e6

    @staticmethod
    def expected_output_tokens(model: ModelEntry, max_output_tokens: int | None) -> int:
        """The model's typical answer length, capped by the request's ``max_tokens``."""
        n = model.expected_output_tokens
        return min(n, max_output_tokens) if max_output_tokens else n


def prediction_column(router_models: Sequence[str], model: str,
                      stands_in_for: str | None) -> int | None:
    """The router column that predicts ``model``: its own when the router learned it (from data
    or traffic that names it), else its stand-in's; None when the router knows neither.

    One rule for the gateway (``RoutingEngine``) and offline replays (``eval ab``), so a router
    is judged on the predictions it would serve."""
    if model in router_models:
        return list(router_models).index(model)
    if stands_in_for is not None and stands_in_for in router_models:
        return list(router_models).index(stands_in_for)
    return None
