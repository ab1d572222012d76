"""Network controls over real sockets: the client address (a forwarding header believed only
from a trusted proxy), organisations' networks, the audit log's source, and TLS."""

from __future__ import annotations

import json
import ssl
import time

import httpx
import msgspec
import pytest

from router.config import JwtConfig, TlsConfig
from router.governance.audit import AuditRecord
from router.governance.stores import Governance
from tests.e2e.gateway_server import gateway
from tests.e2e.test_governance import ASK, bearer, configured, new_key
from tests.tls_certs import self_signed

CHAT = "/v1/chat/completions"




def networked(cfg, *, proxies: list[str] | None = None, header: str = "x-forwarded-for",
              networks: dict[str, list[str]] | None = None):
    server = msgspec.structs.replace(cfg.server, trusted_proxies=proxies or [],
                                     proxy_header=header)
    governance = msgspec.structs.replace(cfg.governance, networks=networks or {})
    return msgspec.structs.replace(cfg, server=server, governance=governance)


def audit_log(cfg) -> list[AuditRecord]:
    gov = Governance.open(cfg)
    try:
        return gov.audit.records()
    finally:
        gov.close()


def ask(url: str, key: str, **headers: str) -> httpx.Response:
    return httpx.post(url + CHAT, json=ASK, headers={**bearer(key), **headers}, timeout=30)


def test_a_client_cannot_pick_its_address_with_a_forwarding_header(tmp_path, engine, secret):
    cfg = configured(tmp_path)  # no trusted proxies: the peer (127.0.0.1) is the client
    _, key = new_key(cfg, ips=["203.0.113.7"])
    with gateway(cfg, engine) as url:
        spoofed = ask(url, key, **{"x-forwarded-for": "203.0.113.7"})
        rfc = ask(url, key, forwarded="for=203.0.113.7")
    # uvicorn alone would have believed the first: it trusts loopback peers by default.
    assert spoofed.status_code == 403 and rfc.status_code == 403
    assert "may not be used from 127.0.0.1" in spoofed.json()["error"]["message"]
    (denied,) = audit_log(cfg)  # one record a second per address
    assert (denied.action, denied.source) == ("auth.ip_denied", "127.0.0.1")


def test_a_trusted_proxy_forwards_the_client_address(tmp_path, engine, secret):
    cfg = networked(configured(tmp_path), proxies=["127.0.0.1", "::1"])
    _, key = new_key(cfg, ips=["203.0.113.0/24"])
    with gateway(cfg, engine) as url:
        admitted = ask(url, key, **{"x-forwarded-for": "203.0.113.7"})
        refused = ask(url, key, **{"x-forwarded-for": "198.51.100.2"})
        junk = ask(url, key, **{"x-forwarded-for": "203.0.113.7, not-an-address"})
        made = httpx.post(url + "/admin/keys", json={"org": "acme"}, timeout=30,
                          headers={**bearer("master-key"), "x-forwarded-for": "192.0.2.44"})
    assert admitted.status_code == 200
    assert refused.status_code == 403
    assert "198.51.100.2" in refused.json()["error"]["message"]
    assert junk.status_code == 403  # a hop that is no address: the peer is the client
    assert made.status_code == 201
    sources = {(r.action, r.source) for r in audit_log(cfg)}
    assert ("auth.ip_denied", "198.51.100.2") in sources
    assert ("auth.ip_denied", "127.0.0.1") in sources
    assert ("keys.create", "192.0.2.44") in sources


def test_the_client_is_the_first_untrusted_hop_from_the_right(tmp_path, engine, secret):
    cfg = configured(tmp_path)
    _, client_key = new_key(cfg, ips=["203.0.113.7"])
    _, proxy2_key = new_key(cfg, ips=["198.51.100.2"])
    chain = {"x-forwarded-for": "203.0.113.7, 198.51.100.2"}  # client, proxy2
    one_hop = networked(cfg, proxies=["127.0.0.1"])
    with gateway(one_hop, engine) as url:  # proxy2 is not trusted: it is the client
        as_client = ask(url, client_key, **chain)
        as_proxy2 = ask(url, proxy2_key, **chain)
    both = networked(cfg, proxies=["127.0.0.1", "198.51.100.0/24"])
    with gateway(both, engine) as url:  # proxy2 is trusted: the hop before it is the client
        through_both = ask(url, client_key, **chain)
        spoofed_left = ask(url, client_key, **{"x-forwarded-for":
                                               "203.0.113.7, 192.0.2.9, 198.51.100.2"})
    assert (as_client.status_code, as_proxy2.status_code) == (403, 200)
    assert through_both.status_code == 200
    assert spoofed_left.status_code == 403  # 192.0.2.9 is the client; left of it is its say


