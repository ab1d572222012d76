"""OpenAI's chat-completions wire format, and the many upstreams that speak it.

One adapter, ``OpenAICompatProvider``, serves every provider name below; a per-name
``Preset`` says where the upstream lives, how it authenticates and which documented quirks
its API has. The request is already OpenAI-shaped, so the adapter re-encodes the
``ChatRequest`` with the upstream model id and applies the preset's quirks.

Names, default endpoints (the SDK's ``base_url``) and key variables:

- ``openai``: https://api.openai.com/v1, ``OPENAI_API_KEY``.
- ``azure``: ``{endpoint}/openai/deployments/{model}/...?api-version=...`` with the
  ``api-key`` header, ``AZURE_OPENAI_API_KEY``; the endpoint is required.
- ``mistral``: https://api.mistral.ai/v1, ``MISTRAL_API_KEY``.
- ``together``: https://api.together.xyz/v1, ``TOGETHER_API_KEY``.
- ``perplexity``: https://api.perplexity.ai, ``PERPLEXITY_API_KEY``.
- ``groq``: https://api.groq.com/openai/v1, ``GROQ_API_KEY``.
- ``deepseek``: https://api.deepseek.com, ``DEEPSEEK_API_KEY``.
- ``vllm``, ``tgi``, ``ollama``, ``openai-compatible``: the endpoint is required (the server's
  OpenAI base URL, e.g. http://localhost:8000/v1); a key is sent only when the deployment
  sets ``api_key`` or ``api_key_env`` (an ambient variable never leaks to such a host).

Embeddings (``embed``): openai, azure, mistral, together, vllm, ollama, openai-compatible.

Quirks applied (each from the provider's own docs or SDK; anything unverified is passed
through untouched and left for the upstream to accept or refuse):

- OpenAI: ``max_completion_tokens`` always (``max_tokens`` is deprecated and refused by
  reasoning models). Reasoning models (``o1``/``o3``/``o4``/``gpt-5`` ids): ``system`` becomes
  ``developer``; ``temperature``, ``top_p`` and the penalties are dropped (refused by them).
- Azure OpenAI: api-version ``deployment.api_version`` or ``2024-10-21`` (the latest GA
  inference spec, which knows ``max_tokens`` only and no ``developer`` role); reasoning
  deployments (named like the models above) get ``max_completion_tokens``, which needs an
  ``api_version`` of ``2024-12-01-preview`` or later.
- Every upstream but OpenAI: ``developer`` messages are sent as ``system`` (no other API
  documents the role).
- Mistral: ``seed`` -> ``random_seed``; ``tool_choice`` ``"required"`` -> ``"any"``;
  ``user``, ``stream_options`` and message ``name`` (except on tool results) dropped — its
  request schema has none of them and it refuses unknown fields; usage arrives on the last
  chunk unasked. Embeddings: ``dimensions`` -> ``output_dimension``.
- Groq: message ``name`` dropped (documented to fail with 400).
- Perplexity: ``stop``, ``seed``, ``user``, ``parallel_tool_calls``, ``stream_options`` and a
  ``json_object`` response format dropped (only ``json_schema`` is documented); tools are
  refused with ``UpstreamRejected``.
- DeepSeek: ``seed``, ``user`` and ``parallel_tool_calls`` dropped; ``json_schema`` is sent as
  ``json_object`` (the only JSON mode it documents); image parts are refused with
  ``UpstreamRejected`` (its chat API is text-only).
- TGI: ``response_format`` becomes its grammar ``{"type": "json_object", "value": schema}``;
  ``user`` dropped; no ``stream_options`` (usage comes on the last chunk when it sends it).
- Together: no ``stream_options`` (usage comes on the last chunk); embeddings without
  ``dimensions`` (refused with ``UpstreamRejected``).
- Ollama: ``user`` dropped (listed unsupported).
- Embeddings: ``encoding_format`` is passed where documented (OpenAI, Azure, vLLM,
  openai-compatible); elsewhere floats are fetched and base64-encoded here when asked.
  ``dimensions`` goes to OpenAI, Azure, vLLM, Ollama and openai-compatible (Mistral:
  ``output_dimension``); ``user`` to OpenAI, Azure and openai-compatible only.

Streaming asks for ``stream_options.include_usage`` where supported (OpenAI, Azure, Groq,
DeepSeek, vLLM, Ollama, openai-compatible). Usage is taken from whichever chunk carries it
(also Groq's ``x_groq.usage``); when the upstream sends none it is estimated with
``ctx.count_tokens``. Upstream bodies are validated into msgspec structs, so a malformed body
is an ``UpstreamError``, never a crash. Tool-call deltas that arrive whole (Mistral) are split
into the OpenAI order: index/id/name first, then the arguments. Finish reasons are mapped to
OpenAI's (``model_length`` -> ``length``, TGI's ``eos_token`` / ``stop_sequence`` -> ``stop``;
``tool_calls`` whenever the answer carries tool calls).

Docs used:
https://platform.openai.com/docs/api-reference/chat/create
https://community.openai.com/t/developer-role-not-accepted-for-o1-o1-mini-o3-mini/1110750
https://learn.microsoft.com/azure/ai-foundry/openai/reference
https://github.com/Azure/azure-rest-api-specs (AzureOpenAI/inference/stable/2024-10-21)
https://github.com/mistralai/client-python (models/chatcompletionrequest.py, embeddingrequest.py)
https://console.groq.com/docs/openai
https://docs.perplexity.ai/guides (OpenAI compatibility)
https://api-docs.deepseek.com/api/create-chat-completion
https://huggingface.co/docs/text-generation-inference/basic_tutorials/using_guidance
https://docs.ollama.com/api/openai-compatibility
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from router.providers._base import (
    ProviderContext,
    SharedClientProvider,
    UpstreamError,
    UpstreamRejected,
)
from router.providers._kit import (
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
from router.providers._settings import BatchSettings, Settings
from router.providers.http_io import open_stream, send_json, sse_events
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
    ToolCall,
    ToolCallDelta,
    Usage,
    arguments_text,
    encode_vector,
    has_images,
)

AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane inference spec
_REASONING = re.compile(r"^(o\d|gpt-5)")  # OpenAI reasoning-model ids (and Azure names)
_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
FINISH_REASONS = FinishReasons(
    {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
     "content_filter": "content_filter", "function_call": "tool_calls",
     "model_length": "length", "eos_token": "stop", "stop_sequence": "stop",
     "eos": "stop", "end_turn": "stop", "max_tokens": "length"},
    missing="stop",
    failures={"error": (UpstreamError, "reported an error")})  # Mistral: generation failed

Body = dict[str, Any]


# The presets whose upstream has OpenAI's Files and Batches API, shape for shape.
NATIVE_BATCH = frozenset({"openai", "openai-compatible"})


class OpenAISettings(BatchSettings):
    """An OpenAI-compatible deployment reads the common fields, and may send batch lines to
    its upstream's own Batch API (``native_batch``: ``router.providers.openai_batches``)."""


