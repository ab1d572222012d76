"""What a cached answer may answer: the keys of a chat request.

Two keys, both digests of a canonical encoding (msgspec JSON of the request with fields in a
fixed order, ``None`` omitted), so equal requests give equal keys whatever their JSON spacing
or key order:

- the **exact key**: everything the answer depends on — who may see it (the tenant, and the
  user under ``scope: user``), the requested ``model`` (a concrete model, a route or ``auto``),
  the whole message list, tools and tool choice, the response format and every generation
  parameter. Streaming and the cache options themselves are not part of it: a stream may be
  served from a non-streamed answer and back.
- the **scope key** of the semantic tier: the same, except the last user turn, which is what
  the semantic tier compares by meaning. Every earlier turn (by hash), the system prompt, the
  tools, the response format, the model choice and the generation parameters must match
  exactly, so a different system prompt or tool set, or the next turn of a conversation or
  an agent loop, never meets an entry made for another.

``cacheable`` says whether a request may be served from or stored in the cache at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

import msgspec

from router.wire.openai import CacheControl, ChatRequest, Message, TextPart, message_text

Scope = Literal["tenant", "user"]
_ENCODE = msgspec.json.Encoder(order="deterministic")


class _Canonical(msgspec.Struct, frozen=True, omit_defaults=True):
    """The fields of a request an answer depends on, in a fixed order."""

    tenant: str
    user: str | None
    model: str
    messages: list[Message]
    tools: object = None
    tool_choice: object = None
    parallel_tool_calls: bool | None = None
    response_format: object = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: object = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


def _digest(value: object) -> str:
    return hashlib.blake2b(_ENCODE.encode(value), digest_size=16).hexdigest()


def _plain(message: Message) -> Message:
    """``message`` with a content of one text part as that text: the two forms ask the same,
    so they share a key."""
    content = message.content
    if isinstance(content, list) and len(content) == 1 and isinstance(content[0], TextPart):
        return msgspec.structs.replace(message, content=content[0].text)
    return message


def _canonical(request: ChatRequest, tenant: str, scope: Scope,
               messages: list[Message]) -> _Canonical:
    return _Canonical(
        tenant=tenant, user=request.user if scope == "user" else None, model=request.model,
        messages=[_plain(m) for m in messages], tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=request.response_format, max_tokens=request.output_limit,
        temperature=request.temperature, top_p=request.top_p, stop=request.stop,
        seed=request.seed, presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty)


def exact_key(request: ChatRequest, tenant: str, scope: Scope = "tenant") -> str:
    """The exact tier's key of ``request`` for ``tenant`` (and its user under ``user``)."""
    return _digest(_canonical(request, tenant, scope, list(request.messages)))


def scope_key(request: ChatRequest, tenant: str, scope: Scope = "tenant") -> str:
    """The semantic tier's scope: everything but the last message, which must be the user's."""
    return _digest(_canonical(request, tenant, scope, list(request.messages[:-1])))


# The semantic tier compares short questions: the verifier was fitted on QQP's, 99.9% of which
# are at most 53 words. A longer last turn (a pasted document and a question about it) is left
# to the exact tier: there one changed word in a long shared text ("necessary" against
# "unnecessary") barely moves any similarity, and the pair features grow with its length.
MAX_SEMANTIC_WORDS = 64
MAX_SEMANTIC_CHARS = 1024


def last_user_text(request: ChatRequest) -> str | None:
    """The text the semantic tier compares, or None when it must not compare this request by
    meaning: the last message is not a user turn (a tool result in an agent loop), has no
    text, carries anything but text (two photos asked "Who is this?" are two questions), or is
    longer than the short questions the verifier knows."""
    last = request.messages[-1]
    if last.role != "user":
        return None
    if isinstance(last.content, list) and any(not isinstance(p, TextPart)
                                              for p in last.content):
        return None
    text = message_text(last).strip()
    if not text or len(text) > MAX_SEMANTIC_CHARS or len(text.split()) > MAX_SEMANTIC_WORDS:
        return None
    return text


