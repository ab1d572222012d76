"""LLM-as-judge scorers: a judge model, asked through the gateway, rates or compares answers.

The templates in ``prompts/`` follow MT-Bench's single-answer and pairwise judge prompts (Zheng
et al., 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"; FastChat, Apache-2.0):
a short explanation, then ``"Rating: [[7]]"`` or a verdict ``"[[A]]"``/``"[[B]]"``/``"[[C]]"``.

Every result carries what judging cost (the gateway's ``x-contextforge-cost-usd`` header, summed
over calls) and the judge's tokens, so a caller can account for it. A judge whose output cannot
be parsed gives ``value=None``, not 0: no score is not a bad score. A judge that cannot be
reached, or answers with an HTTP error, raises :class:`JudgeError`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from pathlib import Path

import httpx
import msgspec

PROMPTS = Path(__file__).with_name("prompts")
COST_HEADER = "x-contextforge-cost-usd"
_RATING = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_RATING_LOOSE = re.compile(r"(?i:rating)\s*[:=]?\s*\[?\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\]?")
_VERDICT = re.compile(r"\[\[\s*([ABCabc])\s*\]\]")


class JudgeError(Exception):
    """The judge could not be asked: the transport failed, the gateway answered with an HTTP
    error, or the body is not a chat completion."""


class JudgeScore(msgspec.Struct, frozen=True):
    """A judge's score in [0, 1] (None when its output could not be parsed), why, what the
    judging cost, and the judge's own words (one text per call)."""

    value: float | None
    detail: str
    cost_usd: float
    input_tokens: int
    output_tokens: int
    judgements: list[str] = []


class JudgeReply(msgspec.Struct, frozen=True):
    """One judge call: its text, its cost in USD (0.0 when the header is absent) and tokens."""

    text: str
    cost_usd: float
    input_tokens: int
    output_tokens: int


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


_DECODER = msgspec.json.Decoder(_Completion)


class Judge:
    """A judge model behind an OpenAI-compatible endpoint (the gateway itself).

    ``client`` is the caller's (it owns its life); requests go to
    ``{base_url}/v1/chat/completions`` with ``model`` and temperature 0.
    """

    def __init__(self, client: httpx.AsyncClient, base_url: str, model: str, *,
                 api_key: str | None = None, max_tokens: int = 1024) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.max_tokens = max_tokens

    async def ask(self, prompt: str) -> JudgeReply:
        """Send one user message; the judge's reply text, cost and tokens."""
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0, "max_tokens": self.max_tokens}
        headers = {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = f"{self.base_url}/v1/chat/completions"
        try:
            response = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge {self.model}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise JudgeError(f"judge {self.model} answered HTTP {response.status_code}: "
                             f"{response.text[:300]}")
        try:
            completion = _DECODER.decode(response.content)
        except msgspec.DecodeError as exc:
            raise JudgeError(f"judge {self.model}: not a chat completion: {exc}") from exc
        if not completion.choices:
            raise JudgeError(f"judge {self.model}: a chat completion with no choices")
        usage = completion.usage or _Usage()
        return JudgeReply(completion.choices[0].message.content or "",
                          _cost(response.headers.get(COST_HEADER)),
                          usage.prompt_tokens, usage.completion_tokens)


@functools.cache
def template(name: str) -> str:
    """The judge prompt ``prompts/<name>.txt`` (``absolute`` or ``pairwise``)."""
    return (PROMPTS / f"{name}.txt").read_text()


def parse_rating(text: str) -> float | None:
    """The 1-10 rating in a judge's output (``"Rating: [[7]]"``, ``"[[8/10]]"``, ``"Rating: 6"``);
    the last one given, since judges may quote the format before rating. None if absent or out
    of range."""
    found = _RATING.findall(text) or _RATING_LOOSE.findall(text)
    if not found:
        return None
    rating = float(found[-1])
    return rating if 1 <= rating <= 10 else None


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"C"`` (tie): the last ``[[X]]`` of a judge's output (it may
    restate the format first), or None."""
    found = _VERDICT.findall(text)
    return found[-1].upper() if found else None


async def judge_absolute(judge: Judge, question: str, answer: str) -> JudgeScore:
    """The judge rates the answer 1-10; the score is ``(rating - 1) / 9``."""
    reply = await judge.ask(template("absolute").format(question=question, answer=answer))
    rating = parse_rating(reply.text)
    if rating is None:
        return _result(None, f"no rating in the judge's output: {_clip(reply.text)!r}", [reply])
    return _result((rating - 1) / 9, f"rated {rating:g}/10 by {judge.model}", [reply])


async def judge_pairwise(judge: Judge, question: str, answer: str,
                         reference_answer: str) -> JudgeScore:
    """The judge compares the answer with a reference model's answer, twice, positions swapped
    (position bias cancels): 1.0 a win both times, 0.0 a loss both times, 0.5 a tie or
    inconsistent verdicts."""
    prompt = template("pairwise")
    first, second = await asyncio.gather(
        judge.ask(prompt.format(question=question, answer_a=answer, answer_b=reference_answer)),
        judge.ask(prompt.format(question=question, answer_a=reference_answer, answer_b=answer)))
    v1, v2 = parse_verdict(first.text), parse_verdict(second.text)
    # Each verdict from the answer's side: in the second call the answer is assistant B.
    o1 = {"A": "win", "B": "loss", "C": "tie"}.get(v1 or "")
    o2 = {"A": "loss", "B": "win", "C": "tie"}.get(v2 or "")
    said = (f"answer as A: {_shown(v1)} ({o1 or 'unparsed'}); "
            f"answer as B: {_shown(v2)} ({o2 or 'unparsed'})")
    if o1 is None or o2 is None:
        return _result(None, f"{said} -> no score", [first, second])
    if o1 == o2:
        value = {"win": 1.0, "loss": 0.0, "tie": 0.5}[o1]
        return _result(value, f"{said} -> consistent {o1}", [first, second])
    return _result(0.5, f"{said} -> inconsistent, counted as a tie", [first, second])


def _result(value: float | None, detail: str, replies: list[JudgeReply]) -> JudgeScore:
    return JudgeScore(value, detail, cost_usd=sum(r.cost_usd for r in replies),
                      input_tokens=sum(r.input_tokens for r in replies),
                      output_tokens=sum(r.output_tokens for r in replies),
                      judgements=[r.text for r in replies])


def _cost(header: str | None) -> float:
    try:
        cost = float(header) if header is not None else 0.0
    except ValueError:
        return 0.0
    return cost if math.isfinite(cost) and cost >= 0 else 0.0


def _shown(verdict: str | None) -> str:
    return f"[[{verdict}]]" if verdict else "no verdict"


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
