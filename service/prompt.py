"""What the router reads from a chat request: the prompt text and the hard requirements.

The router's encoder reads 256 tokens, keeping the head and the tail of long texts. What decides
a route is the task (the system prompt's opening) and the question (the last user turn), not the
conversation's middle, so the routing prompt is exactly those two, text parts only.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.providers import ChatRequest, has_images, message_text

# ~100-150 tokens: enough for a system prompt's task statement, leaving room for the question.
SYSTEM_HEAD_CHARS = 600


@dataclass(frozen=True, slots=True)
class Requirements:
    """Hard constraints a candidate model must meet."""

    capabilities: frozenset[str]
    max_output_tokens: int | None


def routing_prompt(request: ChatRequest) -> str:
    """The system/developer prompt's head plus the last user turn's text."""
    system = "\n".join(message_text(m) for m in request.messages
                       if m.role in ("system", "developer")).strip()
    last_user = next((message_text(m) for m in reversed(request.messages) if m.role == "user"),
                     "").strip()
    head = system[:SYSTEM_HEAD_CHARS]
    return f"{head}\n\n{last_user}" if head and last_user else head or last_user


def conversation_text(request: ChatRequest) -> str:
    """Every message's text, for counting the prompt's tokens against context windows."""
    return "\n".join(message_text(m) for m in request.messages)


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
