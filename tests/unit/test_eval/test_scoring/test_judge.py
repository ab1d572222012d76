"""The judge scorers against scripted judges behind an ``httpx.MockTransport``: a gateway
answering in OpenAI's chat-completion shape, with its cost header."""

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from eval.scoring import (
    Judge,
    JudgeError,
    judge_absolute,
    judge_pairwise,
    parse_rating,
    parse_verdict,
)

QUESTION = "What is the capital of Australia?"
GOOD = "Canberra is the capital of Australia."
WEAK = "Sydney, I think."


class ScriptedGateway:
    """Answers each chat completion with ``script(prompt)``; records what it was sent."""

    def __init__(self, script: Callable[[str], str], cost: str | None = "0.00125",
                 usage: dict | None = None) -> None:
        self.script, self.cost, self.requests = script, cost, []
        self.usage = usage if usage is not None else {"prompt_tokens": 300,
                                                      "completion_tokens": 40}

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request, body))
        prompt = body["messages"][-1]["content"]
        headers = {"x-contextforge-cost-usd": self.cost} if self.cost is not None else {}
        return httpx.Response(200, headers=headers, json={
            "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.script(prompt)}}],
            "usage": self.usage})

    @property
    def prompts(self) -> list[str]:
        return [body["messages"][-1]["content"] for _, body in self.requests]


def judged(gateway: ScriptedGateway, scorer, *args, **judge_kw):
    async def main():
        transport = httpx.MockTransport(gateway.handler)
        async with httpx.AsyncClient(transport=transport) as client:
            judge = Judge(client, "http://gateway.test/", "judge-model", **judge_kw)
            return await scorer(judge, *args)
    return asyncio.run(main())


def fair(prompt: str) -> str:
    """Prefers whichever assistant said Canberra."""
    a = prompt.index("[The Start of Assistant A's Answer]")
    b = prompt.index("[The Start of Assistant B's Answer]")
    better = "A" if "Canberra" in prompt[a:b] else "B"
    return f"Assistant {better} names the right city. Final verdict: [[{better}]]"


# --- absolute -----------------------------------------------------------------------------

def test_absolute_rating_becomes_a_score_with_its_cost_and_tokens():
    gw = ScriptedGateway(lambda p: "The answer is correct and concise.\n\nRating: [[7]]")
    score = judged(gw, judge_absolute, QUESTION, GOOD)
    assert score.value == pytest.approx(6 / 9)
    assert score.detail == "rated 7/10 by judge-model"
    assert (score.cost_usd, score.input_tokens, score.output_tokens) == (0.00125, 300, 40)
    assert score.judgements == ["The answer is correct and concise.\n\nRating: [[7]]"]
    (request, body), = gw.requests
    assert request.url == "http://gateway.test/v1/chat/completions"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert QUESTION in gw.prompts[0] and GOOD in gw.prompts[0]
    assert 'Rating: [[5]]' in gw.prompts[0]  # the format the template asks for


def test_absolute_extremes_map_to_zero_and_one():
    assert judged(ScriptedGateway(lambda p: "[[1]]"), judge_absolute, QUESTION, WEAK).value == 0
    assert judged(ScriptedGateway(lambda p: "[[10]]"), judge_absolute, QUESTION, GOOD).value == 1


@pytest.mark.parametrize("garbage", ["I refuse to rate this.", "Rating: [[11]]", "Rating: [[0]]",
                                     ""])
def test_unparseable_rating_is_no_score_not_zero(garbage):
    score = judged(ScriptedGateway(lambda p: garbage), judge_absolute, QUESTION, GOOD)
    assert score.value is None
    assert score.detail.startswith("no rating in the judge's output")
    assert score.cost_usd == 0.00125  # the call was paid for all the same


@pytest.mark.parametrize(("text", "rating"), [
    ("Rating: [[7]]", 7), ("[[ 8 ]]", 8), ("Rating: [[7.5]]", 7.5), ("[[8/10]]", 8),
    ("Rating: 6", 6), ("Rating: 6/10", 6), ("rating: [9]", 9),
    ('Use "[[rating]]", e.g. "Rating: [[5]]". My rating: [[3]]', 3),
    ("no number", None), ("[[12]]", None),
])
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


def test_braces_in_question_or_answer_reach_the_judge_verbatim():
    gw = ScriptedGateway(lambda p: "[[5]]")
    judged(gw, judge_absolute, "Format {name}?", "Use f'{name}' and {0}")
    assert "Format {name}?" in gw.prompts[0] and "Use f'{name}' and {0}" in gw.prompts[0]