class AzureSettings(Settings):
    """Azure OpenAI reads its ``api-version`` (default ``AZURE_DEFAULT_API_VERSION``); its
    batch API differs from OpenAI's (deployment types, global batch), so no ``native_batch``."""

    api_version: str = ""


# --- presets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preset:
    """What differs between upstreams that speak OpenAI's format."""

    base_url: str  # "" = the deployment must give its endpoint
    key_env: str  # "" = self-hosted: a key only when the deployment names one
    stream_usage: bool = True  # send stream_options.include_usage
    embeddings: bool = False
    embed_encoding: bool = False  # forwards encoding_format
    embed_dimensions: str | None = None  # the field carrying `dimensions`; None = unsupported
    embed_user: bool = False
    drop: frozenset[str] = frozenset()  # top-level fields the upstream refuses or lacks
    developer_role: bool = False  # the API knows the "developer" role
    adjust: Callable[[Body, ChatRequest, str], None] | None = None  # further quirks


def _mistral(body: Body, request: ChatRequest, model: str) -> None:
    if "seed" in body:
        body["random_seed"] = body.pop("seed")
    if body.get("tool_choice") == "required":
        body["tool_choice"] = "any"
    for m in body["messages"]:
        if m["role"] != "tool":
            m.pop("name", None)


