"""What routing reads from a chat request, and the one rule for which models can serve it.

- ``routing_prompt``: the text the router embeds. The router's encoder reads 256 tokens, keeping
  the head and the tail of long texts. What decides a route is the task (the system prompt's
  opening) and the question (the last user turn), not the conversation's middle, so the routing
  prompt is exactly those two, text parts only, cut to a bounded length first: a multi-megabyte
  turn must not cost the event loop more than the encoder will ever read.
- ``requirements``: the hard constraints (capabilities, answer length) a candidate must meet.
- ``count_prompt_tokens``: the conversation's tokens, counted in bounded chunks and abandoned as
  soon as they pass the cap (``PromptTooLong``), so the cost of an oversized prompt is bounded by
  the cap, not by the body.
- ``excluded_because``: why a model cannot serve a request, in the words ``route --json``, the
  422 answer and the traffic log all use.
- ``check_request``: requests an upstream would reject (a ``tool_choice`` naming no declared
  tool, a broken image data URL, a ``json_schema`` format without a schema) fail here, before
  routing, with the field's path (``InvalidRequest``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from router.config import ModelEntry
from router.wire.openai import ChatRequest, ImagePart, has_images, message_text

# ~100-150 tokens: enough for a system prompt's task statement, leaving room for the question.
SYSTEM_HEAD_CHARS = 600
# The last user turn keeps its head and tail (the encoder keeps 32 head tokens and fills the
# rest from the end). 16k characters keeps every prompt of the training data whole, so the
# surface features (word and number counts) a router reads are exact for them.
TURN_HEAD_CHARS = 4_000
TURN_TAIL_CHARS = 12_000
# Counting works on pieces this long (~16k tokens of English): a piece's tokenizer run is short
# and its memory is freed before the next one starts.
COUNT_CHUNK_CHARS = 65_536
# Past this many characters counting moves off the event loop: ~1 ms of tokenizer time on a
# slow host (8 KB took ~6 ms there), against ~0.1 ms for the hop to a thread.
OFF_LOOP_CHARS = 4_096


class InvalidRequest(ValueError):
    """The request is malformed in a way its schema cannot say; ``param`` names the field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class PromptTooLong(ValueError):
    """The prompt has more tokens than the route (or the server) accepts."""

    def __init__(self, limit: int):
        super().__init__(f"the prompt has more than {limit} tokens, the most this route accepts "
                         "(max_prompt_tokens in the config); shorten the conversation")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Requirements:
    """Hard constraints a candidate model must meet."""

    capabilities: frozenset[str]
    max_output_tokens: int | None


def _cut(text: str, head: int, tail: int) -> str:
    return text if len(text) <= head + tail else f"{text[:head]}\n…\n{text[-tail:]}"


def routing_prompt(request: ChatRequest) -> str:
    """The system/developer prompt's head plus the last user turn's text (its head and tail
    when it is very long)."""
    system = "\n".join(message_text(m)[:SYSTEM_HEAD_CHARS] for m in request.messages
                       if m.role in ("system", "developer")).strip()
    last_user = next((message_text(m) for m in reversed(request.messages) if m.role == "user"),
                     "")
    last_user = _cut(last_user, TURN_HEAD_CHARS, TURN_TAIL_CHARS).strip()
    head = system[:SYSTEM_HEAD_CHARS]
    return f"{head}\n\n{last_user}" if head and last_user else head or last_user


def conversation_texts(request: ChatRequest) -> list[str]:
    """Every message's text, what the chosen model reads, for counting its tokens."""
    return [t for t in (message_text(m) for m in request.messages) if t]


def requirements(request: ChatRequest) -> Requirements:
    """Capabilities the request needs: images -> vision, tools -> tools, JSON format -> json."""
    caps = set()
    if has_images(request):
        caps.add("vision")
    # A tool_choice of "none" still sends tool definitions the model must accept.
    if request.tools:
        caps.add("tools")
    fmt = request.response_format
    if fmt is not None and fmt.type in ("json_object", "json_schema"):
        caps.add("json")
    return Requirements(frozenset(caps), request.output_limit)


