"""The providers package's public surface, its registry ("one module + one row"), and the
per-adapter settings the config's deployments are checked against."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import router.providers as providers
from router.config import Config, ConfigError, Deployment, ProviderEntry, SimulatedSettings
from router.providers import (
    PROVIDERS,
    Adapter,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    ChunkStream,
    ProviderContext,
    Settings,
    SharedClientProvider,
    build_provider,
    check_deployments,
    check_providers,
    resolve_deployment,
    usage_of,
)
from tests.unit.test_router.test_providers.harness import chat_request, collect, run, words

PUBLIC = {
    "EMBEDDINGS_DECODER", "ENCODER", "MALFORMED", "PROVIDERS", "REQUEST_DECODER", "Adapter",
    "AnthropicProvider", "AnthropicSettings", "AzureSettings", "BedrockProvider",
    "BedrockSettings", "ChatCompletion", "ChatCompletionChunk", "ChatRequest", "ChunkStream",
    "CohereProvider", "CohereSettings", "Connection", "Deployment", "Embedding",
    "EmbeddingProvider", "EmbeddingUsage", "EmbeddingsRequest", "EmbeddingsResponse",
    "FinishReasons", "GeminiProvider", "GeminiSettings", "Message", "OpenAICompatProvider",
    "OpenAISettings", "Provider", "ProviderContext", "ProviderEntry", "ProviderError",
    "ReplicateProvider", "ReplicateSettings", "Settings", "SharedClientProvider",
    "SimulatedDeploymentSettings", "SimulatedProvider", "SimulatedSettings", "StreamTranslator",
    "Timeouts", "ToolCalls", "UpstreamError", "UpstreamRateLimited", "UpstreamRefused",
    "UpstreamRejected", "UpstreamTimeout",
    "UpstreamUnavailable", "Usage", "VertexProvider", "VertexSettings", "build_http_client",
    "build_provider",
    "call_id", "check_deployments", "check_providers", "completion_id", "config_error",
    "call_headers", "call_timeouts",
    "deployments_of", "estimate_usage", "has_images", "message_text", "relay",
    "resolve_api_key", "resolve_deployment", "usage_of",
}


def test_public_surface_is_pinned():
    assert set(providers.__all__) == PUBLIC
    assert all(hasattr(providers, name) for name in providers.__all__)


@pytest.mark.parametrize("first", ["router.providers", "router.config",
                                   "router.providers.bedrock"])
def test_imports_in_any_order(first):
    # router.config takes its deployment schema from router.providers, so the providers
    # package must never need router.config while it loads.
    code = f"import {first}, router.config, router.providers; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- one module + one row ------------------------------------------------------------------


class EchoSettings(Settings):
    """A new adapter's settings: the common fields only (its own would need the config's
    entry types rebuilt, which happens when the row is in ``PROVIDERS`` at import)."""


class EchoProvider(SharedClientProvider):
    """The whole of a tiny adapter: answers with the last message, streamed through the kit."""

    def __init__(self, settings: EchoSettings, ctx: ProviderContext):
        self.settings, self._count = settings, ctx.count_tokens

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        chunks = [c async for c in self.stream(request)]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return msgspec.convert({
            "id": chunks[0].id, "created": chunks[0].created, "model": request.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": msgspec.to_builtins(chunks[-1].usage)}, ChatCompletion)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        out = ChunkStream("echo", request, self._count)
        yield out.content(f"{self.settings.upstream_model(request.model)}: ")
        yield out.content(str(request.messages[-1].content))
        yield out.finish("stop")
        out.usage = usage_of(1, 2)
        yield out.usage_chunk()


@pytest.fixture()
def echo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROVIDERS, "echo", Adapter(EchoSettings, EchoProvider))


def test_a_registered_adapter_serves_a_call(echo):
    deployment = Deployment(provider="echo", model="echo-1")
    request = chat_request("catalog", [{"role": "user", "content": "hello"}])
    done = run(deployment, lambda p: p.complete(request))
    assert done.choices[0].message.content == "echo-1: hello"
    assert done.usage.total_tokens == 3
    chunks = run(deployment, lambda p: collect(p, request))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2


def test_a_registered_adapter_is_checked_like_the_others(echo):
    config = msgspec.convert({"models": [{
        "name": "m", "input_price": 1, "output_price": 1, "context_window": 10,
        "deployments": [{"provider": "echo", "region": "eu-west-1"}]}]}, Config)
    with pytest.raises(ConfigError) as exc:
        check_providers(config)
    assert str(exc.value) == \
        "models[0].deployments[0].region: adapter 'echo' has no setting 'region'"


# --- settings ------------------------------------------------------------------------------


def config_of(**sections: Any) -> Config:
    return msgspec.convert(sections, Config)


def model(*deployments: dict[str, Any]) -> dict[str, Any]:
    return {"name": "m", "input_price": 1, "output_price": 1, "context_window": 10,
            "deployments": list(deployments)}


def test_the_config_decodes_flat_adapter_fields():
    config = config_of(models=[model(
        {"provider": "bedrock", "region": "us-east-1", "model": "x"},
        {"provider": "vertex", "project": "p", "region": "europe-west4", "api_key": "t"},
        {"provider": "azure", "endpoint": "https://a", "api_version": "2024-12-01-preview"},
        {"provider": "simulated", "simulated": {"ttft_ms": 5}})])
    bedrock, vertex, azure, simulated = config.models[0].deployments
    assert (bedrock.region, vertex.project, azure.api_version) == \
        ("us-east-1", "p", "2024-12-01-preview")
    assert simulated.simulated == SimulatedSettings(ttft_ms=5)
    check_providers(config)


def test_fields_an_adapter_does_not_read_are_errors_with_their_paths():
    config = config_of(
        providers=[{"name": "main", "type": "openai", "project": "p"}],
        models=[model({"provider": "openai", "api_key": "k"},
                      {"provider": "openai", "region": "eu", "api_version": "v"},
                      {"provider": "main", "region": "eu"},
                      {"provider": "cohere", "simulated": {"ttft_ms": 1}})],
        default_deployment={"provider": "simulated", "region": "x"})
    with pytest.raises(ConfigError) as exc:
        check_providers(config)
    assert str(exc.value).splitlines() == [
        "providers[0].project: adapter 'openai' has no setting 'project'",
        "models[0].deployments[1].api_version: adapter 'openai' has no setting 'api_version'",
        "models[0].deployments[1].region: adapter 'openai' has no setting 'region'",
        "models[0].deployments[2].region: adapter 'openai' has no setting 'region'",
        "models[0].deployments[3].simulated: adapter 'cohere' has no setting 'simulated'",
        "default_deployment.region: adapter 'simulated' has no setting 'region'"]


def test_build_provider_refuses_a_setting_its_adapter_does_not_read():
    with pytest.raises(ConfigError, match="adapter 'cohere' has no setting 'region'"):
        build_provider(Deployment(provider="cohere", api_key="k", region="eu"),
                       ProviderContext(count_tokens=words))


def test_adapters_get_their_own_typed_settings(monkeypatch):
    seen: list[Settings] = []
    row = PROVIDERS["bedrock"]
    monkeypatch.setitem(PROVIDERS, "bedrock", Adapter(
        row.settings, lambda s, ctx: seen.append(s) or row.build(s, ctx)))
    build_provider(Deployment(provider="bedrock", region="eu-west-1", api_key="k"),
                   ProviderContext(count_tokens=words))
    assert type(seen[0]) is row.settings and seen[0].region == "eu-west-1"


def test_named_providers_and_overrides_resolve():
    entry = ProviderEntry(name="aws", type="bedrock", region="us-east-1", api_key_env="K",
                          headers={"a": "1"})
    plain = resolve_deployment(Deployment(provider="aws", headers={"b": "2"}), {"aws": entry})
    assert (plain.provider, plain.region, plain.api_key_env) == ("bedrock", "us-east-1", "K")
    assert plain.headers == {"a": "1", "b": "2"}
    own = resolve_deployment(Deployment(provider="aws", region="eu-west-1", api_key_env="L"),
                             {"aws": entry})
    assert (own.region, own.api_key_env) == ("eu-west-1", "L")
    sim = ProviderEntry(name="slow", type="simulated", simulated=SimulatedSettings(ttft_ms=9))
    assert resolve_deployment(Deployment(provider="slow"), {"slow": sim}).simulated == \
        SimulatedSettings(ttft_ms=9)
    assert resolve_deployment(Deployment(provider="openai"), {"aws": entry}).provider == "openai"


def test_named_provider_settings_reach_the_adapter(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    config = config_of(providers=[{"name": "aws", "type": "bedrock", "region": "us-east-2",
                                   "api_key": "k"}],
                       models=[model({"provider": "aws", "model": "x"})])
    check_providers(config)
    check_deployments(config)
    (d,) = config.deployments(config.models[0])
    assert "us-east-2" in repr(build_provider(d, ProviderContext(count_tokens=words)))


def test_the_shipped_config_decodes_and_checks():
    from router.config import load_config

    config = load_config()
    check_providers(config)
    check_deployments(config)


def test_deployments_never_print_their_key():
    d = Deployment(provider="openai", api_key="sk-secret-123")
    e = ProviderEntry(name="n", type="openai", api_key="sk-secret-123")
    assert "sk-secret-123" not in repr(d) and "sk-secret-123" not in repr(e)
    encoded = msgspec.json.encode(Deployment(provider="bedrock"))
    assert b"region" not in encoded  # settings a deployment leaves out are not written back
