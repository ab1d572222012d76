"""Provider adapters: one module per upstream wire format, behind one ``Provider`` Protocol.

``PROVIDERS`` below is the only list of them: a deployment's ``provider`` (or a named
provider's ``type``) picks a row, and the row names the adapter's settings struct and how to
build the adapter from it. A catalog model with no deployments is served by the config's
``default_deployment`` (the simulated provider unless configured otherwise).

Adding a provider is one module and one row. The module holds the adapter's settings (a
``Settings`` subclass with the fields it reads beyond the common ones), its translation, and a
factory; it uses the kit (``router.providers._kit``, its names re-exported here) for ids,
finish reasons, usage estimates and its stream translator::

    # router/providers/acme.py
    class AcmeSettings(Settings):
        region: str = ""  # becomes a flat field users can write on a deployment

    class AcmeProvider(SharedClientProvider):
        def __init__(self, settings: AcmeSettings, ctx: ProviderContext): ...
        async def complete(self, request: ChatRequest) -> ChatCompletion: ...
        async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
            ...  # relay(events, AcmeStreamTranslator(...)), the translator a ChunkStream

    # here, in PROVIDERS
    "acme": Adapter(AcmeSettings, AcmeProvider),

The config's ``Deployment`` and ``ProviderEntry`` gain ``region`` from that row (see
``_settings``); ``check_providers`` rejects a field an adapter does not read, naming its path.
``tests/unit/test_router/test_providers/test_registry.py`` registers such an adapter and
routes a call to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from router.errors import ConfigError
from router.providers._base import (
    EmbeddingProvider,
    Provider,
    ProviderContext,
    ProviderError,
    SharedClientProvider,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.providers._client import build_http_client, call_headers, call_timeouts
from router.providers._kit import (
    MALFORMED,
    ChunkStream,
    FinishReasons,
    StreamTranslator,
    ToolCalls,
    call_id,
    completion_id,
    config_error,
    estimate_usage,
    relay,
    resolve_api_key,
    usage_of,
)
from router.providers._settings import (
    Adapter,
    Connection,
    Settings,
    Timeouts,
    entry_types,
    resolve_deployment,
    settings_of,
    unknown_settings,
)
from router.providers.anthropic import AnthropicProvider, AnthropicSettings
from router.providers.bedrock import BedrockProvider, BedrockSettings
from router.providers.cohere import CohereProvider, CohereSettings
from router.providers.gemini import GeminiProvider, GeminiSettings, VertexProvider, VertexSettings
from router.providers.openai_compat import AzureSettings, OpenAICompatProvider, OpenAISettings
from router.providers.replicate import ReplicateProvider, ReplicateSettings
from router.providers.simulated import (
    SimulatedDeploymentSettings,
    SimulatedProvider,
    SimulatedSettings,
)
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

if TYPE_CHECKING:
    from router.config import Config, ModelEntry

_OPENAI = Adapter(OpenAISettings, OpenAICompatProvider.from_settings)

# The registry: provider name (a deployment's ``provider``) -> settings struct and factory.
PROVIDERS: dict[str, Adapter[Any]] = {
    "anthropic": Adapter(AnthropicSettings, AnthropicProvider.from_settings),
    "azure": Adapter(AzureSettings, OpenAICompatProvider.from_settings),
    "bedrock": Adapter(BedrockSettings, BedrockProvider.from_settings),
    "cohere": Adapter(CohereSettings, CohereProvider),
    "deepseek": _OPENAI,
    "gemini": Adapter(GeminiSettings, GeminiProvider.from_settings),
    "groq": _OPENAI,
    "mistral": _OPENAI,
    "ollama": _OPENAI,
    "openai": _OPENAI,
    "openai-compatible": _OPENAI,
    "perplexity": _OPENAI,
    "replicate": Adapter(ReplicateSettings, ReplicateProvider),
    "simulated": Adapter(SimulatedDeploymentSettings, SimulatedProvider.from_settings),
    "tgi": _OPENAI,
    "together": _OPENAI,
    "vertex": Adapter(VertexSettings, VertexProvider.from_settings),
    "vllm": _OPENAI,
}

# What the config file decodes: the common fields and every adapter's own, flat.
if TYPE_CHECKING:
    from router.providers._settings import Deployment, ProviderEntry
else:
    Deployment, ProviderEntry = entry_types(PROVIDERS)


def deployments_of(config: Config, model: ModelEntry) -> list[Deployment]:
    """The model's deployments (named providers resolved), or the config's default one."""
    return config.deployments(model)


def _setting_errors(config: Config) -> list[str]:
    """Every field a deployment or named provider sets that its adapter does not read."""
    named = {p.name: p for p in config.providers}
    errors = [e for i, p in enumerate(config.providers) if p.type in PROVIDERS
              for e in unknown_settings(p, p.type, PROVIDERS[p.type], f"providers[{i}]")]
    entries = [(f"models[{i}].deployments[{j}]", d) for i, m in enumerate(config.models)
               for j, d in enumerate(m.deployments)]
    for where, d in [*entries, ("default_deployment", config.default_deployment)]:
        adapter = named[d.provider].type if d.provider in named else d.provider
        if adapter in PROVIDERS:
            errors += unknown_settings(d, adapter, PROVIDERS[adapter], where)
    return errors


def check_providers(config: Config) -> None:
    """Raise ``ConfigError`` naming every deployment or named provider with no adapter, and
    every field one sets that its adapter does not read (each with its path)."""
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
    errors += _setting_errors(config)
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
    """The adapter for one deployment, built from its own settings (``check_providers`` has
    vetted the name and fields; a field the adapter does not read is a ``ConfigError``)."""
    adapter = PROVIDERS[deployment.provider]
    try:
        settings = settings_of(deployment, adapter)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return adapter.build(settings, ctx)


__all__ = [
    "EMBEDDINGS_DECODER",
    "ENCODER",
    "MALFORMED",
    "PROVIDERS",
    "REQUEST_DECODER",
    "Adapter",
    "AnthropicProvider",
    "AnthropicSettings",
    "AzureSettings",
    "BedrockProvider",
    "BedrockSettings",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "ChunkStream",
    "CohereProvider",
    "CohereSettings",
    "Connection",
    "Deployment",
    "Embedding",
    "EmbeddingProvider",
    "EmbeddingUsage",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "FinishReasons",
    "GeminiProvider",
    "GeminiSettings",
    "Message",
    "OpenAICompatProvider",
    "OpenAISettings",
    "Provider",
    "ProviderContext",
    "ProviderEntry",
    "ProviderError",
    "ReplicateProvider",
    "ReplicateSettings",
    "Settings",
    "SharedClientProvider",
    "SimulatedDeploymentSettings",
    "SimulatedProvider",
    "SimulatedSettings",
    "StreamTranslator",
    "Timeouts",
    "ToolCalls",
    "UpstreamError",
    "UpstreamRateLimited",
    "UpstreamRefused",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "Usage",
    "VertexProvider",
    "VertexSettings",
    "build_http_client",
    "build_provider",
    "call_headers",
    "call_id",
    "call_timeouts",
    "check_deployments",
    "check_providers",
    "completion_id",
    "config_error",
    "deployments_of",
    "estimate_usage",
    "has_images",
    "message_text",
    "relay",
    "resolve_api_key",
    "resolve_deployment",
    "usage_of",
]
