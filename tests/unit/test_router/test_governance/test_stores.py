"""The key-hash secret: from the environment, else a file made once (SQLite only)."""

from __future__ import annotations

import msgspec
import pytest

from router.config import ConfigError, GovernanceConfig, load_config
from router.governance.stores import Governance, key_secret


def config_with(tmp_path, dsn: str):
    cfg = load_config()
    return msgspec.structs.replace(cfg, governance=GovernanceConfig(
        dsn=dsn, key_secret_path=str(tmp_path / "secret")))


def test_a_sqlite_store_makes_its_secret_once(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTEXTFORGE_KEY_SECRET", raising=False)
    cfg = config_with(tmp_path, f"sqlite:///{tmp_path / 'g.sqlite3'}")
    first = key_secret(cfg)
    assert key_secret(cfg) == first and len(first) == 64
    gov = Governance.open(cfg)
    _, presented = gov.keys.create("acme")
    gov.close()
    gov = Governance.open(cfg)  # reopened: the same secret verifies the key
    assert gov.keys.verify(presented).org == "acme"
    gov.close()
    monkeypatch.setenv("CONTEXTFORGE_KEY_SECRET", "from-the-environment-0123")
    assert key_secret(cfg) == b"from-the-environment-0123"
    monkeypatch.setenv("CONTEXTFORGE_KEY_SECRET", "short")
    with pytest.raises(ConfigError, match="16 characters"):
        key_secret(cfg)


def test_a_shared_store_needs_the_secret_given(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTEXTFORGE_KEY_SECRET", raising=False)
    cfg = config_with(tmp_path, "postgresql://postgres@127.0.0.1:5432/test")
    with pytest.raises(ConfigError, match="every replica needs the same secret"):
        key_secret(cfg)
    assert not (tmp_path / "secret").exists()
    with pytest.raises(msgspec.ValidationError, match="dsn"):
        msgspec.convert({"dsn": "mysql://x"}, GovernanceConfig)
