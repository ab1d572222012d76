"""Google Gemini, two ways in: the Gemini API (an API key) and Vertex AI (an access token).

Provider ``gemini`` calls ``POST {endpoint}/v1beta/models/{model}:generateContent`` (endpoint
default ``https://generativelanguage.googleapis.com``; ``api_version`` overrides ``v1beta``) with
the header ``x-goog-api-key``: the deployment's key, else ``$GEMINI_API_KEY``, else
``$GOOGLE_API_KEY``. Provider ``vertex`` calls ``POST https://{region}-aiplatform.googleapis.com/
v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent``
(``https://aiplatform.googleapis.com`` for region ``global``; ``endpoint`` overrides the host)
with ``Authorization: Bearer <token>``. ``project`` and ``region`` are required. The token is
the deployment's ``api_key`` / ``$api_key_env`` / ``$GOOGLE_ACCESS_TOKEN``, supplied by the
operator (e.g. ``gcloud auth print-access-token``): this adapter does not mint or refresh
tokens, and such tokens expire (about an hour), after which calls fail as credentials errors.
Streaming uses ``:streamGenerateContent?alt=sse`` (one ``data:`` GenerateContentResponse per
event, no terminator; usage is cumulative, so the last chunk's counts are kept).

Translation: system/developer messages -> ``systemInstruction`` (text); user -> role ``user``,
assistant -> role ``model`` (consecutive messages of one role merge into one content); text
parts; image parts: ``data:`` URLs -> ``inlineData``; the Gemini API takes ``https`` URLs as
``fileData`` (it fetches them), Vertex AI takes ``gs://`` and ``http(s)`` URLs (with a MIME type
inferred from the file extension, which Vertex requires); anything else is ``UpstreamRejected``.
Tools -> ``functionDeclarations`` (JSON Schema converted to Gemini's OpenAPI-subset ``Schema``);
``tool_choice`` -> ``toolConfig.functionCallingConfig`` (none/auto/required -> NONE/AUTO/ANY, a
named function -> ANY + ``allowedFunctionNames``); assistant ``tool_calls`` -> ``functionCall``
parts; ``tool`` messages -> ``functionResponse`` parts named after the earlier call with that
id (a JSON-object result is the response; anything else becomes ``{"output": ...}``).
``generationConfig``: temperature, topP, maxOutputTokens, stopSequences, seed, presencePenalty,
frequencyPenalty; ``json_object`` -> ``responseMimeType: application/json``; ``json_schema``
also sends ``responseSchema`` when the schema fits Gemini's subset (``$ref``/``$defs`` inlined,
``["T", "null"]`` -> nullable, ``oneOf`` -> ``anyOf``, ``const`` -> one-value enum; unsupported
keywords such as ``additionalProperties`` and unsupported string formats dropped); a schema that
cannot fit (recursive, non-string enums, tuples) falls back to plain JSON mode. Dropped
silently: ``user``, ``parallel_tool_calls``, ``n`` (always 1), image ``detail``, ``name``.

Thought signatures: Gemini 3 models attach an opaque ``thoughtSignature`` to function calls and
refuse (400) a history whose current-turn calls lack it. OpenAI's shape has no room for it, so
the adapter remembers the signatures of the calls it returned (by tool call id, in memory, the
most recent few thousand) and sends them back; for calls it does not know (another model's,
another process's) it sends Google's documented validator-skipping placeholder instead.

Responses: ``candidates[0].content.parts`` text (thought parts skipped) and ``functionCall``
parts -> ``tool_calls`` with generated ids; ``finishReason`` STOP -> ``stop`` (``tool_calls``
when the answer calls a function), MAX_TOKENS -> ``length``, SAFETY / RECITATION / BLOCKLIST /
PROHIBITED_CONTENT / SPII / IMAGE_SAFETY -> ``content_filter``, others -> ``stop``. A prompt
the API blocks (``promptFeedback.blockReason``, no candidates) is answered as an empty
``content_filter`` completion rather than an error: the call succeeded and its prompt tokens
were billed, and OpenAI clients already handle ``content_filter``. Usage: ``promptTokenCount``
(+ ``toolUsePromptTokenCount``) -> prompt, ``candidatesTokenCount`` + ``thoughtsTokenCount``
-> completion (OpenAI counts reasoning tokens as completion tokens), ``totalTokenCount``.

Embeddings: ``gemini`` uses ``:batchEmbedContents`` (100 texts a call; the API reports no token
counts, so they are estimated); ``vertex`` uses ``:predict`` (250 texts a call, one for
``gemini-embedding-*`` models, which accept one instance per request; token counts from
``statistics.token_count``). ``dimensions`` -> ``outputDimensionality``.

Docs used:
- https://ai.google.dev/api/generate-content (generateContent, streamGenerateContent, responses)
- https://ai.google.dev/api/caching#Content (Content, Part, FunctionCall, FunctionResponse)
- https://ai.google.dev/gemini-api/docs/function-calling (tools, toolConfig modes)
- https://ai.google.dev/gemini-api/docs/thought-signatures (signatures, skip placeholder)
- https://ai.google.dev/gemini-api/docs/file-input-methods (inline data, external https URLs)
- https://ai.google.dev/api/embeddings (embedContent, batchEmbedContents)
- https://ai.google.dev/api (x-goog-api-key authentication)
- https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/inference (Vertex)
- https://cloud.google.com/vertex-ai/docs/reference/rest/v1/GenerationConfig
- https://cloud.google.com/vertex-ai/docs/reference/rest/v1/Schema
- https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api
- https://cloud.google.com/vertex-ai/generative-ai/docs/embeddings/get-text-embeddings (limits)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from httpx_sse import ServerSentEvent

from router.providers._base import (
    ProviderContext,
    SharedClientProvider,
    UpstreamError,
    UpstreamRejected,
)
from router.providers._gemini_schema import Incompatible, gemini_schema
from router.providers._kit import (
    MALFORMED,
    ChunkStream,
    FinishReasons,
    call_id,
    completion_id,
    config_error,
    estimate_usage,
    relay,
    resolve_api_key,
    usage_of,
)
from router.providers._settings import Settings
from router.providers.http_io import error_for_status, open_stream, send_json, sse_events
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    FunctionCall,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    Usage,
    encode_vector,
    message_text,
)

GEMINI_ENDPOINT = "https://generativelanguage.googleapis.com"
GEMINI_API_VERSION = "v1beta"
VERTEX_API_VERSION = "v1"
BATCH_EMBED_MAX = 100  # batchEmbedContents: at most 100 requests in one batch
VERTEX_PREDICT_MAX = 250  # Vertex text embeddings: at most 250 input texts per request
VERTEX_EMBED_CONCURRENCY = 4  # parallel predict calls for one-text-per-call models
# Google's documented placeholder for function calls the model did not sign (thought-signatures).
SKIP_SIGNATURE = "skip_thought_signature_validator"
SIGNATURE_MEMORY = 4096  # tool call ids whose signatures we keep

FINISH_REASONS = FinishReasons({
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
})


class GeminiSettings(Settings):
    """The common fields and ``api_version`` (the API's path version, default ``v1beta``)."""

    api_version: str = ""


class VertexSettings(GeminiSettings):
    """Vertex AI also needs the GCP ``project`` and ``region`` (location)."""

    project: str = ""
    region: str = ""


class GeminiProvider(SharedClientProvider):
    """The Gemini API (``generativelanguage.googleapis.com``) with an API key."""

    name = "gemini"

    def __init__(self, settings: GeminiSettings, ctx: ProviderContext, auth: dict[str, str]):
        self._settings = settings
        self._ctx = ctx
        self._headers = {**settings.headers, **auth}
        self._signatures: OrderedDict[str, str] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: GeminiSettings, ctx: ProviderContext) -> GeminiProvider:
        if settings.api_key or settings.api_key_env:  # explicit: no fallback
            return cls(settings, ctx, {"x-goog-api-key": resolve_api_key(settings, "")})
        key = os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY", "")
        if not key:
            raise config_error("gemini", "no API key; set GEMINI_API_KEY (or GOOGLE_API_KEY) "
                                         "or the deployment's api_key_env")
        return cls(settings, ctx, {"x-goog-api-key": key})

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(model={self._settings.model!r})"

    # --- endpoints (overridden for Vertex AI) ---------------------------------------------

    def _model_url(self, model: str, method: str) -> str:
        base = (self._settings.endpoint or GEMINI_ENDPOINT).rstrip("/")
        version = self._settings.api_version or GEMINI_API_VERSION
        return f"{base}/{version}/{_resource(model)}:{method}"

    # --- chat -----------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        model = self._settings.upstream_model(request.model)
        data = await send_json(self._ctx.client(), self.name,
                               self._model_url(model, "generateContent"),
                               body=self._body(request), headers=self._headers)
        if not isinstance(data, dict):
            raise UpstreamError(f"{self.name} upstream answered with an unexpected body")
        turn = _Turn(self, request)
        turn.read(data)
        turn.check_finished()
        finish = turn.finish_for_answer
        tool_calls = [ToolCall(id=c["id"], function=FunctionCall(name=c["name"],
                                                                 arguments=c["arguments"]))
                      for c in turn.calls] or None
        text = "".join(turn.answer)
        content = text if text or not (tool_calls or finish == "content_filter") else None
        message = AssistantMessage(role="assistant", content=content, tool_calls=tool_calls)
        return ChatCompletion(
            id=_completion_id(data), created=int(time.time()), model=request.model,
            choices=[Choice(index=0, message=message, finish_reason=finish)],
            usage=turn.answer_usage())

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        model = self._settings.upstream_model(request.model)
        body = self._body(request)
        turn = _Turn(self, request)
        async with open_stream(self._ctx.client(), self.name,
                               self._model_url(model, "streamGenerateContent"),
                               body=body, headers=self._headers,
                               params={"alt": "sse"}) as response:
            for chunk in turn.role():
                yield chunk
            async for chunk in relay(sse_events(self.name, response), turn):
                yield chunk

    # --- embeddings -----------------------------------------------------------------------

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        model = self._settings.upstream_model(request.model)
        texts = request.texts
        url = self._model_url(model, "batchEmbedContents")
        vectors: list[Any] = []
        for start in range(0, len(texts), BATCH_EMBED_MAX):
            batch = texts[start:start + BATCH_EMBED_MAX]
            requests = []
            for text in batch:
                one: dict[str, Any] = {"model": _resource(model),
                                       "content": {"parts": [{"text": text}]}}
                if request.dimensions:
                    one["outputDimensionality"] = request.dimensions
                requests.append(one)
            data = await send_json(self._ctx.client(), self.name, url,
                                   body={"requests": requests}, headers=self._headers)
            embeddings = data.get("embeddings") if isinstance(data, dict) else None
            if not isinstance(embeddings, list) or len(embeddings) != len(batch):
                raise UpstreamError(f"{self.name} upstream answered batchEmbedContents without "
                                    "one embedding per text")
            vectors.extend(_values(self.name, e) for e in embeddings)
        tokens = sum(self._ctx.count_tokens(t) for t in texts)  # the API reports none
        return _embeddings_response(request, vectors, tokens)

    # --- request translation --------------------------------------------------------------

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        system, contents = self._contents(request.messages)
        if not contents:
            raise UpstreamRejected("Gemini needs at least one user or assistant message; "
                                   "this request has only system messages")
        body: dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        if request.tools:
            body["tools"] = [{"functionDeclarations": [_declaration(t.function)
                                                       for t in request.tools]}]
            if request.tool_choice is not None:
                body["toolConfig"] = {"functionCallingConfig": _calling_config(request.tool_choice)}
        config = _generation_config(request)
        if config:
            body["generationConfig"] = config
        return body

    def _contents(self, messages: list[Message]) -> tuple[list[dict], list[dict]]:
        system: list[dict] = []
        contents: list[dict] = []
        names: dict[str, str] = {}  # tool call id -> function name, for tool results
        for m in messages:
            if m.role in ("system", "developer"):
                if text := message_text(m):
                    system.append({"text": text})
                continue
            if m.role == "user":
                role, parts = "user", self._user_parts(m)
            elif m.role == "assistant":
                role, parts = "model", self._model_parts(m, names)
            else:
                role, parts = "user", [_function_response(m, names)]
            if not parts:
                continue  # Gemini refuses a content with no parts
            if contents and contents[-1]["role"] == role:
                contents[-1]["parts"].extend(parts)
            else:
                contents.append({"role": role, "parts": parts})
        return system, contents

    def _user_parts(self, m: Message) -> list[dict]:
        if isinstance(m.content, str):
            return [{"text": m.content}] if m.content else []
        parts: list[dict] = []
        for p in m.content or []:
            if isinstance(p, TextPart):
                if p.text:
                    parts.append({"text": p.text})
            elif isinstance(p, ImagePart):
                parts.append(self._image_part(p.image_url.url))
        return parts

    def _model_parts(self, m: Message, names: dict[str, str]) -> list[dict]:
        parts: list[dict] = []
        if text := message_text(m):
            parts.append({"text": text})
        for i, call in enumerate(m.tool_calls or []):
            names[call.id] = call.function.name
            part: dict[str, Any] = {"functionCall": {"name": call.function.name,
                                                     "args": _arguments(call)}}
            signature = self._signatures.get(call.id)
            if signature:
                part["thoughtSignature"] = signature
            elif i == 0:  # the model signs the first call of a turn; unknown: skip validation
                part["thoughtSignature"] = SKIP_SIGNATURE
            parts.append(part)
        return parts

    def _image_part(self, url: str) -> dict[str, Any]:
        if url.startswith("data:"):
            return {"inlineData": _inline_data(url)}
        scheme = urlsplit(url).scheme.lower()
        if scheme == "https":
            part: dict[str, Any] = {"fileUri": url}
            if mime := _guess_mime(url):
                part["mimeType"] = mime
            return {"fileData": part}
        if scheme == "gs":
            raise UpstreamRejected("the Gemini API does not read gs:// URIs directly; send the "
                                   "image as a data: URL or an https URL (or use Vertex AI)")
        raise UpstreamRejected(f"the Gemini API takes images as data: URLs or https URLs, not "
                               f"{scheme or 'this'} URLs")

    def _remember(self, call_id: str, signature: str) -> None:
        self._signatures[call_id] = signature
        while len(self._signatures) > SIGNATURE_MEMORY:
            self._signatures.popitem(last=False)


