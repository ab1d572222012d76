"""The provider kit: what every adapter needs and none should write again.

- ids and usage: ``completion_id``, ``call_id``, ``usage_of`` (a ``Usage`` from counts that
  may be floats or lack a total), ``estimate_usage`` (when the upstream reports none: the
  gateway's tokenizer plus OpenAI's per-message overhead, tool calls included).
- ``FinishReasons``: an upstream's finish-reason table, mapped to OpenAI's the same way for
  every adapter ("tool_calls" whenever a stopped answer carries tool calls; reasons that mean
  the generation failed raise).
- streams: ``ChunkStream`` holds one answer's chunk id, timestamp and model plus what the
  stream said so far (text, tool calls via ``ToolCalls``, usage, finish reason) and makes the
  chunks; every adapter's translator extends it and follows the ``StreamTranslator`` shape
  (``feed`` one upstream event, ``end`` with the closing chunks), which ``relay`` drives.
- ``MALFORMED``: what reading an upstream body of an unexpected shape raises, to be turned
  into ``UpstreamError``; ``config_error`` for settings an adapter cannot work with;
  ``resolve_api_key`` for the key every adapter looks up the same way.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from router.errors import ConfigError
from router.providers._base import ProviderError, UpstreamError
from router.providers._settings import Settings
from router.wire.openai import (
    ChatCompletionChunk,
    ChatRequest,
    ChunkChoice,
    Delta,
    FunctionCallDelta,
    ToolCallDelta,
    Usage,
    estimate_prompt_tokens,
)

# What reading an upstream body of an unexpected shape raises (a field missing, a list where an
# object belongs); adapters turn it into UpstreamError so no other exception escapes them.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)

E = TypeVar("E", contravariant=True)
Event = TypeVar("Event")


def completion_id(upstream_id: str = "") -> str:
    """An OpenAI-style completion id: ``chatcmpl-`` + the upstream's id, or a fresh one."""
    return f"chatcmpl-{upstream_id or uuid.uuid4().hex}"


def call_id() -> str:
    """A tool call id for an upstream that gives none."""
    return f"call_{uuid.uuid4().hex[:24]}"


def usage_of(prompt: float, completion: float, total: float | None = None) -> Usage:
    """A ``Usage`` from upstream counts (some send floats); the total is the sum unless given."""
    p, c = round(prompt), round(completion)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=round(total or 0) or p + c)


def estimate_usage(count: Callable[[str], int], request: ChatRequest, text: str,
                   calls: Iterable[tuple[str, str]] = ()) -> Usage:
    """Usage when the upstream reports none: the prompt with OpenAI's message overhead, and
    the answer's text plus each tool call's name and arguments, by the gateway's tokenizer."""
    completion = (count(text) if text else 0) + sum(count(f"{name} {arguments}")
                                                    for name, arguments in calls)
    return usage_of(estimate_prompt_tokens(count, request), completion)


def config_error(provider: str, message: str) -> ConfigError:
    """The ``ConfigError`` for a deployment its adapter cannot work with, naming the provider."""
    return ConfigError(f"provider {provider!r}: {message}")


def resolve_api_key(settings: Settings, default_env: str, *, required: bool = True) -> str:
    """The deployment's key: ``api_key``, else ``$api_key_env``, else ``$default_env``.

    A missing key is a ``ConfigError`` at start-up (naming the variable, never a value), so a
    misconfigured deployment fails before it takes traffic.
    """
    if settings.api_key:
        return settings.api_key
    env = settings.api_key_env or default_env
    key = os.environ.get(env, "")
    if not key and required:
        raise config_error(settings.provider, f"no API key; set the environment variable {env} "
                                              "or the deployment's api_key_env")
    return key


@dataclass(frozen=True, slots=True)
class FinishReasons:
    """An upstream's finish reasons -> OpenAI's (``stop``, ``length``, ``tool_calls``,
    ``content_filter``). Unknown reasons are ``stop``; a ``stop`` whose answer carries tool
    calls is ``tool_calls`` (some servers say "stop" after a call; the client needs to know).
    ``failures`` are reasons that mean the generation failed: reason -> (error, what).
    """

    table: Mapping[str, str]
    missing: str = ""  # what an absent reason is looked up as
    failures: Mapping[str, tuple[type[ProviderError], str]] = field(default_factory=dict)
    upper: bool = False  # the upstream's reasons are case-insensitive (looked up upper-cased)

    def __call__(self, reason: str | None, tool_calls: bool = False, *,
                 provider: str = "") -> str:
        key = reason or self.missing
        key = key.upper() if self.upper else key
        if key in self.failures:
            error, what = self.failures[key]
            raise error(f"{provider} upstream {what} while generating".lstrip())
        mapped = self.table.get(key, "stop")
        return "tool_calls" if tool_calls and mapped == "stop" else mapped


