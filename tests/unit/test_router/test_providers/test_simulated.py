"""The in-process simulated provider (router.providers.simulated)."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from router.config import SimulatedSettings
from router.providers import REQUEST_DECODER, Provider, SimulatedProvider, UpstreamError


def words(text: str) -> int:
    return len(text.split())


def req(**body):
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Explain TCP."}]}
    return REQUEST_DECODER.decode(msgspec.json.encode({**base, **body}))


async def collect(provider, request):
    return [c async for c in provider.stream(request)]


def test_deterministic_and_stream_equals_complete():
    p = SimulatedProvider(SimulatedSettings(), words)
    assert isinstance(p, Provider)
    a, b = asyncio.run(p.complete(req())), asyncio.run(p.complete(req()))
    assert a.choices[0].message.content == b.choices[0].message.content
    chunks = asyncio.run(collect(p, req()))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == a.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == a.usage
    other = asyncio.run(p.complete(req(model="claude-4")))
    assert other.choices[0].message.content != a.choices[0].message.content


def test_usage_counts_prompt_and_completion_tokens():
    c = asyncio.run(SimulatedProvider(SimulatedSettings(), words).complete(req()))
    assert c.usage.prompt_tokens == 3 + 3 + 2  # priming + per-message overhead + two words
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens


def test_max_tokens_and_json_format():
    p = SimulatedProvider(SimulatedSettings(), words)
    short = asyncio.run(p.complete(req(max_completion_tokens=3)))
    assert short.usage.completion_tokens == 3 and short.choices[0].finish_reason == "length"
    js = asyncio.run(p.complete(req(response_format={"type": "json_object"})))
    assert json.loads(js.choices[0].message.content)["model"] == "gpt-4o"


def test_failure_rate():
    with pytest.raises(UpstreamError):
        asyncio.run(SimulatedProvider(SimulatedSettings(failure_rate=1.0), words).complete(req()))
    with pytest.raises(UpstreamError):
        asyncio.run(collect(SimulatedProvider(SimulatedSettings(failure_rate=1.0), words), req()))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="failure_rate"):
        SimulatedSettings(failure_rate=2.0)


def test_simulated_embeddings_refuse_lengths_no_model_has():
    from router.providers import UpstreamRejected
    from router.wire.openai import EmbeddingsRequest

    p = SimulatedProvider(SimulatedSettings(), len)
    ok = asyncio.run(p.embed(EmbeddingsRequest(model="e", input="hi", dimensions=8192)))
    assert len(ok.data[0].embedding) == 8192
    with pytest.raises(UpstreamRejected):
        asyncio.run(p.embed(EmbeddingsRequest(model="e", input="hi", dimensions=8193)))
