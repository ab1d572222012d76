"""OpenAI chat-completions wire types: what clients send us and what every provider returns.

Every adapter translates from ``ChatRequest`` to its upstream format and back into
``ChatCompletion`` / ``ChatCompletionChunk``, so the gateway speaks one shape. Unknown request
fields are ignored (clients send newer fields than we model); wrong types and out-of-range values
fail decoding with the field's path, which the service reports as the offending ``param``.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

# --- request -------------------------------------------------------------------------------


class TextPart(Struct, tag="text", tag_field="type", frozen=True):
    text: str


class ImageURL(Struct, frozen=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Struct, tag="image_url", tag_field="type", frozen=True):
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(Struct, frozen=True):
    name: str
    arguments: str


class ToolCall(Struct, frozen=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(Struct, frozen=True, omit_defaults=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(Struct, frozen=True, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Struct, frozen=True):
    function: FunctionDef
    type: Literal["function"] = "function"


class ResponseFormat(Struct, frozen=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(Struct, frozen=True):
    include_usage: bool = False


PositiveInt = Annotated[int, Meta(ge=1)]


class CacheControl(Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """The request's ``cache`` options (ContextForge's, never forwarded upstream): skip the
    lookup (``no_cache``), do not keep the answer (``no_store``), keep it ``ttl`` seconds, share
    it per ``tenant`` or only with the same ``user``, and ``store`` a non-deterministic request
    (temperature above 0) that would otherwise not be kept."""

    no_cache: bool = False
    no_store: bool = False
    ttl: Annotated[float, Meta(gt=0, le=365 * 86400)] | None = None
    scope: Literal["tenant", "user"] | None = None
    store: bool = False


class ChatRequest(Struct, frozen=True, omit_defaults=True):
    """``POST /v1/chat/completions`` body (the fields we read or forward)."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    n: Annotated[int, Meta(ge=1, le=1)] = 1  # one choice per request, for now
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    cache: CacheControl | None = None  # the gateway's cache options; stripped before dispatch

    @property
    def output_limit(self) -> int | None:
        """The caller's cap on answer tokens (the newer field wins)."""
        return self.max_completion_tokens or self.max_tokens


# --- response ------------------------------------------------------------------------------


class Usage(Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(Struct, frozen=True, omit_defaults=True):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class Choice(Struct, frozen=True):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(Struct, frozen=True):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    object: Literal["chat.completion"] = "chat.completion"


class FunctionCallDelta(Struct, frozen=True, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, frozen=True, omit_defaults=True):
    """A piece of a streamed tool call: the first piece of call ``index`` carries ``id``,
    ``type`` and ``function.name``; later pieces append to ``function.arguments``."""

    index: int
    function: FunctionCallDelta
    id: str | None = None
    type: Literal["function"] | None = None


class Delta(Struct, frozen=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(Struct, frozen=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(Struct, frozen=True):
    """One SSE event. Providers end every stream with a usage chunk (``choices == []``)."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


# --- embeddings ----------------------------------------------------------------------------


class EmbeddingsRequest(Struct, frozen=True, omit_defaults=True):
    """``POST /v1/embeddings`` body. Token-id inputs are not accepted: only text is routable
    to every provider."""

    model: str
    input: str | Annotated[list[str], Meta(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    # Bounded here so an absurd value is a 400 at decoding; each model's own length (the local
    # encoder's, a catalog model's ``dimensions``) is checked when it is chosen.
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    user: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(Struct, frozen=True):
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 when asked
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(Struct, frozen=True):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


# --- helpers -------------------------------------------------------------------------------


def encode_vector(v: Any, encoding_format: str) -> list[float] | str:
    """An embedding as OpenAI returns it: floats, or base64 of little-endian float32."""
    import numpy as np

    arr = np.asarray(v, dtype="<f4")
    if encoding_format == "base64":
        return base64.b64encode(arr.tobytes()).decode()
    return arr.tolist()


TOKENS_PER_MESSAGE = 3  # OpenAI's chat-format overhead per message (and 3 to prime the reply)
TOKENS_PER_IMAGE = 85  # a low-detail image, as OpenAI bills it


def estimate_prompt_tokens(count: Any, request: ChatRequest) -> int:
    """Prompt tokens when an upstream reports none: ``count`` (the gateway's tokenizer) over
    each message's text, plus OpenAI's per-message and per-image overhead."""
    prompt = TOKENS_PER_MESSAGE
    for m in request.messages:
        prompt += TOKENS_PER_MESSAGE + count(message_text(m))
        if isinstance(m.content, list):
            prompt += TOKENS_PER_IMAGE * sum(isinstance(p, ImagePart) for p in m.content)
    return prompt


def estimate_usage(count: Any, request: ChatRequest, completion_text: str) -> Usage:
    """A whole ``Usage`` estimate: the prompt as above, the completion's text counted."""
    prompt = estimate_prompt_tokens(count, request)
    completion = count(completion_text) if completion_text else 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


def arguments_text(value: str | dict[str, Any] | None) -> str:
    """Tool-call arguments as OpenAI's JSON string (some upstreams send an object)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def message_text(message: Message) -> str:
    """The text of a message: its string content, or its text parts joined by newlines."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.text for p in content if isinstance(p, TextPart))


def has_images(request: ChatRequest) -> bool:
    return any(
        isinstance(m.content, list) and any(isinstance(p, ImagePart) for p in m.content)
        for m in request.messages
    )


# Built once: decoding and encoding are on every request's path.
REQUEST_DECODER = msgspec.json.Decoder(ChatRequest)
EMBEDDINGS_DECODER = msgspec.json.Decoder(EmbeddingsRequest)
ENCODER = msgspec.json.Encoder()