def jwt_setup(tmp_path):
    """A JWT config trusting a fresh signing key, and a function minting tokens for an org."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    signer = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(signer.public_key())),
           "kid": "k1", "alg": "ES256"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = JwtConfig(jwks=str(tmp_path / "jwks.json"), issuer="https://idp.example",
                       audience="contextforge")

    def mint(org: str) -> str:
        claims = {"iss": "https://idp.example", "aud": "contextforge", "sub": f"ada@{org}",
                  "org": org, "exp": time.time() + 300}
        return pyjwt.encode(claims, signer, algorithm="ES256", headers={"kid": "k1"})

    return config, mint


def test_an_organisations_networks_bind_its_keys_and_tokens(tmp_path, engine, secret):
    jwt, mint = jwt_setup(tmp_path)
    cfg = configured(tmp_path)
    cfg = msgspec.structs.replace(cfg, governance=msgspec.structs.replace(cfg.governance,
                                                                          jwt=jwt))
    cfg = networked(cfg, proxies=["127.0.0.1"], networks={"acme": ["203.0.113.0/24"]})
    _, acme = new_key(cfg, org="acme")
    _, narrower = new_key(cfg, org="acme", ips=["198.51.100.0/24"])
    _, globex = new_key(cfg, org="globex")
    inside, outside = {"x-forwarded-for": "203.0.113.7"}, {"x-forwarded-for": "198.51.100.9"}
    with gateway(cfg, engine) as url:
        codes = {
            "acme inside": ask(url, acme, **inside).status_code,
            "acme outside": ask(url, acme, **outside),
            "acme token inside": ask(url, mint("acme"), **inside).status_code,
            "acme token outside": ask(url, mint("acme"), **outside).status_code,
            "key allows, org does not": ask(url, narrower, **outside).status_code,
            "globex anywhere": ask(url, globex, **outside).status_code,
            "globex token anywhere": ask(url, mint("globex"), **outside).status_code,
            "master anywhere": ask(url, "master-key", **outside).status_code,
        }
    refused = codes.pop("acme outside")
    assert codes == {"acme inside": 200, "acme token inside": 200, "acme token outside": 403,
                     "key allows, org does not": 403, "globex anywhere": 200,
                     "globex token anywhere": 200, "master anywhere": 200}
    error = refused.json()["error"]
    assert refused.status_code == 403 and error["code"] == "permission_denied"
    assert "organisation 'acme' may not call from 198.51.100.9" in error["message"]
    (denied,) = [r for r in audit_log(cfg) if r.action == "auth.ip_denied"]  # 1/s/address
    assert denied.source == "198.51.100.9" and "acme" in (denied.detail or "")


@pytest.mark.parametrize("password", [None, b"s3cret"])
def test_the_gateway_terminates_tls(tmp_path, engine, secret, monkeypatch, password):
    cert, key_file = self_signed(tmp_path / "tls", password=password)
    if password:
        monkeypatch.setenv("CF_TEST_TLS_PASSWORD", password.decode())
    tls = TlsConfig(cert_path=str(cert), key_path=str(key_file),
                    key_password_env="CF_TEST_TLS_PASSWORD" if password else "")
    cfg = configured(tmp_path)
    cfg = msgspec.structs.replace(cfg, server=msgspec.structs.replace(cfg.server, tls=tls))
    _, key = new_key(cfg)
    trusting = ssl.create_default_context(cafile=str(cert))
    with gateway(cfg, engine) as url:
        assert url.startswith("https://")
        with httpx.Client(verify=trusting, timeout=30) as client:
            health = client.get(url + "/healthz")
            answer = client.post(url + CHAT, json=ASK, headers=bearer(key))
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=10)
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the cert
            httpx.get(url + "/healthz", timeout=10)
    assert health.status_code == 200 and answer.status_code == 200


def test_a_local_gateway_does_not_trust_callers_its_proxy_forwards(tmp_path, engine, secret):
    # Loopback and no master key: local callers need no credential. A reverse proxy on the
    # same host forwards callers from elsewhere, who must not inherit that trust.
    cfg = networked(configured(tmp_path), proxies=["127.0.0.1", "::1"])
    cfg = msgspec.structs.replace(cfg, server=msgspec.structs.replace(cfg.server, master_key=""))
    with gateway(cfg, engine) as url:
        local = httpx.post(url + CHAT, json=ASK, timeout=30)
        proxied = httpx.post(url + CHAT, json=ASK, timeout=30,
                             headers={"x-forwarded-for": "198.51.100.2"})
        proxied_local = httpx.post(url + CHAT, json=ASK, timeout=30,
                                   headers={"x-forwarded-for": "127.0.0.1"})
    assert local.status_code == 200 and proxied_local.status_code == 200
    assert proxied.status_code == 401
