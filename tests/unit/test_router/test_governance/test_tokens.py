"""JWT bearer tokens: only properly signed, current tokens for our issuer and audience pass;
the classic forgeries (alg none, HS256 with the RSA public key, unknown kid) do not."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from router.config import JwtConfig
from router.governance.tokens import JwtVerifier, TokenRejected

pytestmark = pytest.mark.anyio
ISS, AUD = "https://idp.example", "contextforge"


@pytest.fixture()
def anyio_backend():
    return "asyncio"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(private, kid: str) -> dict:
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return {**data, "kid": kid, "alg": "RS256", "use": "sig"}


@pytest.fixture(scope="module")
def signer():
    return rsa_key()


@pytest.fixture()
def jwks(signer):
    return {"keys": [jwk_of(signer, "k1")]}


@pytest.fixture()
def verifier(jwks):
    async def fetch():
        return jwks
    return JwtVerifier(JwtConfig(jwks="unused", issuer=ISS, audience=AUD), fetch)


def token(private, kid="k1", alg="RS256", **claims) -> str:
    body = {"iss": ISS, "aud": AUD, "sub": "ada@acme", "org": "acme", "roles": ["member"],
            "exp": time.time() + 300, **claims}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})


async def test_a_valid_token_maps_claims_to_the_principal(verifier, signer):
    p = await verifier.verify(token(signer, roles=["viewer", "operator"]))
    assert (p.tenant, p.user, p.role, p.via) == ("acme", "ada@acme", "operator", "jwt")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("forge, why", [
    (lambda s: token(s, exp=time.time() - 120), "Expired"),
    (lambda s: token(s, aud="someone-else"), "Audience"),
    (lambda s: token(s, iss="https://evil.example"), "Issuer"),
    (lambda s: token(s, nbf=time.time() + 600), "Immature"),
    (lambda s: token(rsa_key()), "Signature"),  # signed with another key under our kid
    (lambda s: token(s, kid="k9"), "unknown key id"),
    (lambda s: token(s, org=None), "organisation"),
    (lambda s: _b64({"alg": "none", "kid": "k1"}) + "." + _b64(
        {"iss": ISS, "aud": AUD, "org": "acme", "exp": time.time() + 300}) + ".", "'none'"),
    (lambda s: "not.a.token", "malformed"),
])
async def test_forged_or_stale_tokens_are_rejected(verifier, signer, forge, why):
    with pytest.raises(TokenRejected, match=why):
        await verifier.verify(forge(signer))


async def test_hs256_signed_with_the_rsa_public_key_is_rejected(verifier, signer):
    public_pem = signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # The classic algorithm-confusion forgery: PyJWT refuses to even make it with a PEM key,
    # so it is signed by hand.
    import hashlib
    import hmac

    head = _b64({"alg": "HS256", "kid": "k1", "typ": "JWT"})
    body = _b64({"iss": ISS, "aud": AUD, "org": "acme", "exp": time.time() + 300})
    sig = base64.urlsafe_b64encode(hmac.new(public_pem, f"{head}.{body}".encode(),
                                            hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(TokenRejected, match="'HS256' is not allowed"):
        await verifier.verify(f"{head}.{body}.{sig}")


async def test_key_rotation_is_picked_up_by_a_refresh(jwks, signer):
    calls = []

    async def fetch():
        calls.append(1)
        return jwks

    now = [1000.0]
    v = JwtVerifier(JwtConfig(jwks="x", issuer=ISS, audience=AUD, min_refresh_s=10), fetch,
                    clock=lambda: now[0])
    fresh = rsa_key()
    rotated = token(fresh, kid="k2", exp=time.time() + 300)
    with pytest.raises(TokenRejected, match="unknown key id"):
        await v.verify(rotated)
    jwks["keys"].append(jwk_of(fresh, "k2"))  # the identity provider publishes its new key
    with pytest.raises(TokenRejected, match="unknown key id"):
        await v.verify(rotated)  # within min_refresh_s: no new fetch (no refresh storms)
    now[0] += 11
    assert (await v.verify(rotated)).tenant == "acme"
    assert len(calls) == 2


def test_symmetric_algorithms_cannot_be_configured():
    with pytest.raises(ValueError, match="asymmetric"):
        JwtConfig(jwks="x", issuer=ISS, audience=AUD, algorithms=["HS256"])
