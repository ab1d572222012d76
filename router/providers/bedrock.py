"""Amazon Bedrock through the Converse API, authenticated by an API key or AWS Signature V4.

Provider ``bedrock`` calls ``POST {endpoint}/model/{modelId}/converse`` (``/converse-stream``
when streaming); ``endpoint`` defaults to ``https://bedrock-runtime.{region}.amazonaws.com`` and
may name a VPC endpoint or a proxy. The model id (a foundation model, an inference profile such
as ``us.anthropic.claude-3-5-sonnet-20241022-v2:0``, or an ARN) is percent-encoded as one path
segment. ``region`` is the deployment's, else ``$AWS_REGION``, else botocore's configured
region (``$AWS_DEFAULT_REGION`` or the profile's); none is a ``ConfigError``.

Authentication, first found wins:

- A Bedrock API key: the deployment's ``api_key``, else the variable its ``api_key_env`` names
  (which must then be set), else ``$AWS_BEARER_TOKEN_BEDROCK`` (the variable AWS's own SDKs
  read). It goes as ``Authorization: Bearer <key>``, and nothing is signed.
- AWS credentials from botocore's standard chain (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and the shared files, SSO,
  web identity, container and instance roles), resolved once at construction (none found:
  ``ConfigError``). Temporary ones are refreshed by botocore as they near expiry, so every
  request signs with freshly frozen credentials (a refresh, a blocking network call, runs in a
  thread). Signing is botocore's ``SigV4Auth`` (signing name ``bedrock``) over the exact body
  bytes sent.

Either way the call goes through the gateway's shared httpx client (boto3 and botocore's HTTP
stack are not used).

Translation: system/developer messages (wherever they appear) -> ``system`` text blocks; user
and ``tool`` messages -> role ``user``, assistant -> role ``assistant`` (consecutive messages of
one role merge, since Converse wants the roles to alternate; blank texts are left out, which
Converse refuses); text parts; image parts only as ``data:`` URLs in png/jpeg/gif/webp ->
``image {format, source {bytes}}`` (Converse takes no image URLs, so an http(s) URL is
``UpstreamRejected`` rather than downloaded). Tools -> ``toolConfig.tools[].toolSpec`` (name,
description, ``inputSchema.json``); ``tool_choice`` "auto" / absent -> no ``toolChoice`` (auto
is Converse's default and some models accept no ``toolChoice`` at all), "required" ->
``{"any": {}}``, a named function -> ``{"tool": {"name"}}``, "none" -> no ``toolConfig``.
Assistant ``tool_calls`` -> ``toolUse`` blocks (arguments that are not a JSON object are wrapped
as ``{"arguments": <text>}``), ``tool`` messages -> ``toolResult`` blocks with one text block;
tool call ids are mapped onto Converse's id alphabet. Converse refuses tool blocks in a request
without ``toolConfig``, so when no tools are sent (no tools, or "none") earlier calls and
results are passed as plain text instead. ``inferenceConfig``: ``maxTokens`` (only when the
caller set a limit: Converse then uses the model's default), ``temperature`` (clamped to
Converse's [0, 1]), ``topP``, ``stopSequences``. ``json_schema`` response formats ->
``outputConfig.textFormat`` (structured outputs; models without them refuse the call);
``json_object`` -> an added system instruction to answer with one JSON object, since Converse
has no schema-less JSON mode. Dropped silently: ``seed``, ``user``, ``presence_penalty``,
``frequency_penalty``, ``parallel_tool_calls``, ``strict`` on tools, image ``detail``, ``name``.

Responses: ``output.message.content`` text blocks -> content, ``toolUse`` blocks -> ``tool_calls``
(input re-encoded as a JSON string); reasoning and other blocks are skipped. ``stopReason``:
end_turn / stop_sequence -> ``stop``, max_tokens / model_context_window_exceeded -> ``length``,
tool_use -> ``tool_calls``, guardrail_intervened / content_filtered -> ``content_filter``, others
-> ``stop``. Usage: ``inputTokens`` (+ ``cacheReadInputTokens`` + ``cacheWriteInputTokens``, which
OpenAI counts as prompt tokens) -> prompt, ``outputTokens`` -> completion.

Streaming reads the binary AWS event stream (``application/vnd.amazon.eventstream``) with
botocore's ``EventStreamBuffer``: ``contentBlockStart`` (a ``toolUse`` start: id and name) and
``contentBlockDelta`` (text, or ``toolUse.input`` JSON pieces) become chunk deltas,
``messageStop`` the finish reason, ``metadata`` the usage. Exception events:
``throttlingException`` -> ``UpstreamRateLimited``; ``modelStreamErrorException``,
``internalServerException``, ``serviceUnavailableException`` -> ``UpstreamUnavailable``;
``validationException`` -> ``UpstreamRejected``; others -> ``UpstreamError``. Error answers
before the stream (``{"message"}`` bodies named by ``x-amzn-ErrorType``) map in ``http_io``.

Docs used:
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseStreamOutput.html
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_MessageStopEvent.html
- https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_OutputFormat.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/conversation-inference.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/structured-output.html
- https://docs.aws.amazon.com/bedrock/latest/userguide/api-keys-use.html
- botocore's bedrock-runtime service model (shapes, enums, error statuses)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import botocore.session
import httpx
import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError
from botocore.exceptions import BotoCoreError

from router.providers._base import (
    ProviderContext,
    ProviderError,
    SharedClientProvider,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
)
from router.providers._kit import (
    MALFORMED,
    ChunkStream,
    FinishReasons,
    completion_id,
    config_error,
    estimate_usage,
    relay,
    resolve_api_key,
    usage_of,
)
from router.providers._settings import Settings
from router.providers.http_io import error_for_exception, open_stream, send_json
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    FunctionCall,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    Usage,
    message_text,
)

DEFAULT_ENDPOINT = "https://bedrock-runtime.{region}.amazonaws.com"
SIGNING_NAME = "bedrock"  # the service name in the SigV4 scope (not the endpoint prefix)
KEY_ENV = "AWS_BEARER_TOKEN_BEDROCK"  # where AWS's SDKs look for a Bedrock API key
EVENT_STREAM = "application/vnd.amazon.eventstream"
JSON_OBJECT_INSTRUCTION = "Answer with a single valid JSON object and nothing else."
EMPTY_TOOL_RESULT = "(no output)"  # Converse refuses blank text, and a result must say something

IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "image/gif": "gif", "image/webp": "webp"}
_DATA_URL = re.compile(r"^data:([^;,]+)(?:;[^;,]*)*;base64,(.*)$", re.DOTALL)
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_.:-]")  # Converse's ToolUseId alphabet, max 64 chars

FINISH_REASONS = FinishReasons({
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}, missing="end_turn")
_STREAM_ERRORS: dict[str, type[ProviderError]] = {
    "throttlingException": UpstreamRateLimited,
    "modelStreamErrorException": UpstreamUnavailable,
    "internalServerException": UpstreamUnavailable,
    "serviceUnavailableException": UpstreamUnavailable,
    "validationException": UpstreamRejected,
}
_MAX_DETAIL = 300


class BedrockSettings(Settings):
    """The common fields and the AWS ``region`` (else ``$AWS_REGION`` or botocore's)."""

    region: str = ""


class BedrockProvider(SharedClientProvider):
    """One Bedrock model (or inference profile) in one region, via Converse."""

    name = "bedrock"

    def __init__(self, settings: BedrockSettings, ctx: ProviderContext,
                 credentials: Credentials | None, region: str, api_key: str = ""):
        if not api_key and credentials is None:
            raise config_error("bedrock", "needs an API key or AWS credentials")
        self._settings = settings
        self._ctx = ctx
        self._credentials = credentials
        self._api_key = api_key
        self._region = region
        self._base = (settings.endpoint or DEFAULT_ENDPOINT.format(region=region)).rstrip("/")

    @classmethod
    def from_settings(cls, settings: BedrockSettings, ctx: ProviderContext) -> BedrockProvider:
        api_key = resolve_api_key(settings, KEY_ENV, required=bool(settings.api_key_env))
        try:
            session = botocore.session.get_session()
            region = (settings.region or os.environ.get("AWS_REGION")
                      or session.get_config_variable("region") or "")
            credentials = None if api_key else session.get_credentials()
        except BotoCoreError as exc:  # a missing profile, an unreadable config file
            raise config_error("bedrock", f"cannot load the AWS configuration: {exc}") from None
        if not region:
            raise config_error("bedrock", "no region; set the deployment's region or the "
                                          "environment variable AWS_REGION (or "
                                          "AWS_DEFAULT_REGION)")
        if credentials is None and not api_key:
            raise config_error("bedrock", f"no AWS credentials; set {KEY_ENV} (a Bedrock API "
                                          "key), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                          "or AWS_PROFILE, or run with an IAM role")
        return cls(settings, ctx, credentials, region, api_key)

    def __repr__(self) -> str:  # never the credentials
        return f"BedrockProvider(model={self._settings.model!r}, region={self._region!r})"

    # --- chat -----------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        url, body = self._url(request, "converse"), self._body(request)
        headers = await self._auth_headers(url, body, "application/json")
        data = await send_json(self._ctx.client(), self.name, url, content=body,
                               headers=headers)
        try:
            blocks = data["output"]["message"]["content"]
            stop_reason = data.get("stopReason")
            text = "".join(b["text"] for b in blocks if "text" in b)
            calls = [ToolCall(id=b["toolUse"]["toolUseId"], function=FunctionCall(
                name=b["toolUse"]["name"],
                arguments=json.dumps(b["toolUse"].get("input", {}), ensure_ascii=False)))
                for b in blocks if "toolUse" in b]
            usage = _usage(data.get("usage"))
        except MALFORMED as exc:
            raise UpstreamError(f"bedrock upstream answered with an unexpected body "
                                f"({type(exc).__name__}: {str(exc)[:80]})") from None
        usage = usage or estimate_usage(self._ctx.count_tokens, request, text,
                                        [(c.function.name, c.function.arguments) for c in calls])
        message = AssistantMessage(role="assistant", content=text if text or not calls else None,
                                   tool_calls=calls or None)
        return ChatCompletion(
            id=completion_id(), created=int(time.time()), model=request.model,
            choices=[Choice(index=0, message=message,
                            finish_reason=FINISH_REASONS(stop_reason, bool(calls)))],
            usage=usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        url, body = self._url(request, "converse-stream"), self._body(request)
        headers = await self._auth_headers(url, body, EVENT_STREAM)
        translator = BedrockStreamTranslator(request, self._ctx.count_tokens)
        async with (open_stream(self._ctx.client(), self.name, url, content=body,
                                headers=headers) as response,
                    aclosing(_event_messages(self.name, response)) as messages):
            async for chunk in relay(messages, translator):
                yield chunk

    # --- request --------------------------------------------------------------------------

    def _url(self, request: ChatRequest, action: str) -> str:
        model = self._settings.upstream_model(request.model)
        # One path segment whatever the id holds: ARNs have ':' and '/'.
        return f"{self._base}/model/{quote(model, safe='')}/{action}"

    def _body(self, request: ChatRequest) -> bytes:
        tool_config = _tool_config(request)
        system, messages = _messages(request, tools=tool_config is not None)
        body: dict[str, Any] = {"messages": messages}
        fmt = request.response_format
        if fmt is not None and fmt.type == "json_schema" and (fmt.json_schema or {}).get("schema"):
            body["outputConfig"] = {"textFormat": _text_format(fmt.json_schema or {})}
        elif fmt is not None and fmt.type != "text":
            system.append({"text": JSON_OBJECT_INSTRUCTION})
        if system:
            body["system"] = system
        if inference := _inference_config(request):
            body["inferenceConfig"] = inference
        if tool_config is not None:
            body["toolConfig"] = tool_config
        return msgspec.json.encode(body)

    async def _auth_headers(self, url: str, body: bytes, accept: str) -> dict[str, str]:
        """The request's headers with its authentication: the API key as a bearer token, or a
        SigV4 signature over exactly ``body`` (which must be sent as is) and the deployment's
        extra headers."""
        headers = {**self._settings.headers, "content-type": "application/json",
                   "accept": accept}
        if self._api_key:
            return {**headers, "authorization": f"Bearer {self._api_key}"}
        credentials = await self._frozen_credentials()
        aws_request = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(credentials, SIGNING_NAME, self._region).add_auth(aws_request)
        return dict(aws_request.headers.items())

    async def _frozen_credentials(self) -> ReadOnlyCredentials:
        creds = self._credentials
        assert creds is not None  # __init__ requires them when there is no API key
        try:
            if isinstance(creds, RefreshableCredentials) and creds.refresh_needed():
                # A refresh calls STS / SSO / the instance metadata service synchronously.
                return await asyncio.to_thread(creds.get_frozen_credentials)
            return creds.get_frozen_credentials()
        except (BotoCoreError, OSError) as exc:
            raise UpstreamError(f"bedrock: could not refresh the AWS credentials: "
                                f"{type(exc).__name__}") from None


# --- request translation -----------------------------------------------------------------


def _messages(request: ChatRequest, *, tools: bool) -> tuple[list[dict[str, Any]],
                                                              list[dict[str, Any]]]:
    """``system`` blocks and alternating ``messages``; tool blocks become text without tools."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role in ("system", "developer"):
            if (text := message_text(m)).strip():
                system.append({"text": text})
            continue
        blocks = _blocks(m, tools=tools)
        if not blocks:
            continue
        role = "assistant" if m.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(m: Message, *, tools: bool) -> list[dict[str, Any]]:
    if m.role == "tool":
        result = message_text(m) or EMPTY_TOOL_RESULT
        if not tools:
            return [{"text": f"[result of tool call {m.tool_call_id}: {result}]"}]
        return [{"toolResult": {"toolUseId": _tool_id(m.tool_call_id or ""),
                                "content": [{"text": result}]}}]
    blocks: list[dict[str, Any]] = []
    if isinstance(m.content, str):
        if m.content.strip():
            blocks.append({"text": m.content})
    elif m.content:
        for part in m.content:
            if isinstance(part, TextPart):
                if part.text.strip():
                    blocks.append({"text": part.text})
            elif isinstance(part, ImagePart):
                blocks.append({"image": _image(part.image_url.url)})
    for call in m.tool_calls or ():
        if tools:
            blocks.append({"toolUse": {"toolUseId": _tool_id(call.id), "name": call.function.name,
                                       "input": _tool_input(call.function.arguments)}})
        else:
            blocks.append({"text": f"[tool call {call.id}: {call.function.name}"
                                   f"({call.function.arguments})]"})
    return blocks


def _image(url: str) -> dict[str, Any]:
    match = _DATA_URL.match(url)
    if match is None:
        raise UpstreamRejected("bedrock takes images only inline, as base64 data: URLs; "
                               "image URLs are not fetched")
    fmt = IMAGE_FORMATS.get(match.group(1).strip().lower())
    if fmt is None:
        raise UpstreamRejected(f"bedrock takes png, jpeg, gif or webp images, not "
                               f"{match.group(1)[:40]!r}")
    return {"format": fmt, "source": {"bytes": match.group(2)}}  # JSON blobs are base64


def _tool_id(call_id: str) -> str:
    """An OpenAI tool call id in Converse's id alphabet (the same id maps the same way, so a
    ``toolResult`` still names its ``toolUse``)."""
    return _TOOL_ID_BAD.sub("_", call_id)[:64] or "call"


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"arguments": arguments}


def _tool_config(request: ChatRequest) -> dict[str, Any] | None:
    if not request.tools or request.tool_choice == "none":
        return None
    specs = []
    for tool in request.tools:
        f = tool.function
        spec: dict[str, Any] = {"name": f.name, "inputSchema": {
            "json": f.parameters or {"type": "object", "properties": {}}}}
        if f.description:
            spec["description"] = f.description
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    choice = request.tool_choice
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise UpstreamRejected("tool_choice names no function")
        config["toolChoice"] = {"tool": {"name": name}}
    return config


def _inference_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.output_limit is not None:
        config["maxTokens"] = request.output_limit
    if request.temperature is not None:
        config["temperature"] = min(request.temperature, 1.0)  # OpenAI's range is [0, 2]
    if request.top_p is not None and request.temperature is None:
        # Claude 4.1 and later on Bedrock refuse both; temperature is the one callers mean.
        config["topP"] = request.top_p
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    if stop := [s for s in stop or () if s]:
        config["stopSequences"] = stop
    return config


def _text_format(json_schema: dict[str, Any]) -> dict[str, Any]:
    definition: dict[str, Any] = {"schema": json.dumps(json_schema["schema"]),  # a string
                                  "name": json_schema.get("name") or "response"}
    if json_schema.get("description"):
        definition["description"] = json_schema["description"]
    return {"type": "json_schema", "structure": {"jsonSchema": definition}}


# --- response translation ----------------------------------------------------------------


def _usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict) or not isinstance(usage.get("inputTokens"), int):
        return None
    prompt = (usage["inputTokens"] + int(usage.get("cacheReadInputTokens") or 0)
              + int(usage.get("cacheWriteInputTokens") or 0))
    return usage_of(prompt, int(usage.get("outputTokens") or 0))


class BedrockStreamTranslator(ChunkStream):
    """ConverseStream event messages in, our chunks out. The role chunk waits for the first
    event, so an exception event that opens the stream fails the call before the client has
    seen anything (failover stays open)."""

    unfinished = "messageStop"

    def __init__(self, request: ChatRequest, count_tokens: Callable[[str], int]):
        super().__init__("bedrock", request, count_tokens)
        self._calls: dict[int, int] = {}  # contentBlockIndex -> OpenAI tool call index
        self.stop_reason: str | None = None

    def feed(self, message: EventStreamMessage) -> list[ChatCompletionChunk]:
        event, payload = _event(self.provider, message)
        out = self.role()
        try:
            return out + self._feed(event, payload)
        except MALFORMED as exc:  # a field missing or of an unexpected type
            raise UpstreamError(f"bedrock upstream sent an unexpected {event} "
                                f"event: {type(exc).__name__}") from None

    def _feed(self, event: str, payload: dict[str, Any]) -> list[ChatCompletionChunk]:
        block = payload.get("contentBlockIndex")
        if event == "contentBlockStart":
            start = (payload.get("start") or {}).get("toolUse")
            if not isinstance(start, dict):
                return []
            index, first = self.tools.start(str(start.get("name", "")),
                                            str(start.get("toolUseId", "")))
            self._calls[block] = index
            return self.tool_chunks([first])
        if event == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if isinstance(text := delta.get("text"), str) and text:
                return [self.content(text)]
            if isinstance(tool := delta.get("toolUse"), dict):
                if block not in self._calls:
                    raise UpstreamError("bedrock upstream streamed tool input for a tool call "
                                        "it never started")
                return self.tool_chunks(self.tools.extend(self._calls[block],
                                                          str(tool.get("input", ""))))
            return []  # reasoning, citations: not part of OpenAI's answer
        if event == "messageStop":
            self.stop_reason = str(payload.get("stopReason") or "end_turn")
        elif event == "metadata":
            self.usage = _usage(payload.get("usage"))
        return []  # messageStart, contentBlockStop, events newer than this adapter

    def end(self) -> list[ChatCompletionChunk]:
        if self.stop_reason is None:
            raise UpstreamError("bedrock upstream ended the stream before messageStop")
        return [self.finish(FINISH_REASONS(self.stop_reason, bool(self.tools))),
                self.usage_chunk()]


async def _event_messages(provider: str,
                          response: httpx.Response) -> AsyncIterator[EventStreamMessage]:
    """The response's event-stream messages (CRC-checked by botocore) as bytes arrive."""
    buffer = EventStreamBuffer()
    try:
        async for data in response.aiter_bytes():
            buffer.add_data(data)
            for message in buffer:
                yield message
    except httpx.HTTPError as exc:
        raise error_for_exception(provider, exc) from None
    except ParserError as exc:
        raise UpstreamError(f"{provider} upstream sent a malformed event stream "
                            f"({type(exc).__name__})") from None


def _event(provider: str, message: EventStreamMessage) -> tuple[str, dict[str, Any]]:
    """An event's type and JSON payload; exception and error messages raise our errors."""
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "error":  # a transport-level error frame: code and message in headers
        raise UpstreamError(f"{provider} upstream stream error {headers.get(':error-code')}: "
                            f"{str(headers.get(':error-message', ''))[:_MAX_DETAIL]}")
    try:
        payload = json.loads(message.payload) if message.payload else {}
    except ValueError:
        raise UpstreamError(f"{provider} upstream sent an event that is not JSON") from None
    if not isinstance(payload, dict):
        raise UpstreamError(f"{provider} upstream sent an event that is not a JSON object")
    if kind == "exception":
        name = str(headers.get(":exception-type", ""))
        detail = str(payload.get("message") or payload.get("Message") or "")[:_MAX_DETAIL]
        error = _STREAM_ERRORS.get(name, UpstreamError)
        raise error(f"{provider} upstream stream failed: {name}: {detail}")
    return str(headers.get(":event-type", "")), payload
