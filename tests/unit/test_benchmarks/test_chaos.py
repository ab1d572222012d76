"""The chaos benchmark's judgement of each answer and of when traffic left a deployment
(benchmarks/chaos.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from benchmarks.chaos import judge, one, shift


def judged(handler) -> dict:
    async def go() -> dict:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler),
                                     base_url="http://gw") as client:
            return await one(client, "c7")

    return asyncio.run(go())


def answer(text: str) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": text}}]})


@pytest.mark.parametrize(("response", "outcome", "why"), [
    (answer("echo: chaos question nonce=c7"), "answered", ""),
    (answer("echo: chaos question nonce=c71"), "lost", "misdelivered"),
    (answer("echo: chaos question"), "lost", "no nonce"),
    (httpx.Response(503, json={"error": {"code": "upstream_unavailable"}}), "clear_error",
     "503 upstream_unavailable"),
    (httpx.Response(502, text="Bad Gateway"), "lost", "HTTP 502"),
    (httpx.Response(429, json={"error": {"code": "rate_limited"}}), "lost", "HTTP 429"),
])
def test_each_answer_is_judged_by_its_own_nonce(response, outcome, why):
    r = judged(lambda request: response)
    assert (r["outcome"], r["why"]) == (outcome, why)


def test_no_answer_at_all_is_lost():
    def refuse(request):
        raise httpx.ReadTimeout("no answer", request=request)

    assert judged(refuse)["outcome"] == "lost"


def test_shift_is_the_last_dense_arrival_after_the_fault_starts():
    before = [i * 0.03 for i in range(100)]  # dense until 3 s
    probes = [5.0, 7.0]  # the breaker's half-open probes, sparse
    assert shift(before + probes, start=1.0, end=9.0, gap=0.5) == pytest.approx(1.94)
    assert shift(probes, start=1.0, end=9.0, gap=0.5) == 0.0  # never got traffic
    assert shift([i * 0.03 for i in range(300)], start=1.0, end=9.0, gap=0.5) is None
    # a half-open breaker's three trial calls in a row are not traffic; four are
    trials = [5.0, 5.05, 5.1]
    # (2.88 s: the last arrival with three more within 0.5 s)
    assert shift(before + trials, start=1.0, end=9.0, gap=0.5, burst=3) == pytest.approx(1.88)
    assert shift([*before, *trials, 5.15], start=1.0, end=9.0, gap=0.5,
                 burst=3) == pytest.approx(4.0)


def sse(*events: str) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"},
                          text="".join(f"data: {e}\n\n" for e in events))


DELTA = '{"choices": [{"delta": {"content": "echo: nonce=c7"}, "finish_reason": null}]}'
FINISH = '{"choices": [{"delta": {}, "finish_reason": "stop"}]}'


@pytest.mark.parametrize(("response", "outcome", "why"), [
    (sse(DELTA, FINISH, "[DONE]"), "answered", ""),
    (sse(DELTA), "lost", "truncated"),  # silently cut: the worst outcome
    (sse(DELTA, '{"error": {"code": "upstream_unavailable"}}', "[DONE]"), "clear_error",
     "error event upstream_unavailable"),
])
def test_a_stream_counts_only_when_whole(response, outcome, why):
    assert judge(response, "c7") == (outcome, why)
