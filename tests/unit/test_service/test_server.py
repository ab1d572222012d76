"""uvicorn's settings for the gateway: forwarding headers left to the app, TLS from the config."""

from __future__ import annotations

import msgspec

from router.config import Config, ServerConfig, TlsConfig
from service.server import plain_http_warning, uvicorn_config


async def app(scope, receive, send) -> None:  # uvicorn.Config only stores it
    raise AssertionError("not served")


def test_uvicorn_reads_no_forwarding_header_and_serves_tls_from_the_config_folder(tmp_path):
    plain = uvicorn_config(Config(), app)
    assert plain.proxy_headers is False  # else it believes any loopback peer's header
    assert not plain.is_ssl
    tls = TlsConfig(cert_path="tls/cert.pem", key_path="/etc/keys/key.pem",
                    key_password_env="CF_TEST_PW")
    cfg = Config(server=ServerConfig(tls=tls), base_dir=str(tmp_path))
    served = uvicorn_config(cfg, app)
    assert served.ssl_certfile == str(tmp_path / "tls/cert.pem")
    assert served.ssl_keyfile == "/etc/keys/key.pem"
    assert served.ssl_keyfile_password is None and served.proxy_headers is False


def test_plain_http_beyond_loopback_is_warned_about_unless_tls_or_a_proxy_is_set():
    def server(**kw) -> Config:
        return msgspec.structs.replace(Config(), server=ServerConfig(**kw))

    exposed = plain_http_warning(server(host="0.0.0.0", master_key="k"))
    assert exposed and "0.0.0.0" in exposed and "server.tls" in exposed
    tls = TlsConfig(cert_path="c.pem", key_path="k.pem")
    assert plain_http_warning(server()) is None  # loopback
    assert plain_http_warning(server(host="0.0.0.0", master_key="k", tls=tls)) is None
    assert plain_http_warning(server(host="0.0.0.0", master_key="k",
                                     trusted_proxies=["10.0.0.0/8"])) is None