class Verdict(msgspec.Struct, frozen=True):
    """Whether a request may read (``lookup``) and write (``store``) the cache, and why not."""

    lookup: bool
    store: bool
    reason: str = ""


def cacheable(request: ChatRequest, options: CacheControl | None,
              deterministic_only: bool = True) -> Verdict:
    """The cache's rule for one request: only deterministic requests (temperature 0, or a
    per-request ``store`` opt-in) are kept; ``no_cache`` skips the lookup, ``no_store`` the
    write. A request whose last message is not the user's (a tool result) is never answered
    from the cache: its answer depends on what the tool returned in this very turn."""
    opts = options or CacheControl()
    if request.messages[-1].role != "user":
        return Verdict(False, False, "the last message is not a user turn")
    # A tool's result in this turn (after the model's last message): the answer depends on
    # what the tool returned this time (Anthropic puts results and the user's words in one
    # message, which arrives as a tool message and a user message).
    for m in reversed(request.messages):
        if m.role == "assistant":
            break
        if m.role == "tool":
            return Verdict(False, False, "the turn carries a tool result")
    deterministic = request.temperature == 0 or not deterministic_only
    if not deterministic and not opts.store:
        return Verdict(False, False, "not deterministic (temperature is not 0); opt in "
                                     "with cache.store")
    return Verdict(lookup=not opts.no_cache, store=not opts.no_store,
                   reason="no_cache" if opts.no_cache else "")


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def header_options(headers: Mapping[str, str]) -> CacheControl | None:
    """Cache options sent as HTTP headers: ``Cache-Control: no-cache | no-store | max-age=N``
    (the TTL to keep the answer; ``max-age=0`` keeps nothing, as it means no reuse),
    ``x-contextforge-cache-scope: tenant | user`` and ``x-contextforge-cache-store: true``
    (keep a non-deterministic request). ``ValueError`` naming the header for a value it cannot
    read; None when there are none."""
    fields: dict[str, object] = {}
    for part in (headers.get("cache-control") or "").split(","):
        name, _, value = part.strip().lower().partition("=")
        if name == "no-cache":
            fields["no_cache"] = True
        elif name == "no-store":
            fields["no_store"] = True
        elif name == "max-age":
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"Cache-Control max-age={value!r}: give seconds") from None
            if not 0 <= seconds <= 365 * 86400:
                raise ValueError(f"Cache-Control max-age={value}: give 0 to 31536000 seconds")
            if seconds == 0:
                fields["no_store"] = True
            else:
                fields["ttl"] = seconds
    scope = headers.get("x-contextforge-cache-scope")
    if scope is not None:
        if scope.strip().lower() not in ("tenant", "user"):
            raise ValueError(f"x-contextforge-cache-scope: {scope!r}: give tenant or user")
        fields["scope"] = scope.strip().lower()
    store = headers.get("x-contextforge-cache-store")
    if store is not None:
        flag = store.strip().lower()
        if flag not in _TRUE + _FALSE:
            raise ValueError(f"x-contextforge-cache-store: {store!r}: give true or false")
        fields["store"] = flag in _TRUE
    if not fields:
        return None
    return msgspec.convert(fields, CacheControl)


def with_header_options(request: ChatRequest, headers: Mapping[str, str]) -> ChatRequest:
    """``request`` with the cache options of its headers; the body's ``cache`` wins where both
    say something."""
    from_headers = header_options(headers)
    if from_headers is None:
        return request
    body = request.cache
    if body is None:
        return msgspec.structs.replace(request, cache=from_headers)
    merged = {**msgspec.structs.asdict(from_headers),
              **{k: v for k, v in msgspec.structs.asdict(body).items()
                 if v not in (None, False)}}
    return msgspec.structs.replace(request, cache=CacheControl(**merged))