class VertexProvider(GeminiProvider):
    """Gemini on Vertex AI: a project and region, an operator-supplied OAuth access token."""

    name = "vertex"

    _settings: VertexSettings

    @classmethod
    def from_settings(cls, settings: GeminiSettings, ctx: ProviderContext) -> VertexProvider:
        if not isinstance(settings, VertexSettings):
            raise TypeError("VertexProvider takes VertexSettings")
        missing = [f for f in ("project", "region") if not getattr(settings, f)]
        if missing:
            raise config_error("vertex", f"set the deployment's {' and '.join(missing)} (the "
                                         "GCP project id and location, e.g. us-central1 or "
                                         "global)")
        token = resolve_api_key(settings, "GOOGLE_ACCESS_TOKEN")
        return cls(settings, ctx, {"Authorization": f"Bearer {token}"})

    def _model_url(self, model: str, method: str) -> str:
        d = self._settings
        host = ("https://aiplatform.googleapis.com" if d.region == "global"
                else f"https://{d.region}-aiplatform.googleapis.com")
        base = (d.endpoint or host).rstrip("/")
        version = d.api_version or VERTEX_API_VERSION
        return (f"{base}/{version}/projects/{d.project}/locations/{d.region}/publishers/google/"
                f"models/{model.removeprefix('models/')}:{method}")

    def _image_part(self, url: str) -> dict[str, Any]:
        if url.startswith("data:"):
            return {"inlineData": _inline_data(url)}
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("gs", "http", "https"):
            raise UpstreamRejected(f"Vertex AI takes images as data: URLs, gs:// URIs or "
                                   f"http(s) URLs, not {scheme or 'this'} URLs")
        mime = _guess_mime(url)
        if not mime:  # Vertex requires fileData.mimeType; we will not fetch to find out
            raise UpstreamRejected("Vertex AI needs the image's MIME type: use a URL ending in "
                                   ".png, .jpg, .webp ... or send the image as a data: URL")
        return {"fileData": {"fileUri": url, "mimeType": mime}}

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        model = self._settings.upstream_model(request.model)
        texts = request.texts
        url = self._model_url(model, "predict")
        size = 1 if model.removeprefix("models/").startswith("gemini-embedding") \
            else VERTEX_PREDICT_MAX
        batches = [texts[i:i + size] for i in range(0, len(texts), size)]
        gate = asyncio.Semaphore(VERTEX_EMBED_CONCURRENCY)

        async def predict(batch: list[str]) -> tuple[list[Any], int]:
            body: dict[str, Any] = {"instances": [{"content": t} for t in batch]}
            if request.dimensions:
                body["parameters"] = {"outputDimensionality": request.dimensions}
            async with gate:
                data = await send_json(self._ctx.client(), self.name, url, body=body,
                                       headers=self._headers)
            predictions = data.get("predictions") if isinstance(data, dict) else None
            if not isinstance(predictions, list) or len(predictions) != len(batch):
                raise UpstreamError(f"{self.name} upstream answered predict without one "
                                    "prediction per text")
            vectors, tokens = [], 0
            for text, p in zip(batch, predictions, strict=True):
                emb = p.get("embeddings") if isinstance(p, dict) else None
                vectors.append(_values(self.name, emb))
                stats = emb.get("statistics") if isinstance(emb, dict) else None
                count = stats.get("token_count") if isinstance(stats, dict) else None
                tokens += int(count) if isinstance(count, int | float) \
                    else self._ctx.count_tokens(text)
            return vectors, tokens

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                tasks = [group.create_task(predict(b)) for b in batches]
        except ExceptionGroup as group_error:  # callers expect one ProviderError
            raise group_error.exceptions[0] from None
        vectors = [v for t in tasks for v in t.result()[0]]
        return _embeddings_response(request, vectors, sum(t.result()[1] for t in tasks))


