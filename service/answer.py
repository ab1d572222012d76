"""An answer as the traffic log keeps it: its text and tool calls, from a completion or from a
stream's deltas (``traffic.log_answers``), so ``contextforge eval score`` can score it later."""

from __future__ import annotations

import json

from router.wire.openai import ChatCompletion, ChatCompletionChunk


class Answer:
    """The answer's text and tool calls, gathered as it arrives."""

    __slots__ = ("calls", "finish_reason", "parts")

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}  # a stream's tool calls arrive by index

    @classmethod
    def of(cls, completion: ChatCompletion) -> Answer:
        out = cls()
        if completion.choices:
            out.finish_reason = completion.choices[0].finish_reason
            message = completion.choices[0].message
            if message.content:
                out.parts.append(message.content)
            for i, call in enumerate(message.tool_calls or ()):
                out.calls[i] = {"id": call.id, "name": call.function.name,
                                "arguments": call.function.arguments}
        return out

    def add(self, chunk: ChatCompletionChunk) -> None:
        """One stream chunk's deltas (the first choice's: requests ask for one)."""
        if not chunk.choices:
            return
        if chunk.choices[0].finish_reason:
            self.finish_reason = chunk.choices[0].finish_reason
        delta = chunk.choices[0].delta
        if delta.content:
            self.parts.append(delta.content)
        for d in delta.tool_calls or ():
            call = self.calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            if d.id:
                call["id"] = d.id
            if d.function.name:
                call["name"] += d.function.name
            if d.function.arguments:
                call["arguments"] += d.function.arguments

    @property
    def text(self) -> str | None:
        return "".join(self.parts) if self.parts else None

    @property
    def tool_calls_json(self) -> str | None:
        if not self.calls:
            return None
        return json.dumps([self.calls[i] for i in sorted(self.calls)], ensure_ascii=False)
