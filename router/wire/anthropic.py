"""Anthropic Messages API wire types, shared by the upstream adapter
(``router.providers.anthropic``), the gateway's own ``POST /v1/messages`` front end
(``service.anthropic_api``) and the test simulator.

Request structs decode leniently (unknown fields are ignored: SDKs send newer fields than we
model) but check types, so a wrong shape names its field. Response and event structs encode in
the documented field order and shapes.

Docs:
- https://docs.anthropic.com/en/api/messages (request body, Message object, stop reasons)
- https://docs.anthropic.com/en/docs/build-with-claude/streaming (event names and payloads)
- https://docs.anthropic.com/en/api/errors (error shape and error types per status)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from router.wire.openai import CacheControl as ResponseCacheOptions

# --- request content blocks ----------------------------------------------------------------

CacheControl = dict[str, Any]  # {"type": "ephemeral", "ttl": ...}: accepted, never forwarded


class TextBlock(Struct, tag="text", tag_field="type", frozen=True, omit_defaults=True):
    text: str
    cache_control: CacheControl | None = None


class Base64ImageSource(Struct, tag="base64", tag_field="type", frozen=True):
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLImageSource(Struct, tag="url", tag_field="type", frozen=True):
    url: str


class ImageBlock(Struct, tag="image", tag_field="type", frozen=True, omit_defaults=True):
    source: Base64ImageSource | URLImageSource
    cache_control: CacheControl | None = None


class ToolUseBlock(Struct, tag="tool_use", tag_field="type", frozen=True, omit_defaults=True):
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(Struct, tag="tool_result", tag_field="type", frozen=True,
                      omit_defaults=True):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(Struct, tag="thinking", tag_field="type", frozen=True):
    """Clients resend earlier turns' thinking verbatim; the gateway drops it."""

    thinking: str
    signature: str


class RedactedThinkingBlock(Struct, tag="redacted_thinking", tag_field="type", frozen=True):
    data: str


ContentBlock = (TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
                | RedactedThinkingBlock)


class MessageParam(Struct, frozen=True):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


# --- request: tools, metadata, body -------------------------------------------------------


class ToolParam(Struct, frozen=True, omit_defaults=True):
    """A client tool (``type`` "custom" or absent); server tools have no ``input_schema``."""

    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None


class ToolChoiceAuto(Struct, tag="auto", tag_field="type", frozen=True, omit_defaults=True):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Struct, tag="any", tag_field="type", frozen=True, omit_defaults=True):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Struct, tag="tool", tag_field="type", frozen=True, omit_defaults=True):
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Struct, tag="none", tag_field="type", frozen=True):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class Metadata(Struct, frozen=True, omit_defaults=True):
    user_id: str | None = None


class JSONOutputFormat(Struct, tag="json_schema", tag_field="type", frozen=True):
    schema: dict[str, Any]


class OutputConfig(Struct, frozen=True, omit_defaults=True):
    """Structured outputs (``format``) and ``effort``; the gateway reads ``format`` only."""

    format: JSONOutputFormat | None = None
    effort: str | None = None


UnitFloat = Annotated[float, Meta(ge=0, le=1)]


class MessagesRequest(Struct, frozen=True, omit_defaults=True, kw_only=True):
    """``POST /v1/messages`` body (the fields we read or send)."""

    model: str
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    metadata: Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: UnitFloat | None = None
    top_p: UnitFloat | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    # ContextForge's response-cache options, as on /v1/chat/completions (never sent upstream;
    # not Anthropic's prompt caching, which is ``cache_control`` on blocks).
    cache: ResponseCacheOptions | None = None


# --- response ------------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn",
                     "refusal", "model_context_window_exceeded"]


class Usage(Struct, frozen=True, omit_defaults=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class Message(Struct, frozen=True, kw_only=True):
    """The Message object (also the skeleton inside ``message_start``)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[TextBlock | ToolUseBlock]
    model: str
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: Usage


# --- streaming events ----------------------------------------------------------------------


class MessageStartEvent(Struct, tag="message_start", tag_field="type", frozen=True):
    message: Message


class ContentBlockStartEvent(Struct, tag="content_block_start", tag_field="type", frozen=True):
    index: int
    content_block: TextBlock | ToolUseBlock


class TextDelta(Struct, tag="text_delta", tag_field="type", frozen=True):
    text: str


class InputJSONDelta(Struct, tag="input_json_delta", tag_field="type", frozen=True):
    partial_json: str


class ContentBlockDeltaEvent(Struct, tag="content_block_delta", tag_field="type", frozen=True):
    index: int
    delta: TextDelta | InputJSONDelta


class ContentBlockStopEvent(Struct, tag="content_block_stop", tag_field="type", frozen=True):
    index: int


class MessageDelta(Struct, frozen=True):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class MessageDeltaUsage(Struct, frozen=True, omit_defaults=True):
    """Cumulative counts; ``input_tokens`` is optional and overrides ``message_start``'s."""

    output_tokens: int
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageDeltaEvent(Struct, tag="message_delta", tag_field="type", frozen=True):
    delta: MessageDelta
    usage: MessageDeltaUsage


class MessageStopEvent(Struct, tag="message_stop", tag_field="type", frozen=True):
    pass


class PingEvent(Struct, tag="ping", tag_field="type", frozen=True):
    pass


class ErrorObject(Struct, frozen=True):
    type: str
    message: str


class ErrorEvent(Struct, tag="error", tag_field="type", frozen=True):
    """The ``error`` stream event; also the body of every error response."""

    error: ErrorObject


StreamEvent = (MessageStartEvent | ContentBlockStartEvent | ContentBlockDeltaEvent
               | ContentBlockStopEvent | MessageDeltaEvent | MessageStopEvent | PingEvent
               | ErrorEvent)

# --- errors --------------------------------------------------------------------------------

# Documented error types and their statuses (docs/api/errors); 529 is Anthropic's "overloaded".
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}
_STATUS_TYPE = {status: kind for kind, status in ERROR_STATUS.items()}


def error_type_for_status(status: int) -> str:
    """The Anthropic error type a client expects for an HTTP status."""
    if status in _STATUS_TYPE:
        return _STATUS_TYPE[status]
    if status == 503:  # unavailable: what Anthropic calls overloaded (its SDK retries both)
        return "overloaded_error"
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(status: int, message: str) -> bytes:
    """``{"type": "error", "error": {"type", "message"}}`` for ``status``."""
    return ENCODER.encode(ErrorEvent(ErrorObject(error_type_for_status(status), message)))


# --- encoding ------------------------------------------------------------------------------

ENCODER = msgspec.json.Encoder()
REQUEST_DECODER = msgspec.json.Decoder(MessagesRequest)


def sse(event: StreamEvent) -> bytes:
    """One server-sent event as Anthropic frames it: ``event: <type>`` then ``data: <json>``."""
    name = type(event).__struct_config__.tag
    return b"event: " + str(name).encode() + b"\ndata: " + ENCODER.encode(event) + b"\n\n"