class ToolCalls:
    """Tool calls assembled from stream pieces, sent in OpenAI's order: a call's first delta
    carries its index, id, type and name (arguments ""), later deltas append arguments."""

    def __init__(self) -> None:
        self._calls: list[list[str]] = []  # our index -> [name, arguments so far]

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def calls(self) -> list[tuple[str, str]]:
        """(name, arguments) of each call so far, in index order."""
        return [(name, arguments) for name, arguments in self._calls]

    def start(self, name: str, id: str | None = None) -> tuple[int, ToolCallDelta]:
        """A new call: its index and first delta (``id`` generated when the upstream has none)."""
        index = len(self._calls)
        self._calls.append([name, ""])
        return index, ToolCallDelta(index=index, id=id or call_id(), type="function",
                                    function=FunctionCallDelta(name=name, arguments=""))

    def extend(self, index: int, arguments: str) -> list[ToolCallDelta]:
        """The delta appending ``arguments`` to call ``index`` (none for an empty piece)."""
        if not arguments:
            return []
        self._calls[index][1] += arguments
        return [ToolCallDelta(index=index, function=FunctionCallDelta(arguments=arguments))]

    def whole(self, name: str, arguments: str, id: str | None = None) -> list[ToolCallDelta]:
        """The deltas of a call the upstream sends whole: the start, then its arguments."""
        index, first = self.start(name, id)
        return [first, *self.extend(index, arguments)]


class ChunkStream:
    """One streamed answer: the id, timestamp and model its chunks share, and what the
    upstream said so far. Adapters' stream translators extend it (see ``StreamTranslator``).

    ``done`` is set by a translator when the upstream sent its last event; ``finish_reason``
    once the answer's finish chunk went out; ``usage`` when the upstream reported it.
    """

    unfinished = "its finish reason"  # what the upstream did not send when it ended early

    def __init__(self, provider: str, request: ChatRequest, count_tokens: Callable[[str], int],
                 *, id: str = "", clock: Callable[[], float] = time.time):
        self.provider = provider
        self.request = request
        self.count_tokens = count_tokens
        self.id = id or completion_id()
        self.created = int(clock())
        self.text: list[str] = []
        self.tools = ToolCalls()
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False
        self._role_sent = False

    def chunk(self, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.request.model,
                                   choices=[ChunkChoice(index=0, delta=delta,
                                                        finish_reason=finish)])

    def content(self, text: str) -> ChatCompletionChunk:
        """A text piece; the stream's first chunk also carries the assistant role."""
        self.text.append(text)
        role = None if self._role_sent else "assistant"
        self._role_sent = True
        return self.chunk(Delta(role=role, content=text))

    def role(self) -> list[ChatCompletionChunk]:
        """The opening chunk (role, no text), unless a chunk went out already."""
        return [] if self._role_sent else [self.content("")]

    def tool_chunks(self, deltas: Iterable[ToolCallDelta]) -> list[ChatCompletionChunk]:
        """One chunk per tool-call delta, as OpenAI streams them."""
        return [self.chunk(Delta(tool_calls=[d])) for d in deltas]

    def finish(self, reason: str) -> ChatCompletionChunk:
        """The chunk that ends the answer with OpenAI's finish ``reason``."""
        self.finish_reason = reason
        return self.chunk(Delta(), reason)

    def usage_chunk(self) -> ChatCompletionChunk:
        """The last chunk of every stream: no choices, the usage (estimated if unreported)."""
        usage = self.usage or estimate_usage(self.count_tokens, self.request,
                                             "".join(self.text), self.tools.calls)
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.request.model,
                                   choices=[], usage=usage)

    def end(self) -> list[ChatCompletionChunk]:
        """The closing chunks once the upstream stopped sending: the usage chunk, or
        ``UpstreamError`` if the answer never finished."""
        if self.finish_reason is None:
            raise UpstreamError(f"{self.provider} upstream ended the stream before "
                                f"{self.unfinished}")
        return [self.usage_chunk()]


class StreamTranslator(Protocol[E]):
    """The one shape of every adapter's stream translation: upstream events in, OpenAI chunks
    out. ``feed`` translates one event (raising the mapped ``ProviderError`` for an error
    event); ``done`` says the upstream sent its last event; ``end`` gives the closing chunks
    (finish and usage) or raises if the stream ended early."""

    @property
    def done(self) -> bool: ...

    def feed(self, event: E) -> list[ChatCompletionChunk]: ...

    def end(self) -> list[ChatCompletionChunk]: ...


async def relay(events: AsyncIterable[Event], translator: StreamTranslator[Event],
                ) -> AsyncIterator[ChatCompletionChunk]:
    """Every chunk ``translator`` makes of ``events``, then its closing chunks."""
    async for event in events:
        for chunk in translator.feed(event):
            yield chunk
        if translator.done:
            break
    for chunk in translator.end():
        yield chunk