def needs_thread(texts: Sequence[str]) -> bool:
    """Whether counting these texts is long enough work to move off the event loop."""
    return sum(len(t) for t in texts) > OFF_LOOP_CHARS


def count_prompt_tokens(count_batch: Callable[[list[str]], list[int]], texts: Sequence[str],
                        limit: int) -> int:
    """The texts' tokens, or ``PromptTooLong`` once they pass ``limit``.

    Long texts are counted a piece at a time and abandoned at the limit, so an oversized prompt
    costs about ``limit`` tokens of tokenizer work and one piece's memory. A word split between
    two pieces may count one token more: the count errs towards the limit by a token per 64k
    characters.
    """
    total = 0
    pieces: list[str] = []
    for text in texts:
        for start in range(0, len(text), COUNT_CHUNK_CHARS):
            pieces.append(text[start:start + COUNT_CHUNK_CHARS])
    if len(pieces) <= 4:  # short: one call, which tokenizers may spread over the cores
        total = sum(count_batch(pieces))
    else:  # long: a piece at a time, on one core, so the event loop keeps the other
        for piece in pieces:
            total += count_batch([piece])[0]
            if total > limit:
                break
    if total > limit:
        raise PromptTooLong(limit)
    return total


def excluded_because(model: ModelEntry, needs: Requirements, input_tokens: int,
                     allowed: Collection[str] | None = None) -> str | None:
    """Why ``model`` cannot serve a request with these needs, or ``None`` when it can."""
    if allowed is not None and model.name not in allowed:
        return "not in the allowed models"
    if "embeddings" in model.capabilities:
        return "it is an embeddings model (POST /v1/embeddings)"
    missing = sorted(needs.capabilities - set(model.capabilities))
    if missing:
        return f"it lacks {', '.join(missing)}"
    out = needs.max_output_tokens or 0
    if input_tokens + out > model.context_window:
        return (f"{input_tokens} + {out} tokens exceed its context window "
                f"{model.context_window}")
    return None


_DATA_URL = re.compile(r"^data:(?P<type>image/[\w.+-]+);base64,(?P<data>.*)$", re.S)


def _check_image(url: str, where: str) -> None:
    if not url.startswith("data:"):
        if not url.startswith(("https://", "http://")):
            raise InvalidRequest(f"{where}: an image URL must be https://, http:// or a "
                                 "base64 data URL (data:image/png;base64,...)", where)
        return
    m = _DATA_URL.match(url)
    if m is None:
        raise InvalidRequest(f"{where}: a data URL must look like data:image/<type>;base64,"
                             "<data>", where)
    try:
        base64.b64decode(m["data"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: the data URL's base64 payload is not valid base64",
                             where) from None
    if not m["data"]:
        raise InvalidRequest(f"{where}: the data URL has no image data", where)


def check_request(request: ChatRequest) -> None:
    """``InvalidRequest`` for what the schema lets through but every upstream refuses."""
    names = [t.function.name for t in request.tools or []]
    choice = request.tool_choice
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequest('tool_choice must be "none", "auto", "required" or '
                                 '{"type": "function", "function": {"name": ...}}',
                                 "tool_choice")
        if name not in names:
            raise InvalidRequest(f"tool_choice names the function {name!r}, which is not in "
                                 f"tools ({', '.join(names) or 'none declared'})",
                                 "tool_choice.function.name")
    elif choice == "required" and not names:
        raise InvalidRequest('tool_choice "required" needs at least one tool in tools',
                             "tool_choice")
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema":
        spec = fmt.json_schema
        if not spec or not isinstance(spec.get("schema"), dict):
            raise InvalidRequest("a json_schema response format needs json_schema.schema "
                                 "(a JSON Schema object)", "response_format.json_schema.schema")
    for i, m in enumerate(request.messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if isinstance(part, ImagePart):
                    _check_image(part.image_url.url, f"messages[{i}].content[{j}].image_url.url")