def _groq(body: Body, request: ChatRequest, model: str) -> None:
    for m in body["messages"]:
        m.pop("name", None)


def _perplexity(body: Body, request: ChatRequest, model: str) -> None:
    if request.tools:
        raise UpstreamRejected("perplexity does not support tools (function calling)")
    body.pop("tool_choice", None)
    fmt = body.get("response_format")
    if fmt is not None and fmt["type"] != "json_schema":
        del body["response_format"]


def _deepseek(body: Body, request: ChatRequest, model: str) -> None:
    if has_images(request):
        raise UpstreamRejected("deepseek's chat API does not accept images")
    fmt = body.get("response_format")
    if fmt is not None and fmt["type"] == "json_schema":
        body["response_format"] = {"type": "json_object"}


def _tgi(body: Body, request: ChatRequest, model: str) -> None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        body.pop("response_format", None)
        return
    schema: Any = {"type": "object"}
    if fmt.type == "json_schema" and fmt.json_schema:
        schema = fmt.json_schema.get("schema", schema)
    body["response_format"] = {"type": "json_object", "value": schema}


_SELF_HOSTED = dict(base_url="", key_env="")
PRESETS: dict[str, Preset] = {
    "openai": Preset("https://api.openai.com/v1", "OPENAI_API_KEY", embeddings=True,
                     embed_encoding=True, embed_dimensions="dimensions", embed_user=True,
                     developer_role=True),
    "azure": Preset("", "AZURE_OPENAI_API_KEY", embeddings=True, embed_encoding=True,
                    embed_dimensions="dimensions", embed_user=True),
    "mistral": Preset("https://api.mistral.ai/v1", "MISTRAL_API_KEY", stream_usage=False,
                      embeddings=True, embed_dimensions="output_dimension",
                      drop=frozenset({"user"}), adjust=_mistral),
    "together": Preset("https://api.together.xyz/v1", "TOGETHER_API_KEY", stream_usage=False,
                       embeddings=True),
    "perplexity": Preset("https://api.perplexity.ai", "PERPLEXITY_API_KEY", stream_usage=False,
                         drop=frozenset({"stop", "seed", "user", "parallel_tool_calls"}),
                         adjust=_perplexity),
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY", adjust=_groq),
    "deepseek": Preset("https://api.deepseek.com", "DEEPSEEK_API_KEY",
                       drop=frozenset({"seed", "user", "parallel_tool_calls"}),
                       adjust=_deepseek),
    "vllm": Preset(**_SELF_HOSTED, embeddings=True, embed_encoding=True,
                   embed_dimensions="dimensions"),
    "tgi": Preset(**_SELF_HOSTED, stream_usage=False, drop=frozenset({"user"}), adjust=_tgi),
    "ollama": Preset(**_SELF_HOSTED, embeddings=True, embed_dimensions="dimensions",
                     drop=frozenset({"user"})),
    "openai-compatible": Preset(**_SELF_HOSTED, embeddings=True, embed_encoding=True,
                                embed_dimensions="dimensions", embed_user=True),
}


# --- upstream bodies (lenient: only what we read, so extra fields never fail) -------------


class _Usage(msgspec.Struct):
    # Some servers send null counts: an answer already streamed must not fail on its usage.
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    total_tokens: int | None = None

    def ours(self) -> Usage:
        return usage_of(self.prompt_tokens or 0, self.completion_tokens or 0, self.total_tokens)


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None  # Ollama sometimes sends an object


class _ToolCall(msgspec.Struct):
    function: _Function | None = None
    id: str | None = None
    index: int | None = None


