"""The gateway's OpenAI API as ``contextforge collect`` uses it: catalog prices from
``GET /v1/models`` and one answer of a pinned model, retried with backoff (honouring
``Retry-After``) after the gateway's own retries; a refused key stops the run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal, NamedTuple

import httpx
import msgspec

from router.wire.openai import ChatCompletion

COST_HEADER = "x-contextforge-cost-usd"
MAX_RETRY_AFTER_S = 30.0


class CollectError(RuntimeError):
    """A run that cannot go on (the gateway refuses the key, an out file that is not ours)."""


class Price(msgspec.Struct, frozen=True):
    """A catalog model's ``pricing`` in ``/v1/models``: USD per million tokens."""

    input_per_million: float
    output_per_million: float
    expected_output_tokens: int

    def estimate(self, input_tokens: int) -> float:
        return (input_tokens * self.input_per_million
                + self.expected_output_tokens * self.output_per_million) / 1e6


class _Card(msgspec.Struct):
    id: str
    kind: str = "model"
    aliases: list[str] = []
    pricing: Price | None = None  # a gateway before pricing was exposed has none


class _ModelList(msgspec.Struct):
    data: list[_Card]


_MODELS = msgspec.json.Decoder(_ModelList)
_COMPLETION = msgspec.json.Decoder(ChatCompletion)


class Answer(NamedTuple):
    text: str
    cost: float
    input_tokens: int
    output_tokens: int


class PairFailed(Exception):
    """One pair cannot be answered: ``skipped`` (the gateway refused it, 4xx) or ``error``
    (it kept failing)."""

    def __init__(self, kind: Literal["skipped", "error"], status: int | None, message: str):
        super().__init__(message)
        self.kind, self.status = kind, status


def _error_text(r: httpx.Response) -> str:
    try:
        return str(r.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return r.text[:300]


class GatewayClient:
    """The gateway's OpenAI API as collect uses it: model prices, one pinned answer."""

    def __init__(self, http: httpx.AsyncClient, *, attempts: int = 4, backoff_s: float = 0.5):
        self.http, self.attempts, self.backoff_s = http, attempts, backoff_s

    async def prices(self, models: Sequence[str]) -> dict[str, Price | None]:
        """Each model's price from ``GET /v1/models`` (None when the gateway exposes none);
        ``ValueError`` naming an unknown model or a route."""
        r = await self.http.get("/v1/models")
        if r.status_code in (401, 403):
            raise CollectError(f"the gateway refused the key ({r.status_code}): give --api-key")
        r.raise_for_status()
        listed = [c for c in _MODELS.decode(r.content).data if c.kind == "model"]
        cards = {key: c for c in listed for key in (c.id, *c.aliases)}
        unknown = [m for m in models if m not in cards]
        if unknown:
            known = ", ".join(sorted(c.id for c in listed))
            raise ValueError(f"--models: {', '.join(map(repr, unknown))}: not a catalog model "
                             f"of the gateway (a route is not one either); known: {known}")
        return {m: cards[m].pricing for m in models}

    async def ask(self, model: str, prompt: str) -> Answer:
        """The model's answer; 4xx raises at once, 5xx / 408 / 429 / connection errors are
        retried with backoff (after the gateway's own retries), then raise."""
        body = {"model": model, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]}
        last: tuple[int | None, str] = (None, "")
        for attempt in range(self.attempts):
            wait = self.backoff_s * 2 ** attempt
            try:
                r = await self.http.post("/v1/chat/completions", json=body)
            except httpx.TransportError as exc:
                last = (None, f"{type(exc).__name__}: {exc}")
            else:
                if r.status_code == 200:
                    try:
                        return self._answer(r)
                    except (msgspec.DecodeError, ValueError) as exc:
                        raise PairFailed("error", 200, f"unreadable answer: {exc}") from exc
                if r.status_code in (401, 403):
                    raise CollectError(f"the gateway refused the key ({r.status_code}): "
                                       f"{_error_text(r)}")
                last = (r.status_code, _error_text(r))
                if r.status_code < 500 and r.status_code not in (408, 429):
                    raise PairFailed("skipped", *last)
                wait = max(wait, self._retry_after(r))
            if attempt + 1 < self.attempts:
                await asyncio.sleep(wait)
        raise PairFailed("error", last[0], f"after {self.attempts} attempts: {last[1]}")

    @staticmethod
    def _retry_after(r: httpx.Response) -> float:
        try:
            return min(float(r.headers.get("retry-after", 0)), MAX_RETRY_AFTER_S)
        except ValueError:
            return 0.0

    @staticmethod
    def _answer(r: httpx.Response) -> Answer:
        done = _COMPLETION.decode(r.content)
        usage = done.usage
        return Answer(text=(done.choices[0].message.content or "") if done.choices else "",
                      cost=float(r.headers.get(COST_HEADER, 0.0)),
                      input_tokens=usage.prompt_tokens if usage else 0,
                      output_tokens=usage.completion_tokens if usage else 0)
