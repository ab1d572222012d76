"""The request path's contract: stages enter in order, leave in reverse, always."""

from __future__ import annotations

import asyncio

import pytest

from router.wire.openai import ChatCompletionChunk, ChatRequest, Message
from service.errors import BadRequest
from service.pipeline import Exchange, Pipeline
from service.timeouts import BodyTimeout, ClientGone, RequestTimeout


class Recorder:
    def __init__(self, name: str, log: list[str], *, answer: bool = False, fail: bool = False,
                 stream: bool = False):
        self.name, self.log, self.answer, self.fail, self.stream = name, log, answer, fail, stream
        self.kinds = frozenset({"chat"})

    async def enter(self, ex: Exchange, gw: object) -> None:
        self.log.append(f"enter {self.name}")
        if self.fail:
            raise BadRequest("no", param="x")
        if self.stream:
            async def chunks():
                for i in range(2):
                    yield ChatCompletionChunk(id=str(i), created=0, model="m", choices=[])
            ex.chunks = chunks()
        ex.answered = self.answer

    def leave(self, ex: Exchange, gw: object) -> None:
        self.log.append(f"leave {self.name} {ex.status}")


def exchange() -> Exchange:
    return Exchange("chat", ChatRequest(model="auto", messages=[Message("user", "hi")]))


def test_stages_enter_in_order_and_leave_in_reverse():
    log: list[str] = []
    asyncio.run(Pipeline([Recorder("a", log), Recorder("b", log)]).run(exchange(), None))
    assert log == ["enter a", "enter b", "leave b 200", "leave a 200"]


def test_an_answering_stage_skips_the_rest_but_every_stage_leaves():
    log: list[str] = []
    stages = [Recorder("cache", log, answer=True), Recorder("route", log)]
    asyncio.run(Pipeline(stages).run(exchange(), None))
    assert log == ["enter cache", "leave route 200", "leave cache 200"]


def test_a_failure_is_recorded_and_raised_after_the_stages_leave():
    log: list[str] = []
    ex = exchange()
    with pytest.raises(BadRequest):
        asyncio.run(Pipeline([Recorder("a", log), Recorder("b", log, fail=True)]).run(ex, None))
    assert log == ["enter a", "enter b", "leave b 400", "leave a 400"]
    assert ex.status == 400


def test_a_streams_stages_leave_when_the_stream_ends():
    log: list[str] = []

    async def run() -> list[str]:
        ex = await Pipeline([Recorder("a", log, stream=True)]).run(exchange(), None)
        assert log == ["enter a"]  # still streaming
        assert ex.chunks is not None
        return [c.id async for c in ex.chunks]

    assert asyncio.run(run()) == ["0", "1"]
    assert log == ["enter a", "leave a 200"]


def _drive(messages: list[dict], timeout_s: float) -> BaseException | None:
    async def app(scope, receive, send):
        while True:
            message = await receive()
            if not message.get("more_body"):
                return

    async def run() -> BaseException | None:
        pending = list(messages)

        async def receive():
            if not pending:
                await asyncio.sleep(10)
            return pending.pop(0)

        try:
            await BodyTimeout(app, timeout_s)({"type": "http"}, receive, None)
        except Exception as exc:
            return exc
        return None

    return asyncio.run(run())


def test_body_timeout_and_disconnect_while_sending():
    assert _drive([{"type": "http.request", "body": b"{}", "more_body": False}], 1) is None
    late = _drive([{"type": "http.request", "body": b"{", "more_body": True}], 0.05)
    assert isinstance(late, RequestTimeout) and late.status == 408
    gone = _drive([{"type": "http.disconnect"}], 1)
    assert isinstance(gone, ClientGone) and gone.status == 499