# --- response reading ----------------------------------------------------------------------


class _Turn(ChunkStream):
    """The answer read so far from one or more GenerateContentResponse objects. As the
    stream translator, each streamed response's new text and calls become chunks."""

    def __init__(self, provider: GeminiProvider, request: ChatRequest):
        super().__init__(provider.name, request, provider._ctx.count_tokens)
        self._provider = provider
        self.answer: list[str] = []  # the text parts, in order
        self.calls: list[dict[str, str]] = []  # id, name, arguments (a JSON string)
        self.reason: str | None = None  # Gemini's finishReason
        self.blocked = False
        self.metadata: dict[str, Any] | None = None

    def feed(self, event: ServerSentEvent) -> list[ChatCompletionChunk]:
        if not event.data.strip():
            return []
        texts_before, calls_before = len(self.answer), len(self.calls)
        self.read(_decode_event(self.provider, event.data))
        out = [self.content(piece) for piece in self.answer[texts_before:]]
        for call in self.calls[calls_before:]:  # each call comes whole
            out += self.tool_chunks(self.tools.whole(call["name"], call["arguments"],
                                                     call["id"]))
        return out

    def end(self) -> list[ChatCompletionChunk]:
        self.check_finished()
        self.usage = self.answer_usage()
        return [self.finish(self.finish_for_answer), self.usage_chunk()]

    def read(self, data: dict[str, Any]) -> None:
        """Take in one GenerateContentResponse."""
        try:
            self._read(data)
        except MALFORMED as exc:  # a field missing or of an unexpected type
            raise UpstreamError(f"{self.provider} upstream answered with an unexpected "
                                f"body: {type(exc).__name__}") from None

    def _read(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("usageMetadata"), dict):
            self.metadata = data["usageMetadata"]  # cumulative: the latest is the total
        candidates = data.get("candidates") or []
        if not candidates:
            feedback = data.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self.blocked = True
            return
        candidate = candidates[0]
        if not isinstance(candidate, dict):
            raise UpstreamError(f"{self.provider} upstream answered an invalid candidate")
        content = candidate.get("content") or {}
        for part in content.get("parts") or []:
            if not isinstance(part, dict) or part.get("thought"):
                continue  # thought summaries are not the answer
            if isinstance(part.get("text"), str) and part["text"]:
                self.answer.append(part["text"])
            elif isinstance(part.get("functionCall"), dict):
                self._call(part)
        if candidate.get("finishReason"):
            self.reason = candidate["finishReason"]

    def _call(self, part: dict[str, Any]) -> None:
        fc = part["functionCall"]
        new_id = call_id()
        if isinstance(part.get("thoughtSignature"), str):
            self._provider._remember(new_id, part["thoughtSignature"])
        self.calls.append({"id": new_id, "name": str(fc.get("name", "")),
                           "arguments": json.dumps(fc.get("args") or {}, ensure_ascii=False)})

    def check_finished(self) -> None:
        if self.reason is None and not self.blocked:
            raise UpstreamError(f"{self.provider} upstream answered without a finish "
                                "reason (no candidates, or the stream was cut short)")

    @property
    def finish_for_answer(self) -> str:
        if self.blocked and self.reason is None:
            return "content_filter"
        return FINISH_REASONS(self.reason, bool(self.calls))

    def answer_usage(self) -> Usage:
        try:
            return self._usage()
        except MALFORMED as exc:  # e.g. a count that is null or not a number
            raise UpstreamError(f"{self.provider} upstream answered unusable "
                                f"usageMetadata: {type(exc).__name__}") from None

    def _usage(self) -> Usage:
        m = self.metadata or {}
        estimate = estimate_usage(self.count_tokens, self.request, "".join(self.answer),
                                  [(c["name"], c["arguments"]) for c in self.calls])
        if "promptTokenCount" in m:
            prompt = int(m["promptTokenCount"]) + int(m.get("toolUsePromptTokenCount", 0))
        else:  # absent from the answer: estimate
            prompt = estimate.prompt_tokens
        if "candidatesTokenCount" in m or "thoughtsTokenCount" in m:
            completion = int(m.get("candidatesTokenCount", 0)) + int(m.get("thoughtsTokenCount", 0))
        elif "promptTokenCount" in m:
            completion = 0  # e.g. a blocked prompt: nothing generated
        else:
            completion = estimate.completion_tokens
        return usage_of(prompt, completion, int(m.get("totalTokenCount", 0)))


