"""The fault-injecting upstream (``tests/upstreams/faults.py``): each fault on the wire, in both
formats, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.upstreams import serve
from tests.upstreams.faults import ANTHROPIC_KEY, OPENAI_KEY, Fault, FaultUpstream, Schedule, Tally

FORMATS = ["openai", "anthropic"]


class Clock:
    """A clock the tests move by hand, for time windows."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FaultUpstream, Clock]]:
    clock = Clock()
    up = FaultUpstream(clock=clock)
    with serve(up) as url:
        yield url, up, clock


@pytest.fixture()
def up(server) -> Iterator[tuple[str, FaultUpstream, Clock]]:
    url, upstream, clock = server
    clock.t = 0.0
    upstream.set(Schedule())
    upstream.tally = Tally()
    yield url, upstream, clock


def call(url: str, fmt: str, text: str = "hello there nonce=n1", *, stream: bool = False,
         timeout: float = 5.0) -> httpx.Response:
    """One chat request in ``fmt``, read to the end."""
    if fmt == "openai":
        path, headers = "/v1/chat/completions", {"authorization": f"Bearer {OPENAI_KEY}"}
        body: dict = {"model": "gpt-sim", "messages": [{"role": "user", "content": text}]}
    else:
        path = "/v1/messages"
        headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        body = {"model": "claude-sim", "max_tokens": 64,
                "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return httpx.post(url + path, json=body, headers=headers, timeout=timeout)


def events(fmt: str, text: str) -> list[str]:
    """The data lines of a stream, in order."""
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stream", [False, True])
def test_no_fault_is_the_simulators_answer(up, fmt, stream):
    url, upstream, _ = up
    r = call(url, fmt, stream=stream)
    assert r.status_code == 200 and "nonce=n1" in r.text  # streams split the words
    assert upstream.tally.answered == 1 and upstream.tally.answered_by_nonce == {"n1": 1}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("status", [429, 500, 503, 529])
def test_status_faults_answer_in_the_requests_format(up, fmt, status):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="status", status=status)]))
    r = call(url, fmt)
    assert r.status_code == status
    error = r.json()["error"]
    if fmt == "anthropic":
        assert r.json()["type"] == "error" and error["type"]
    else:
        assert error["message"] and "type" in error and "code" in error
    assert (r.headers.get("retry-after") == "1") == (status == 429)
    assert upstream.tally.received == 1 and upstream.tally.answered == 0


def test_a_rule_sets_its_own_retry_after(up):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="status", status=503, retry_after_s=2.5)]))
    assert call(url, "openai").headers["retry-after"] == "2.5"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("stream", [False, True])
def test_reset_sends_no_response(up, fmt, stream):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="reset")]))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        call(url, fmt, stream=stream)
    assert upstream.tally.outcomes["reset"] == 1 and upstream.tally.answered == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_hang_before_for_a_time_then_answers(up, fmt):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="hang_before", seconds=0.3)]))
    t0 = time.perf_counter()
    r = call(url, fmt)
    assert time.perf_counter() - t0 >= 0.3 and r.status_code == 200
    assert upstream.tally.answered == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_hang_before_forever_until_the_client_gives_up(up, fmt):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="hang_before")]))
    with pytest.raises(httpx.ReadTimeout):
        call(url, fmt, timeout=0.3)
    assert upstream.tally.answered == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_hang_after_the_first_byte_stalls_a_stream(up, fmt):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="hang_after", after_chunks=2)]))
    got: list[bytes] = []
    body = ({"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
            | ({"max_tokens": 64} if fmt == "anthropic" else {}))
    path = "/v1/messages" if fmt == "anthropic" else "/v1/chat/completions"
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01",
               "authorization": f"Bearer {OPENAI_KEY}"}
    with pytest.raises(httpx.ReadTimeout), httpx.stream(
            "POST", url + path, json=body, headers=headers, timeout=0.3) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            got.append(piece)
    assert b"".join(got).count(b"data: ") == 2  # the first two events, then nothing


