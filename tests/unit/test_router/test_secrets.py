"""A deployment's credentials never leave in relayed or logged text."""

from __future__ import annotations

import asyncio

import httpx

from router.secrets import MASK, Scrubber, ScrubbingTransport, deployment_secrets, mask_url


def test_scrubber_masks_whole_values_and_their_pieces():
    scrub = Scrubber(["Bearer sk-live-1234567890", "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE1/"
                      "20261205/us-east-1/bedrock/aws4_request, Signature=abcdef012345", "ab"])
    text = "got Bearer sk-live-1234567890 and sk-live-1234567890 and AKIAEXAMPLE1 and abcdef012345"
    out = scrub(text)
    assert "sk-live" not in out and "AKIAEXAMPLE1" not in out and "abcdef012345" not in out
    assert out.startswith("got ") and MASK in out
    assert scrub("ab cd") == "ab cd"  # too short to be a secret: ordinary text stays


def test_mask_url_hides_user_info_and_key_like_query_values():
    assert mask_url("https://u:p@host.example/v1?key=abc&x=1") == (
        "https://***@host.example/v1?key=***&x=1")
    assert mask_url("https://host.example/v1") == "https://host.example/v1"


def test_deployment_secrets_cover_key_env_headers_and_user_info(monkeypatch):
    monkeypatch.setenv("MY_KEY_VAR", "env-secret-value")
    found = deployment_secrets("literal-key-1", "MY_KEY_VAR", {"x-auth": "hdr-secret-1"},
                               "https://bob:pw-123456@h/v1")
    assert {"literal-key-1", "env-secret-value", "hdr-secret-1", "pw-123456"} <= set(found)


def test_transport_scrubs_error_bodies_only():
    def handler(request: httpx.Request) -> httpx.Response:
        echoed = f"auth={request.headers['authorization']} custom={request.headers['x-c']}"
        return httpx.Response(400 if request.url.path == "/bad" else 200, text=echoed)

    async def run() -> tuple[str, str]:
        transport = ScrubbingTransport(httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as c:
            headers = {"authorization": "Bearer sk-abcdef123456", "x-c": "custom-secret-9"}
            bad = await c.get("http://x/bad", headers=headers)
            good = await c.get("http://x/good", headers=headers)
            return bad.text, good.text

    bad, good = asyncio.run(run())
    assert "sk-abcdef123456" not in bad and "custom-secret-9" not in bad and "auth=" in bad
    assert "sk-abcdef123456" in good  # success bodies are the answer: never touched