def _decode_event(provider: str, data: str) -> dict[str, Any]:
    try:
        decoded = json.loads(data)
    except ValueError:
        raise UpstreamError(f"{provider} upstream sent a stream event that is not JSON") from None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        # An error after the 200 (e.g. overloaded mid-answer): map its code like a status.
        code = decoded["error"].get("code")
        status = code if isinstance(code, int) and code >= 400 else 502
        raise error_for_status(provider, status, data.encode(), {})
    if not isinstance(decoded, dict):
        raise UpstreamError(f"{provider} upstream sent an unexpected stream event")
    return decoded


def _completion_id(data: dict[str, Any]) -> str:
    rid = data.get("responseId")
    return completion_id(rid if isinstance(rid, str) else "")


# --- request pieces ------------------------------------------------------------------------


def _resource(model: str) -> str:
    """The Gemini API's resource name: ``models/{id}`` (``tunedModels/...`` kept as is)."""
    return model if "/" in model else f"models/{model}"


def _inline_data(url: str) -> dict[str, str]:
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise UpstreamRejected("image data: URLs must be base64 (data:<mime>;base64,<data>)")
    mime = header.removeprefix("data:").removesuffix(";base64") or "image/jpeg"
    return {"mimeType": mime, "data": data}


def _guess_mime(url: str) -> str | None:
    mime, _ = mimetypes.guess_type(urlsplit(url).path)
    return mime


