"""An OpenAI-compatible upstream that answers at once: the baseline the gateway is timed against.

    python benchmarks/_immediate_upstream.py PORT

A bare ASGI app (no framework) under uvicorn with uvloop + httptools, so its own cost is as
small as a Python server's can be and the difference to it is the gateway's. Non-streaming
answers are one fixed completion; streams are a role chunk, three content chunks, a finish
chunk, a usage chunk and ``[DONE]``, sent at once.
"""

from __future__ import annotations

import importlib.util
import json
import sys

COMPLETION = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Canberra."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
}).encode()


def _chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
            "model": "bench",
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish,
                                          "logprobs": None}]}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Can"}), _chunk({"content": "ber"}), _chunk({"content": "ra."}),
    _chunk({}, "stop"),
    _chunk({}, usage={"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}),
    b"data: [DONE]\n\n",
]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/models") or scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"object":"list","data":[]}'})
        return
    if b'"stream":true' in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for piece in STREAM:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(COMPLETION)).encode())]})
    await send({"type": "http.response.body", "body": COMPLETION})


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                http="httptools" if importlib.util.find_spec("httptools") else "h11")


if __name__ == "__main__":
    main()
