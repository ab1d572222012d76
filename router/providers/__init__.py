"""Provider adapters: one module per upstream wire format, behind one ``Provider`` Protocol.

Adding a provider means one new module and one row in ``PROVIDERS`` below; nothing else lists
them. A catalog model with no deployments is served by the config's ``default_deployment``
(the simulated provider unless configured otherwise).
"""

from __future__ import annotations

from collections.abc import Callable

from router.config import Config, ConfigError, Deployment, ModelEntry
from router.providers._base import (
    EmbeddingProvider,
    Provider,
    ProviderContext,
    ProviderError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.providers._client import build_http_client
from router.providers.anthropic import AnthropicProvider
from router.providers.bedrock import BedrockProvider
from router.providers.cohere import CohereProvider
from router.providers.gemini import GeminiProvider, VertexProvider
from router.providers.openai_compat import OpenAICompatProvider
from router.providers.replicate import ReplicateProvider
from router.providers.simulated import SimulatedProvider
from router.wire.openai import (
    EMBEDDINGS_DECODER,
    ENCODER,
    REQUEST_DECODER,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    Message,
    Usage,
    has_images,
    message_text,
)

ProviderFactory = Callable[[Deployment, ProviderContext], Provider]

# The registry: provider name (a deployment's ``provider``) -> factory.
PROVIDERS: dict[str, ProviderFactory] = {
    "anthropic": AnthropicProvider.from_deployment,
    "azure": OpenAICompatProvider.from_deployment,
    "bedrock": BedrockProvider.from_deployment,
    "cohere": CohereProvider.from_deployment,
    "deepseek": OpenAICompatProvider.from_deployment,
    "gemini": GeminiProvider.from_deployment,
    "groq": OpenAICompatProvider.from_deployment,
    "mistral": OpenAICompatProvider.from_deployment,
    "ollama": OpenAICompatProvider.from_deployment,
    "openai": OpenAICompatProvider.from_deployment,
    "openai-compatible": OpenAICompatProvider.from_deployment,
    "perplexity": OpenAICompatProvider.from_deployment,
    "replicate": ReplicateProvider.from_deployment,
    "simulated": SimulatedProvider.from_deployment,
    "tgi": OpenAICompatProvider.from_deployment,
    "together": OpenAICompatProvider.from_deployment,
    "vertex": VertexProvider.from_deployment,
    "vllm": OpenAICompatProvider.from_deployment,
}


def deployments_of(config: Config, model: ModelEntry) -> list[Deployment]:
    """The model's deployments (named providers resolved), or the config's default one."""
    return config.deployments(model)


def check_providers(config: Config) -> None:
    """Raise ``ConfigError`` naming every deployment or named provider with no adapter."""
    named = {p.name for p in config.providers}
    known = f"adapters: {', '.join(sorted(PROVIDERS))}; named providers: " \
            f"{', '.join(sorted(named)) or '(none)'}"
    errors = []
    for i, p in enumerate(config.providers):
        if p.type not in PROVIDERS:
            errors.append(f"providers[{i}].type: unknown adapter {p.type!r}; "
                          f"adapters: {', '.join(sorted(PROVIDERS))}")
    for i, m in enumerate(config.models):
        for j, d in enumerate(m.deployments):
            if d.provider not in PROVIDERS and d.provider not in named:
                errors.append(f"models[{i}].deployments[{j}].provider: unknown provider "
                              f"{d.provider!r}; {known}")
    d = config.default_deployment
    if d.provider not in PROVIDERS and d.provider not in named:
        errors.append(f"default_deployment.provider: unknown provider {d.provider!r}; {known}")
    if errors:
        raise ConfigError("\n".join(errors))


def check_deployments(config: Config) -> None:
    """Build every deployment's adapter once, without calling it: a missing key, endpoint or
    region is a ``ConfigError`` naming the deployment at start-up, not at its first request."""
    ctx = ProviderContext(count_tokens=len)
    errors = []
    for i, m in enumerate(config.models):
        for j, d in enumerate(config.deployments(m)):
            where = f"models[{i}].deployments[{j}]" if m.deployments else "default_deployment"
            try:
                build_provider(d, ctx)
            except ConfigError as exc:
                errors.append(f"{where} ({m.name}): {exc}")
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))


def build_provider(deployment: Deployment, ctx: ProviderContext) -> Provider:
    """The adapter for one deployment (``check_providers`` has vetted the name)."""
    return PROVIDERS[deployment.provider](deployment, ctx)


__all__ = [
    "EMBEDDINGS_DECODER",
    "ENCODER",
    "PROVIDERS",
    "REQUEST_DECODER",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "Embedding",
    "EmbeddingProvider",
    "EmbeddingUsage",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "Message",
    "Provider",
    "ProviderContext",
    "ProviderError",
    "SimulatedProvider",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
    "build_http_client",
    "build_provider",
    "check_deployments",
    "check_providers",
    "deployments_of",
    "has_images",
    "message_text",
]