class _Message(msgspec.Struct):
    content: str | list[Any] | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    id: str = ""
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    content: str | list[Any] | None = None
    tool_calls: list[_ToolCall] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Groq(msgspec.Struct):
    usage: _Usage | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    id: str = ""
    usage: _Usage | None = None
    x_groq: _Groq | None = None
    error: dict[str, Any] | str | None = None  # an error reported inside the stream


class _Vector(msgspec.Struct):
    embedding: list[float] | str
    index: int = 0


class _Embeddings(msgspec.Struct):
    data: list[_Vector]
    usage: _Usage | None = None


_CHUNK = msgspec.json.Decoder(_Chunk)


def _text(content: str | list[Any] | None) -> str:
    """Content as text: a string, or the text parts of a list (Mistral's content chunks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content
                   if isinstance(p, dict) and p.get("type", "text") == "text")


# --- the adapter ---------------------------------------------------------------------------


class OpenAIStreamTranslator(ChunkStream):
    """OpenAI-format stream events (each SSE ``data``) in, our chunks out."""

    def __init__(self, provider: str, request: ChatRequest, count_tokens: Callable[[str], int]):
        super().__init__(provider, request, count_tokens)
        self._ids: dict[str, int] = {}  # tool-call id -> our index
        self._slots: dict[int, int] = {}  # upstream index -> our latest index

    def feed(self, data: str) -> list[ChatCompletionChunk]:
        data = data.strip()
        if data == "[DONE]":
            self.done = True
        if self.done or not data:
            return []
        upstream = _decode_chunk(self.provider, data)
        if upstream.error is not None:
            detail = upstream.error.get("message", "") if isinstance(upstream.error, dict) \
                else upstream.error
            raise UpstreamError(f"{self.provider} upstream failed mid-stream: "
                                f"{str(detail)[:300]}")
        usage = upstream.usage or (upstream.x_groq.usage if upstream.x_groq else None)
        if usage is not None:
            self.usage = usage.ours()
        out: list[ChatCompletionChunk] = []
        for choice in upstream.choices[:1]:  # n == 1
            delta = choice.delta or _Delta()
            text = _text(delta.content)
            if text or not self.text:
                out.append(self.content(text))
            for call in delta.tool_calls or []:
                out.extend(self.tool_chunks(self._call_deltas(call)))
            if choice.finish_reason is not None and self.finish_reason is None:
                out.append(self.finish(FINISH_REASONS(choice.finish_reason, bool(self.tools),
                                                      provider=self.provider)))
        return out

    def _call_deltas(self, call: _ToolCall) -> list[ToolCallDelta]:
        """OpenAI-ordered pieces of one upstream tool-call delta.

        Our indexes are our own (0, 1, ... in order of appearance): some servers (vLLM's
        parsers, Mistral when it omits ``index``) send parallel calls all at index 0, told apart
        only by their ids, and the OpenAI SDK would merge such calls into one."""
        fn = call.function or _Function()
        if call.id and call.id in self._ids:  # a later piece that repeats its call's id
            index: int | None = self._ids[call.id]
        elif call.id and fn.name:  # a new id with a name starts a call, whatever its index
            index = None
        elif call.index is not None:
            index = self._slots.get(call.index)
        else:  # neither id nor index: a continuation of the latest call
            index = len(self.tools) - 1 if len(self.tools) else None
        pieces = []
        if index is None:
            index, first = self.tools.start(fn.name or "", call.id)
            self._slots[call.index if call.index is not None else index] = index
            if call.id:
                self._ids[call.id] = index
            pieces.append(first)
        return pieces + self.tools.extend(index, arguments_text(fn.arguments))


class OpenAICompatProvider(SharedClientProvider):
    """One deployment on an upstream that speaks OpenAI's chat-completions format."""

    def __init__(self, name: str, settings: OpenAISettings | AzureSettings,
                 ctx: ProviderContext):
        if name not in PRESETS:
            raise config_error(name, f"unknown OpenAI-compatible provider; "
                                     f"known: {', '.join(sorted(PRESETS))}")
        if getattr(settings, "native_batch", False) and name not in NATIVE_BATCH:
            raise config_error(name, "native_batch: only "
                                     f"{', '.join(sorted(NATIVE_BATCH))} deployments have "
                                     "OpenAI's Batch API")
        self.name = name
        self.preset = PRESETS[name]
        self.settings = settings
        self._ctx = ctx
        self._count = ctx.count_tokens
        base = (settings.endpoint or self.preset.base_url).rstrip("/")
        if not base:
            raise config_error(name, "no endpoint; set the deployment's endpoint (the "
                                     "server's OpenAI base URL, e.g. http://localhost:8000/v1)")
        self._base = base
        # Self-hosted servers get a key only when the deployment names one: an ambient
        # variable must never leak to an arbitrary endpoint.
        key = resolve_api_key(settings, self.preset.key_env,
                              required=bool(self.preset.key_env or settings.api_key_env))
        auth: dict[str, str] = {}
        if key:
            auth = {"api-key": key} if name == "azure" else {"Authorization": f"Bearer {key}"}
        self._headers = {**auth, **settings.headers}

    @classmethod
    def from_settings(cls, settings: OpenAISettings | AzureSettings, ctx: ProviderContext,
                      ) -> OpenAICompatProvider:
        return cls(settings.provider, settings, ctx)

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"OpenAICompatProvider({self.name!r}, endpoint={self._base!r})"

    # --- chat --------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> ChatCompletion:
        url, params = self._url(request.model, "chat/completions")
        data = await send_json(self._ctx.client(), self.name, url, body=self._body(request),
                               headers=self._headers, params=params)
        return self.completion(request, data)

    def completion(self, request: ChatRequest, data: Any) -> ChatCompletion:
        """An upstream chat-completion body (a live answer, or a line of its Batch API's
        output file) as ours."""
        try:
            upstream = msgspec.convert(data, _Completion)
        except msgspec.ValidationError as exc:
            raise UpstreamError(f"{self.name} upstream answered with an unusable body: "
                                f"{exc}") from None
        if not upstream.choices:
            raise UpstreamError(f"{self.name} upstream answered with no choices")
        choice = upstream.choices[0]
        calls = [ToolCall(id=c.id or call_id(), function=FunctionCall(
                     name=c.function.name or "", arguments=arguments_text(c.function.arguments)))
                 for c in choice.message.tool_calls or [] if c.function is not None]
        text = _text(choice.message.content)
        message = AssistantMessage(role="assistant", content=text if text or not calls else None,
                                   tool_calls=calls or None)
        usage = upstream.usage.ours() if upstream.usage else estimate_usage(
            self._count, request, text, [(c.function.name, c.function.arguments) for c in calls])
        finish = FINISH_REASONS(choice.finish_reason, bool(calls), provider=self.name)
        return ChatCompletion(
            id=upstream.id or completion_id(), created=int(time.time()), model=request.model,
            choices=[Choice(index=0, message=message, finish_reason=finish)], usage=usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatCompletionChunk]:
        url, params = self._url(request.model, "chat/completions")
        translator = OpenAIStreamTranslator(self.name, request, self._count)
        async with open_stream(self._ctx.client(), self.name, url,
                               body=self._body(request, stream=True), headers=self._headers,
                               params=params) as response:
            events = (event.data async for event in sse_events(self.name, response))
            async for chunk in relay(events, translator):
                yield chunk

    # --- embeddings --------------------------------------------------------------------

    async def embed(self, request: EmbeddingsRequest) -> EmbeddingsResponse:
        preset = self.preset
        if not preset.embeddings:
            raise UpstreamRejected(f"{self.name} does not serve embeddings")
        texts = request.texts
        body: Body = {"model": self.settings.upstream_model(request.model), "input": texts}
        if preset.embed_encoding:
            body["encoding_format"] = request.encoding_format
        if request.dimensions is not None:
            if preset.embed_dimensions is None:
                raise UpstreamRejected(f"{self.name} embeddings do not support `dimensions`")
            body[preset.embed_dimensions] = request.dimensions
        if request.user and preset.embed_user:
            body["user"] = request.user
        url, params = self._url(request.model, "embeddings")
        data = await send_json(self._ctx.client(), self.name, url, body=body,
                               headers=self._headers, params=params)
        try:
            upstream = msgspec.convert(data, _Embeddings)
        except msgspec.ValidationError as exc:
            raise UpstreamError(f"{self.name} upstream answered with an unusable body: "
                                f"{exc}") from None
        if len(upstream.data) != len(texts):
            raise UpstreamError(f"{self.name} upstream returned {len(upstream.data)} vectors "
                                f"for {len(texts)} inputs")
        vectors = sorted(upstream.data, key=lambda v: v.index)
        out = [Embedding(index=i, embedding=_vector(v.embedding, request.encoding_format))
               for i, v in enumerate(vectors)]
        if upstream.usage is not None:
            tokens = upstream.usage.prompt_tokens
        else:
            tokens = sum(self._count(t) for t in texts)
        return EmbeddingsResponse(data=out, model=request.model, usage=EmbeddingUsage(
            prompt_tokens=tokens, total_tokens=tokens))

    # --- for the Batch API (``router.providers.openai_batches``) --------------------------

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def auth_headers(self) -> dict[str, str]:
        return self._headers

    def request_body(self, request: ChatRequest) -> Body:
        """The upstream body of a (non-streaming) chat request, as ``complete`` sends it."""
        return self._body(request)

    # --- helpers -----------------------------------------------------------------------

    def _url(self, catalog_name: str, operation: str) -> tuple[str, dict[str, str] | None]:
        if isinstance(self.settings, AzureSettings):
            deployment = quote(self.settings.upstream_model(catalog_name), safe="")
            version = self.settings.api_version or AZURE_DEFAULT_API_VERSION
            return (f"{self._base}/openai/deployments/{deployment}/{operation}",
                    {"api-version": version})
        return f"{self._base}/{operation}", None

    def _body(self, request: ChatRequest, *, stream: bool = False) -> Body:
        """The upstream request: ours re-encoded, with the preset's quirks applied."""
        preset = self.preset
        body: Body = msgspec.to_builtins(request)
        model = self.settings.upstream_model(request.model)
        body["model"] = model
        body.pop("stream", None)
        body.pop("stream_options", None)
        body.pop("n", None)  # always 1 (the default)
        if stream:
            body["stream"] = True
            if preset.stream_usage:  # the gateway needs usage whatever the client asked
                body["stream_options"] = {"include_usage": True}
        limit = request.output_limit
        body.pop("max_tokens", None)
        body.pop("max_completion_tokens", None)
        reasoning = self.name in ("openai", "azure") and bool(_REASONING.match(model.lower()))
        if limit is not None:
            newer = self.name == "openai" or reasoning
            body["max_completion_tokens" if newer else "max_tokens"] = limit
        if reasoning:
            for name in _SAMPLING:
                body.pop(name, None)
        for m in body["messages"]:
            for part in m["content"] if isinstance(m.get("content"), list) else ():
                if part["type"] == "image_url" and part["image_url"].get("detail") is None:
                    part["image_url"].pop("detail", None)  # an enum upstream, never null
            if m["role"] == "developer" and not preset.developer_role:
                m["role"] = "system"
            elif m["role"] == "system" and reasoning and preset.developer_role:
                m["role"] = "developer"
        for name in preset.drop:
            body.pop(name, None)
        if preset.adjust is not None:
            preset.adjust(body, request, model)
        return body


def _decode_chunk(provider: str, data: str) -> _Chunk:
    try:
        return _CHUNK.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise UpstreamError(f"{provider} upstream sent an unusable stream event: "
                            f"{exc}") from None


def _vector(value: list[float] | str, encoding_format: str) -> list[float] | str:
    """The vector in the client's encoding, whichever one the upstream answered in."""
    if isinstance(value, str):
        if encoding_format == "base64":
            return value
        import numpy as np

        try:
            return np.frombuffer(base64.b64decode(value), dtype="<f4").tolist()
        except ValueError:
            raise UpstreamError("upstream sent an undecodable base64 embedding") from None
    return encode_vector(value, encoding_format)
