"""What the router reads from a chat request, and what it refuses before routing."""

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
