"""A fault-injecting upstream: OpenAI chat completions and Anthropic messages that misbehave on
a schedule, one instance per deployment, for tests and benchmarks (``benchmarks/chaos.py``).

``FaultUpstream`` is an ASGI app wrapping the two wire-format simulators: ``POST
/v1/chat/completions`` is ``openai_compat``'s (key ``OPENAI_KEY``, non-strict), ``POST
/v1/messages`` is ``anthropic``'s (key ``ANTHROPIC_KEY``); their answers echo the prompt. In
front of them a ``Schedule`` of ``Fault`` rules decides, per request, what goes wrong:

==============  =================================================================================
``status``      an error answer in the request's format: 429 (``retry-after``), 500, 503, 529...
``reset``       the connection is reset (RST) before any byte of a response
``hang_before`` nothing is sent for ``seconds`` (``None``: until the client gives up), then the
                normal answer
``hang_after``  the answer stalls after ``after_chunks`` body messages (a stream's events; a
                plain body is cut in two) for ``seconds`` (``None``: until the client gives up)
``malformed``   a 200 whose body is not JSON; in a stream, the event after ``after_chunks``
``cut``         the connection is reset after ``after_chunks`` body messages
``latency``     ``seconds`` added before the answer; several latency rules add up, and they
                combine with the one other fault a request gets (the first rule that fires)
==============  =================================================================================

A rule hits a share of the requests it matches (``rate``, seeded) or every ``every``-th; it
matches only inside its time window (``start_s`` .. ``end_s``, seconds since the schedule was
set) and, with ``stream`` set, only streams or only plain requests. The schedule changes at
run time: ``upstream.set(schedule)`` in-process, or ``POST /_faults`` with the schedule as
JSON (``GET /_faults``: the schedule, the seconds since it was set, and the ``Tally``; ``POST
/_faults/reset``: a zeroed tally). ``Fault.from_json`` / ``Schedule`` decode with every error's
path, like the gateway's config.

The tally counts what arrived (and when, in seconds since the schedule was set) and what was
answered in full (a 2xx whose last byte went out while the client was still there), overall
and per nonce: the first ``nonce=<word>`` in the request body, so a benchmark that puts one in
each prompt can tell lost answers from duplicated ones.

Run one as a process::

    python -m tests.upstreams.faults PORT ['{"faults": [{"kind": "status", "rate": 0.5}]}']

Resets and cuts reach uvicorn's transport through ``send``'s owner (the request cycle of
uvicorn's h11 and httptools protocols); under another server they raise instead, which ends
the response without its end.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from router.wire import anthropic as aw
from tests.upstreams.anthropic import API_KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic import AnthropicSimulator
from tests.upstreams.openai_compat import ApiError, SimState
from tests.upstreams.openai_compat import create_app as openai_app

__all__ = ["ANTHROPIC_KEY", "OPENAI_KEY", "Fault", "FaultUpstream", "Schedule", "Tally"]

OPENAI_KEY = "sk-sim-0123456789abcdef"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
FaultKind = Literal["status", "reset", "hang_before", "hang_after", "malformed", "cut",
                    "latency"]
_NONCE = re.compile(rb"nonce=(\w+)")
_BROKEN_JSON = b'{"id": "broken", "choices": [{"index": 0, "message": {"content": "'
_BROKEN_EVENT = b'data: {"choices": [{"delta": {"content": \n\n'


class Fault(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One rule of a schedule (see the module docstring for what each kind does)."""

    kind: FaultKind
    rate: float = 1.0  # share of the matching requests hit (seeded random)
    every: int = 0  # > 0: every every-th matching request instead of ``rate``
    status: int = 503  # ``status``
    retry_after_s: float | None = None  # ``status`` 429/503: the retry-after header, if any
    seconds: float | None = None  # hangs (None: until the client gives up); latency
    after_chunks: int = 1  # ``hang_after``, ``cut``, ``malformed`` streams
    start_s: float = 0.0  # the window, in seconds since the schedule was set
    end_s: float | None = None
    stream: bool | None = None  # only streams (True), only plain requests (False), both

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0 or self.every < 0 or self.after_chunks < 0:
            raise ValueError("rate must be in [0, 1]; every and after_chunks >= 0")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValueError("a status fault's status must be 4xx or 5xx")
        if self.kind == "latency" and self.seconds is None:
            raise ValueError("a latency fault needs seconds")
        if self.end_s is not None and self.end_s < self.start_s:
            raise ValueError("end_s must be >= start_s")


class Schedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The faults of one upstream, in order: a request gets the first non-latency rule that
    fires, plus every latency rule that fires."""

    faults: list[Fault] = []
    seed: int = 0

    @classmethod
    def from_json(cls, raw: bytes | str) -> Schedule:
        """Decode a schedule; a bad one raises ``msgspec.ValidationError`` naming its path."""
        return msgspec.json.decode(raw, type=cls)


@dataclass
class Tally:
    """What an upstream received and answered in full, overall and per nonce."""

    received: int = 0
    answered: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # fault kind, or "ok"
    received_by_nonce: Counter[str] = field(default_factory=Counter)
    answered_by_nonce: Counter[str] = field(default_factory=Counter)
    arrivals: list[float] = field(default_factory=list)  # seconds since the schedule was set

    def as_dict(self) -> dict[str, Any]:
        return {"received": self.received, "answered": self.answered,
                "outcomes": dict(self.outcomes), "received_by_nonce": dict(self.received_by_nonce),
                "answered_by_nonce": dict(self.answered_by_nonce),
                "arrivals": [round(t, 4) for t in self.arrivals]}


@dataclass
class _Call:
    """One request in flight: what it is, and whether its client is still there."""

    body: bytes
    anthropic: bool
    stream: bool
    nonce: str | None
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, seconds: float | None) -> bool:
        """Sleep ``seconds`` (``None``: forever) unless the client leaves; whether it left."""
        try:
            await asyncio.wait_for(self.gone.wait(), seconds)
        except TimeoutError:
            return False
        return True


class FaultUpstream:
    """The fault-injecting upstream as an ASGI app; ``set`` changes its schedule at run time."""

    def __init__(self, schedule: Schedule | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        self.openai_state = SimState(api_key=OPENAI_KEY, strict=False)
        self._openai = openai_app(self.openai_state)
        self._anthropic = AnthropicSimulator(ANTHROPIC_KEY).app
        self._clock = clock
        self.tally = Tally()
        self.set(schedule or Schedule())

    def set(self, schedule: Schedule) -> None:
        """Replace the schedule; its windows count from now, its rules' counts from zero."""
        self.schedule = schedule
        self.epoch = self._clock()
        self._rng = random.Random(schedule.seed)
        self._matched = [0] * len(schedule.faults)

    def elapsed(self) -> float:
        return self._clock() - self.epoch

    def pick(self, stream: bool) -> tuple[Fault | None, float]:
        """The fault for a request now, and the latency added to it."""
        t = self.elapsed()
        chosen, delay = None, 0.0
        for i, f in enumerate(self.schedule.faults):
            if t < f.start_s or (f.end_s is not None and t >= f.end_s):
                continue
            if f.stream is not None and f.stream != stream:
                continue
            if f.kind != "latency" and chosen is not None:
                continue
            self._matched[i] += 1
            fires = (self._matched[i] % f.every == 0 if f.every
                     else f.rate >= 1.0 or self._rng.random() < f.rate)
            if not fires:
                continue
            if f.kind == "latency":
                delay += f.seconds or 0.0
            else:
                chosen = f
        return chosen, delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if scope["path"].startswith("/_faults"):
            await self._admin(scope, body, send)
            return
        call = _call(scope, body)
        _no_delay(send)
        self.tally.received += 1
        self.tally.arrivals.append(self.elapsed())
        if call.nonce:
            self.tally.received_by_nonce[call.nonce] += 1
        watcher = asyncio.create_task(_watch(receive, call.gone))
        try:
            await self._serve(scope, call, send)
        finally:
            watcher.cancel()

    async def _serve(self, scope: Scope, call: _Call, send: Send) -> None:
        fault, delay = self.pick(call.stream)
        self.tally.outcomes[fault.kind if fault else "ok"] += 1
        if delay and await call.wait(delay):
            return
        mid_answer = fault is not None and (fault.kind in ("hang_after", "cut")
                                            or (fault.kind == "malformed" and call.stream))
        if fault is None or mid_answer:  # the relay applies it (a plain body: cut in two)
            await self._inner(scope, call, _Relay(self, call, fault, send))
        elif fault.kind == "status":
            await _error(send, fault, call.anthropic)
        elif fault.kind == "reset":
            await _reset(send)
        elif fault.kind == "hang_before":
            if not await call.wait(fault.seconds):
                await self._inner(scope, call, _Relay(self, call, None, send))
        else:  # malformed, plain
            await _respond(send, 200, _BROKEN_JSON)

    async def _inner(self, scope: Scope, call: _Call, send: Send) -> None:
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": call.body, "more_body": False}
            await call.gone.wait()
            return {"type": "http.disconnect"}

        app = self._anthropic if call.anthropic else self._openai
        await app(scope, replay, send)

    async def _admin(self, scope: Scope, body: bytes, send: Send) -> None:
        if scope["method"] == "POST" and scope["path"] == "/_faults/reset":
            self.tally = Tally()
        elif scope["method"] == "POST":
            try:
                self.set(Schedule.from_json(body))
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await _respond(send, 400, json.dumps({"error": str(exc)}).encode())
                return
        state = {"schedule": msgspec.to_builtins(self.schedule), "elapsed_s": self.elapsed(),
                 "tally": self.tally.as_dict()}
        await _respond(send, 200, json.dumps(state).encode())