def test_api_key_is_sent_as_bearer():
    gw = ScriptedGateway(lambda p: "[[5]]")
    judged(gw, judge_absolute, QUESTION, GOOD, api_key="cf-key")
    assert gw.requests[0][0].headers["authorization"] == "Bearer cf-key"


# --- pairwise -----------------------------------------------------------------------------

def test_pairwise_asks_twice_with_positions_swapped():
    gw = ScriptedGateway(fair)
    score = judged(gw, judge_pairwise, QUESTION, GOOD, WEAK)
    assert score.value == 1.0
    assert score.detail == ("answer as A: [[A]] (win); answer as B: [[B]] (win) "
                            "-> consistent win")
    orders = sorted((p.index(GOOD) < p.index(WEAK)) for p in gw.prompts)
    assert orders == [False, True]  # once first, once second
    assert all(QUESTION in p for p in gw.prompts)
    assert judged(ScriptedGateway(fair), judge_pairwise, QUESTION, WEAK, GOOD).value == 0.0


def test_an_order_biased_judge_cancels_out():
    score = judged(ScriptedGateway(lambda p: "Assistant A is better. [[A]]"), judge_pairwise,
                   QUESTION, GOOD, WEAK)
    assert score.value == 0.5
    assert score.detail == ("answer as A: [[A]] (win); answer as B: [[A]] (loss) "
                            "-> inconsistent, counted as a tie")


def test_a_consistent_tie_is_a_half():
    score = judged(ScriptedGateway(lambda p: "Both are fine. [[C]]"), judge_pairwise,
                   QUESTION, GOOD, GOOD)
    assert score.value == 0.5 and score.detail.endswith("-> consistent tie")


def test_pairwise_garbage_is_no_score():
    replies = iter(["[[A]]", "I cannot decide between them."])
    score = judged(ScriptedGateway(lambda p: next(replies)), judge_pairwise, QUESTION, GOOD,
                   WEAK)
    assert score.value is None and score.detail.endswith("-> no score")
    assert "no verdict (unparsed)" in score.detail


def test_pairwise_cost_and_tokens_sum_both_calls():
    calls = iter(["0.001", "0.0025"])

    class TwoPrices(ScriptedGateway):
        def handler(self, request):
            self.cost = next(calls)
            return super().handler(request)

    score = judged(TwoPrices(fair), judge_pairwise, QUESTION, GOOD, WEAK)
    assert score.cost_usd == pytest.approx(0.0035)
    assert (score.input_tokens, score.output_tokens) == (600, 80)
    assert len(score.judgements) == 2


@pytest.mark.parametrize(("text", "verdict"), [
    ("[[A]]", "A"), ("verdict: [[b]]", "B"), ("[[ C ]]", "C"),
    ('"[[A]]" if A is better, "[[B]]" if B... Final verdict: [[B]]', "B"),
    ("A is better", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


# --- accounting and failures --------------------------------------------------------------

def test_missing_cost_header_or_usage_counts_as_zero():
    gw = ScriptedGateway(lambda p: "[[6]]", cost=None, usage={})
    score = judged(gw, judge_absolute, QUESTION, GOOD)
    assert (score.cost_usd, score.input_tokens, score.output_tokens) == (0.0, 0, 0)


def test_http_errors_and_bad_bodies_raise_judge_error():
    def failing(status: int, content: bytes):
        async def main():
            transport = httpx.MockTransport(lambda r: httpx.Response(status, content=content))
            async with httpx.AsyncClient(transport=transport) as client:
                await judge_absolute(Judge(client, "http://gw", "j"), QUESTION, GOOD)
        return main

    with pytest.raises(JudgeError, match="HTTP 502"):
        asyncio.run(failing(502, b'{"error": "upstream down"}')())
    with pytest.raises(JudgeError, match="not a chat completion"):
        asyncio.run(failing(200, b"<html>")())
    with pytest.raises(JudgeError, match="no choices"):
        asyncio.run(failing(200, b'{"choices": []}')())


def test_transport_failure_raises_judge_error_chained():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    async def main():
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            await judge_pairwise(Judge(client, "http://gw", "j"), QUESTION, GOOD, WEAK)

    with pytest.raises(JudgeError, match="ConnectError") as info:
        asyncio.run(main())
    assert isinstance(info.value.__cause__, httpx.ConnectError)
