"""What the router reads from a chat request, and what it refuses before routing."""

import pytest

from router.providers import REQUEST_DECODER
from router.requirements import (
    SYSTEM_HEAD_CHARS,
    conversation_texts,
    requirements,
    routing_prompt,
)


def req(**body):
    import msgspec

    return REQUEST_DECODER.decode(msgspec.json.encode({"model": "auto", **body}))


def test_routing_prompt_is_system_head_plus_last_user_turn_text_parts_only():
    r = req(messages=[
        {"role": "system", "content": "You are a careful math tutor. " + "x" * 5000},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "this picture?"}]},
    ])
    prompt = routing_prompt(r)
    head, _, question = prompt.partition("\n\n")
    assert head.startswith("You are a careful math tutor.") and len(head) == SYSTEM_HEAD_CHARS
    assert question == "What is in\nthis picture?"
    assert "first" not in prompt and "base64" not in prompt


def test_routing_prompt_without_system_or_user():
    assert routing_prompt(req(messages=[{"role": "user", "content": "  hi  "}])) == "hi"
    assert routing_prompt(req(messages=[{"role": "developer", "content": "be terse"}])) == (
        "be terse")
    assert routing_prompt(req(messages=[{"role": "assistant", "content": None}])) == ""


def test_conversation_text_counts_every_turn():
    r = req(messages=[{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
                      {"role": "assistant", "content": "c"}])
    assert conversation_texts(r) == ["a", "b", "c"]


def test_requirements_from_images_tools_json_and_max_tokens():
    image = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    tools = [{"type": "function", "function": {"name": "f"}}]
    r = req(messages=[{"role": "user", "content": image}], tools=tools,
            response_format={"type": "json_schema", "json_schema": {"name": "s"}},
            max_tokens=100, max_completion_tokens=50)
    needs = requirements(r)
    assert needs.capabilities == {"vision", "tools", "json"}
    assert needs.max_output_tokens == 50  # the newer field wins
    plain = requirements(req(messages=[{"role": "user", "content": "hi"}], max_tokens=7,
                             response_format={"type": "text"}))
    assert plain.capabilities == frozenset() and plain.max_output_tokens == 7


def test_prompt_tokens_are_counted_in_pieces_and_abandoned_at_the_cap():
    from router.requirements import COUNT_CHUNK_CHARS, PromptTooLong, count_prompt_tokens

    calls: list[int] = []

    def count(pieces: list[str]) -> list[int]:
        calls.append(len(pieces))
        return [len(p.split()) for p in pieces]

    assert count_prompt_tokens(count, ["a b c", "d e"], limit=10) == 5
    calls.clear()
    huge = "w " * (COUNT_CHUNK_CHARS * 50)  # 100 pieces, 3.3M words
    with pytest.raises(PromptTooLong) as err:
        count_prompt_tokens(count, [huge], limit=100_000)
    assert "100000" in str(err.value)
    assert sum(calls) == 4  # the first four pieces already passed the cap: no more were read
    assert max(calls) == 1  # one piece per call: one core


def test_routing_prompt_keeps_a_long_turns_head_and_tail():
    from router.requirements import TURN_HEAD_CHARS, TURN_TAIL_CHARS

    turn = "START " + "x" * 5_000_000 + " END"
    prompt = routing_prompt(req(messages=[{"role": "user", "content": turn}]))
    assert prompt.startswith("START") and prompt.endswith("END")
    assert len(prompt) <= TURN_HEAD_CHARS + TURN_TAIL_CHARS + 3


def test_one_exclusion_rule_with_its_reasons():
    from router.config import ModelEntry
    from router.requirements import Requirements, excluded_because

    m = ModelEntry(name="m", input_price=1, output_price=1, context_window=100,
                   capabilities=["tools"])
    needs = Requirements(frozenset({"tools"}), 20)
    assert excluded_because(m, needs, 80) is None
    assert excluded_because(m, needs, 81) == "81 + 20 tokens exceed its context window 100"
    assert excluded_because(m, Requirements(frozenset({"vision"}), None), 1) == "it lacks vision"
    assert excluded_because(m, needs, 1, allowed={"other"}) == "not in the allowed models"
    emb = ModelEntry(name="e", input_price=1, output_price=0, context_window=100,
                     capabilities=["embeddings"])
    assert "embeddings model" in excluded_because(emb, Requirements(frozenset(), None), 1)


@pytest.mark.parametrize("body,param", [
    ({"tools": [{"type": "function", "function": {"name": "a"}}],
      "tool_choice": {"type": "function", "function": {"name": "b"}}},
     "tool_choice.function.name"),
    ({"tool_choice": {"type": "function"}}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}},
     "response_format.json_schema.schema"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/cat.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]}]},
     "messages[0].content[0].image_url.url"),
])
def test_check_request_names_the_field(body, param):
    from router.requirements import InvalidRequest, check_request

    with pytest.raises(InvalidRequest) as err:
        check_request(req(**{"messages": [{"role": "user", "content": "hi"}], **body}))
    assert err.value.param == param


def test_check_request_accepts_well_formed_requests():
    from router.requirements import check_request

    check_request(req(
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}],
        tools=[{"type": "function", "function": {"name": "a"}}],
        tool_choice={"type": "function", "function": {"name": "a"}},
        response_format={"type": "json_schema",
                          "json_schema": {"name": "x", "schema": {"type": "object"}}}))