def _arguments(call: ToolCall) -> dict[str, Any]:
    raw = call.function.arguments.strip() or "{}"
    try:
        args = json.loads(raw)
    except ValueError:
        raise UpstreamRejected(f"tool call {call.id!r}: arguments are not valid JSON") from None
    if not isinstance(args, dict):
        raise UpstreamRejected(f"tool call {call.id!r}: arguments must be a JSON object")
    return args


def _function_response(m: Message, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(m.tool_call_id or "") or m.name
    if not name:
        raise UpstreamRejected(f"tool message {m.tool_call_id!r} answers no earlier assistant "
                               "tool call; Gemini needs the function's name")
    text = message_text(m)
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    # ``response`` must be an object; other results go under "output", as Google recommends.
    response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": {"name": name, "response": response}}


def _declaration(fn: Any) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": fn.name}
    if fn.description:
        decl["description"] = fn.description
    params = fn.parameters
    # An OBJECT schema with no properties is refused; a function without inputs omits it.
    if params and (params.get("properties") or params.get("type") not in (None, "object")):
        try:
            decl["parameters"] = gemini_schema(params)
        except Incompatible as exc:
            raise UpstreamRejected(f"tool {fn.name!r}: its parameters schema cannot be "
                                   f"expressed in Gemini's schema subset ({exc})") from None
    return decl


def _calling_config(choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise UpstreamRejected("tool_choice must be none, auto, required or "
                                   '{"type": "function", "function": {"name": ...}}')
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    return {"mode": {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]}


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.output_limit is not None:
        config["maxOutputTokens"] = request.output_limit
    if request.stop:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) \
            else list(request.stop)
    if request.seed is not None:
        config["seed"] = request.seed
    if request.presence_penalty is not None:
        config["presencePenalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        config["frequencyPenalty"] = request.frequency_penalty
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        schema = (fmt.json_schema or {}).get("schema") if fmt.type == "json_schema" else None
        if isinstance(schema, dict) and schema:
            # Incompatible: plain JSON mode, the model held to JSON but not to the schema.
            with contextlib.suppress(Incompatible):
                config["responseSchema"] = gemini_schema(schema)
    return config


# --- embeddings ----------------------------------------------------------------------------


def _values(provider: str, embedding: Any) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, dict) else None
    if not isinstance(values, list):
        raise UpstreamError(f"{provider} upstream answered an embedding without values")
    return values


def _embeddings_response(request: EmbeddingsRequest, vectors: list[Any],
                         tokens: int) -> EmbeddingsResponse:
    data = [Embedding(index=i, embedding=encode_vector(v, request.encoding_format))
            for i, v in enumerate(vectors)]
    return EmbeddingsResponse(data=data, model=request.model,
                              usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


__all__ = ["GeminiProvider", "VertexProvider"]
