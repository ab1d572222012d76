"""The ``/v1/messages`` translation functions, without a server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import msgspec
import pytest

from router.wire import anthropic as aw
from router.wire.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatRequest,
    Choice,
    ChunkChoice,
    Delta,
    FunctionCall,
    FunctionCallDelta,
    ImagePart,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from service.anthropic_api import (
    anthropic_sse,
    from_completion,
    to_chat_request,
)
from service.errors import BadRequest, UpstreamFailed, decode_body


def request(**body) -> ChatRequest:
    return to_chat_request(decode_body(aw.REQUEST_DECODER, json.dumps(
        {"model": "auto", "max_tokens": 64, **body}).encode()))


def test_system_sampling_and_metadata():
    chat = request(system=[{"type": "text", "text": "Be brief."},
                           {"type": "text", "text": "Use SI."}],
                   messages=[{"role": "user", "content": "hi"}], temperature=0.3, top_p=0.8,
                   top_k=5, stop_sequences=["END"], metadata={"user_id": "u1"}, stream=True)
    assert chat.messages[0].role == "system" and chat.messages[0].content == "Be brief.\nUse SI."
    assert chat.messages[1].content == "hi"
    assert (chat.max_tokens, chat.temperature, chat.top_p) == (64, 0.3, 0.8)
    assert chat.stop == ["END"] and chat.user == "u1" and chat.stream is True


def test_tool_results_come_first_as_tool_messages():
    chat = request(tools=[{"name": "f", "input_schema": {"type": "object"}}],
                   tool_choice={"type": "any", "disable_parallel_tool_use": True},
                   messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "and?"},
            {"type": "tool_result", "tool_use_id": "t1", "is_error": True, "content": [
                {"type": "text", "text": "boom"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}])
    roles = [m.role for m in chat.messages]
    assert roles == ["user", "assistant", "tool", "user", "user"]
    assistant = chat.messages[1]
    assert assistant.content == "Calling."  # thinking dropped
    assert assistant.tool_calls == [ToolCall(id="t1", function=FunctionCall("f", '{"a": 1}'))]
    tool = chat.messages[2]
    assert tool.tool_call_id == "t1" and tool.content == "Error: boom"
    (image,) = chat.messages[3].content  # the result's image follows as a user message
    assert isinstance(image, ImagePart) and image.image_url.url == "https://x/y.png"
    assert chat.messages[4].content == "and?"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.tools[0].function.parameters == {"type": "object"}


def test_base64_image_becomes_a_data_url():
    chat = request(messages=[{"role": "user", "content": [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif",
                                     "data": "R0lG"}}]}])
    text, image = chat.messages[0].content
    assert text == TextPart("see") and image.image_url.url == "data:image/gif;base64,R0lG"


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}})])
def test_tool_choice(choice, expected):
    chat = request(messages=[{"role": "user", "content": "x"}], tool_choice=choice,
                   tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert chat.tool_choice == expected and chat.parallel_tool_calls is None


def test_structured_output_is_a_json_schema_response_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    chat = request(messages=[{"role": "user", "content": "x"}],
                   output_config={"format": {"type": "json_schema", "schema": schema},
                                  "effort": "high"})
    assert chat.response_format.type == "json_schema"
    assert chat.response_format.json_schema["schema"] == schema


def test_images_in_assistant_turns_are_refused():
    with pytest.raises(BadRequest) as exc:
        request(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x"}}]}])
    assert exc.value.param == "messages[1].content[0]"


def test_from_completion_maps_content_and_finish():
    completion = ChatCompletion(
        id="chatcmpl-abc", created=0, model="gpt-4o",
        choices=[Choice(index=0, finish_reason="tool_calls", message=AssistantMessage(
            role="assistant", content="Sure.", tool_calls=[
                ToolCall(id="c1", function=FunctionCall("f", '{"x": 2}')),
                ToolCall(id="c2", function=FunctionCall("g", "not json"))]))],
        usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10))
    msg = msgspec.to_builtins(from_completion(completion))
    assert msg == {"id": "msg_abc", "type": "message", "role": "assistant", "model": "gpt-4o",
                   "content": [{"type": "text", "text": "Sure."},
                               {"type": "tool_use", "id": "c1", "name": "f",
                                "input": {"x": 2}},
                               {"type": "tool_use", "id": "c2", "name": "g",
                                "input": {"arguments": "not json"}}],
                   "stop_reason": "tool_use", "stop_sequence": None,
                   "usage": {"input_tokens": 7, "output_tokens": 3}}


def _chunk(delta: Delta | None = None, finish: str | None = None,
           usage: Usage | None = None) -> ChatCompletionChunk:
    choices = [] if delta is None else [ChunkChoice(index=0, delta=delta, finish_reason=finish)]
    return ChatCompletionChunk(id="chatcmpl-1", created=0, model="m", choices=choices,
                               usage=usage)


def _events(chunks: list[ChatCompletionChunk], fail: Exception | None = None) -> list[dict]:
    async def source() -> AsyncIterator[ChatCompletionChunk]:
        for c in chunks:
            yield c
        if fail is not None:
            raise fail

    async def collect() -> bytes:
        return b"".join([e async for e in anthropic_sse(source(), input_tokens=4)])

    out = []
    for frame in asyncio.run(collect()).decode().split("\n\n")[:-1]:
        name, data = frame.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        out.append(payload)
    return out


def test_sse_text_then_tool_calls():
    call = ToolCallDelta(index=0, id="c1", type="function",
                         function=FunctionCallDelta(name="f", arguments=""))
    events = _events([
        _chunk(Delta(role="assistant", content="")),
        _chunk(Delta(content="Hi")),
        _chunk(Delta(tool_calls=[call])),
        _chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(
            arguments='{"a":'))])),
        _chunk(Delta(tool_calls=[ToolCallDelta(index=0, function=FunctionCallDelta(
            arguments=" 1}"))])),
        _chunk(Delta(), "tool_calls"),
        _chunk(usage=Usage(prompt_tokens=9, completion_tokens=5, total_tokens=14))])
    # Tool calls are written whole at the end: one start, one delta, one stop each.
    assert [e["type"] for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop"]
    assert events[0]["message"]["usage"] == {"input_tokens": 4, "output_tokens": 0}
    assert events[0]["message"]["id"] == "msg_1"
    assert events[4] == {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "c1", "name": "f", "input": {}}}
    assert events[5]["delta"]["partial_json"] == '{"a": 1}'
    assert events[7]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[7]["usage"] == {"output_tokens": 5, "input_tokens": 9}


def test_sse_interleaved_parallel_tool_calls_stay_inside_their_blocks():
    def piece(i: int, args: str, name: str | None = None) -> ChatCompletionChunk:
        return _chunk(Delta(tool_calls=[ToolCallDelta(
            index=i, id=f"c{i}" if name else None, type="function" if name else None,
            function=FunctionCallDelta(name=name, arguments=args))]))

    events = _events([
        _chunk(Delta(role="assistant", content="")),
        piece(0, '{"city": ', "weather"), piece(1, '{"tz": ', "time"),
        piece(0, '"Oslo"}'), piece(1, '"CET"}'),
        _chunk(Delta(), "tool_calls"),
        _chunk(usage=Usage(prompt_tokens=9, completion_tokens=5, total_tokens=14))])
    open_blocks: set[int] = set()
    args: dict[int, str] = {}
    for e in events:
        if e["type"] == "content_block_start":
            open_blocks.add(e["index"])
        elif e["type"] == "content_block_delta":
            assert e["index"] in open_blocks  # never a delta outside its block
            args[e["index"]] = args.get(e["index"], "") + e["delta"]["partial_json"]
        elif e["type"] == "content_block_stop":
            open_blocks.remove(e["index"])
    assert args == {0: '{"city": "Oslo"}', 1: '{"tz": "CET"}'}


def test_sse_failure_mid_stream_is_an_error_event():
    events = _events([_chunk(Delta(role="assistant", content="")), _chunk(Delta(content="a"))],
                     fail=UpstreamFailed("upstream provider error: gone", 503))
    assert [e["type"] for e in events] == ["message_start", "content_block_start",
                                           "content_block_delta", "error"]
    assert events[-1]["error"] == {"type": "overloaded_error",
                                   "message": "upstream provider error: gone"}
