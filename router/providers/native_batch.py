"""Which adapters have a batch API the gateway can forward batch lines to: the one registry
(adapter class -> its ``BatchAPI``), and a deployment's opt-in and discount."""

from __future__ import annotations

from typing import Any

import httpx

from router.providers.anthropic import AnthropicProvider
from router.providers.anthropic_batches import AnthropicBatches
from router.providers.batch_api import BatchAPI
from router.providers.openai_batches import OpenAIBatches
from router.providers.openai_compat import OpenAICompatProvider

BATCH_APIS: dict[type, Any] = {OpenAICompatProvider: OpenAIBatches,
                               AnthropicProvider: AnthropicBatches}


def forwards(provider: Any) -> bool:
    """Whether a deployment's adapter has a batch API and the deployment opted in."""
    return (type(provider) in BATCH_APIS
            and bool(getattr(getattr(provider, "settings", None), "native_batch", False)))


def batch_api_for(provider: Any, http: httpx.AsyncClient) -> BatchAPI | None:
    """The batch API of a deployment that forwards (``forwards``), over ``http``."""
    return BATCH_APIS[type(provider)](provider, http) if forwards(provider) else None


def discount_of(provider: Any) -> float:
    """The share of the list price a deployment's batch API takes off (``batch_discount``)."""
    return float(getattr(getattr(provider, "settings", None), "batch_discount", 0.0))