def test_hang_after_cuts_a_plain_body_in_two(up):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="hang_after", seconds=0.3)]))
    t0 = time.perf_counter()
    r = call(url, "openai")
    assert time.perf_counter() - t0 >= 0.3 and r.json()["object"] == "chat.completion"


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_plain_body_is_not_json(up, fmt):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="malformed")]))
    r = call(url, fmt)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert upstream.tally.answered == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_stream_event(up, fmt):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="malformed", after_chunks=1)]))
    data = events(fmt, call(url, fmt, stream=True).text)
    json.loads(data[0])
    with pytest.raises(ValueError):
        json.loads(data[1])
    assert upstream.tally.answered == 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("after", [1, 3])
def test_cut_resets_a_stream_after_k_events(up, fmt, after):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="cut", after_chunks=after)]))
    path = "/v1/messages" if fmt == "anthropic" else "/v1/chat/completions"
    body = {"model": "m", "stream": True, "max_tokens": 64,
            "messages": [{"role": "user", "content": "one two three four five"}]}
    if fmt == "openai":
        del body["max_tokens"]
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01",
               "authorization": f"Bearer {OPENAI_KEY}"}
    got = b""
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)), httpx.stream(
            "POST", url + path, json=body, headers=headers, timeout=5) as r:
        for piece in r.iter_raw():
            got += piece
    assert got.count(b"data: ") == after
    assert upstream.tally.answered == 0


def test_latency_rules_add_up(up):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="latency", seconds=0.15),
                           Fault(kind="latency", seconds=0.15)]))
    t0 = time.perf_counter()
    assert call(url, "openai").status_code == 200
    assert time.perf_counter() - t0 >= 0.3


def test_every_nth_request(up):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="status", status=500, every=3)]))
    assert [call(url, "openai").status_code for _ in range(6)] == [200, 200, 500] * 2


def test_rate_hits_about_that_share(up):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="status", status=500, rate=0.5)], seed=1))
    codes = [call(url, "anthropic").status_code for _ in range(40)]
    assert 10 <= codes.count(500) <= 30
    assert upstream.tally.outcomes == {"status": codes.count(500), "ok": codes.count(200)}


def test_window_and_stream_filter(up):
    url, upstream, clock = up
    upstream.set(Schedule([Fault(kind="status", status=503, start_s=5, end_s=15, stream=False)]))
    assert call(url, "openai").status_code == 200
    clock.t = 5.0
    assert call(url, "openai").status_code == 503
    assert call(url, "openai", stream=True).status_code == 200  # streams are spared
    clock.t = 15.0
    assert call(url, "openai").status_code == 200


def test_first_rule_that_fires_wins(up):
    url, upstream, _ = up
    upstream.set(Schedule([Fault(kind="status", status=429, every=2),
                           Fault(kind="status", status=500)]))
    assert [call(url, "openai").status_code for _ in range(4)] == [500, 429, 500, 429]


def test_admin_endpoint_sets_and_reports(up):
    url, _, _ = up
    r = httpx.post(url + "/_faults", content=json.dumps(
        {"faults": [{"kind": "status", "status": 529}]}))
    assert r.status_code == 200 and r.json()["schedule"]["faults"][0]["status"] == 529
    assert call(url, "anthropic", "x nonce=k7").status_code == 529
    assert call(url, "anthropic", "x nonce=k7").status_code == 529
    state = httpx.get(url + "/_faults").json()
    assert state["tally"]["received_by_nonce"] == {"k7": 2}
    assert state["tally"]["outcomes"] == {"status": 2}
    httpx.post(url + "/_faults", content=b'{"faults": []}')
    assert call(url, "anthropic", "x nonce=k8").status_code == 200
    assert httpx.post(url + "/_faults/reset").json()["tally"]["received"] == 0


def test_admin_endpoint_names_a_bad_field(up):
    url, _, _ = up
    r = httpx.post(url + "/_faults", content=b'{"faults": [{"kind": "status", "rate": 2}]}')
    assert r.status_code == 400 and "faults[0]" in r.json()["error"]
    r = httpx.post(url + "/_faults", content=b'{"faults": [{"kind": "explode"}]}')
    assert r.status_code == 400 and "$.faults[0].kind" in r.json()["error"]