class _Relay:
    """``send`` for the simulator's answer: applies a mid-answer fault and tallies the end."""

    def __init__(self, upstream: FaultUpstream, call: _Call, fault: Fault | None, send: Send):
        self.upstream, self.call, self.fault, self._send = upstream, call, fault, send
        self.status = 0
        self.sent = 0  # body messages with bytes in them
        self.dead = False  # the connection was reset here: drop the rest
        self.spoiled = False  # a malformed event went out: not an answer

    async def __call__(self, message: Message) -> None:
        if self.dead:
            return
        if message["type"] == "http.response.start":
            self.status = message["status"]
            await self._send(message)
            return
        chunk, more = message.get("body", b""), message.get("more_body", False)
        f = self.fault
        if f is not None and chunk and (not self.call.stream or self.sent >= f.after_chunks):
            self.fault = None  # once per answer
            if not self.call.stream:  # a plain body: half of it goes out first
                half = len(chunk) // 2
                await self._send({"type": "http.response.body", "body": chunk[:half],
                                  "more_body": True})
                chunk = chunk[half:]
            if f.kind == "cut":
                self.dead = True
                await _reset(self._send)
                return
            if f.kind == "malformed":
                chunk, self.spoiled = _BROKEN_EVENT, True
            elif await self.call.wait(f.seconds):  # hang_after
                return
        if chunk:
            self.sent += 1
        if not more and 200 <= self.status < 300 and not self.spoiled \
                and not self.call.gone.is_set():
            # Counted before the last bytes go: a client thread that reads them may look at
            # the tally before this thread runs again.
            tally = self.upstream.tally
            tally.answered += 1
            if self.call.nonce:
                tally.answered_by_nonce[self.call.nonce] += 1
        await self._send({**message, "body": chunk})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client disconnects (uvicorn also says so once the answer is out,
    by which time nothing waits on it)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def _call(scope: Scope, body: bytes) -> _Call:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    stream = isinstance(parsed, dict) and parsed.get("stream") is True
    match = _NONCE.search(body)
    return _Call(body, scope["path"].endswith("/messages"), stream,
                 match.group(1).decode() if match else None)


async def _respond(send: Send, status: int, body: bytes,
                   headers: dict[str, str] | None = None) -> None:
    head = [(b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _error(send: Send, fault: Fault, anthropic: bool) -> None:
    """``fault.status`` in the request's wire format, with ``retry-after`` when a 429 (or a
    rule) gives one."""
    status = fault.status
    retry = fault.retry_after_s if fault.retry_after_s is not None else (
        1.0 if status == 429 else None)
    headers = {"retry-after": f"{retry:g}"} if retry is not None else {}
    message = f"injected fault: HTTP {status}"
    if anthropic:
        body = aw.error_body(status, message)
    else:
        kind = "requests" if status == 429 else "server_error" if status >= 500 else \
            "invalid_request_error"
        body = json.dumps(ApiError(status, message, type_=kind).body).encode()
    await _respond(send, status, body, headers)


def _transport(send: Send) -> Any:
    """uvicorn's transport under ``send`` (its request cycle's), or ``None``."""
    return getattr(getattr(send, "__self__", None), "transport", None)


def _no_delay(send: Send) -> None:
    """TCP_NODELAY: a status line and its body go out as separate writes, and Nagle would hold
    the second until the client's delayed ACK (40 ms) — noise in every latency measured."""
    transport = _transport(send)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _reset(send: Send) -> None:
    """Reset the connection under ``send``: RST, no further bytes."""
    transport = _transport(send)
    if transport is None:
        raise ConnectionResetError("injected reset (no transport to abort)")
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST rather than FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    for _ in range(3):  # let the protocol see the loss, so uvicorn sends no 500 after us
        await asyncio.sleep(0)


def main(argv: list[str]) -> None:
    """``python -m tests.upstreams.faults PORT [SCHEDULE_JSON]``: one upstream, in the
    foreground, until interrupted."""
    import uvicorn

    schedule = Schedule.from_json(argv[1]) if len(argv) > 1 else Schedule()
    uvicorn.run(FaultUpstream(schedule), host="127.0.0.1", port=int(argv[0]), lifespan="off",
                log_level="critical", access_log=False, loop="asyncio", http="h11")


if __name__ == "__main__":
    main(sys.argv[1:])
