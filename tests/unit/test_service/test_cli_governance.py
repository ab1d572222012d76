"""``contextforge keys ...`` and ``audit verify`` against a config's own store."""

from __future__ import annotations

import json

import pytest

from service.cli import main
from service.cli_governance import duration_s


@pytest.fixture()
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTEXTFORGE_KEY_SECRET", raising=False)
    from router.config import DEFAULT_CONFIG

    text = DEFAULT_CONFIG.read_text().replace("version: 1", (
        f"version: 1\ngovernance:\n  dsn: sqlite:///{tmp_path / 'gov.sqlite3'}\n"
        f"  key_secret_path: {tmp_path / 'secret'}\n"), 1)
    path = DEFAULT_CONFIG.parent / f".test-governance-{tmp_path.name}.yaml"
    path.write_text(text)
    yield str(path)
    path.unlink()


def test_keys_create_list_rotate_revoke_and_the_audit_trail(config, capsys, tmp_path):
    assert main(["keys", "create", "--org", "acme", "--name", "ci", "--role", "member",
                 "--models", "gpt-4o,gpt-4o-mini", "--expires-in", "30d", "--json",
                 "--config", config]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith(f"cf_{created['id']}_")
    assert created["models"] == ["gpt-4o", "gpt-4o-mini"] and created["expires"] > 0
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600  # made on first use
    assert main(["keys", "rotate", created["id"], "--overlap", "0", "--config", config]) == 0
    rotated = capsys.readouterr().out.strip()
    assert main(["keys", "list", "--org", "acme", "--json", "--config", config]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [k["id"] for k in listed] == [rotated.split("_")[1]]  # the old one is out
    assert main(["keys", "revoke", listed[0]["id"], "--config", config]) == 0
    assert main(["keys", "list", "--all", "--config", config]) == 0
    table = capsys.readouterr().out
    assert "revoked" in table and "rotated" in table
    assert main(["audit", "verify", "--json", "--config", config]) == 0
    check = json.loads(capsys.readouterr().out)
    assert check["ok"] and check["checked"] == 3  # create, rotate, revoke


def test_a_broken_audit_chain_exits_1_naming_the_record(config, capsys, tmp_path):
    import sqlite3

    main(["keys", "create", "--org", "acme", "--config", config])
    main(["keys", "create", "--org", "acme", "--config", config])
    conn = sqlite3.connect(tmp_path / "gov.sqlite3")
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
    conn.commit()
    conn.close()
    capsys.readouterr()
    assert main(["audit", "verify", "--config", config]) == 1
    assert "BROKEN at record 1" in capsys.readouterr().out


def test_bad_input_is_one_clear_line(config, capsys):
    assert main(["keys", "revoke", "nosuchkey123", "--config", config]) == 2
    assert "no key 'nosuchkey123'" in capsys.readouterr().err
    assert main(["keys", "create", "--org", "acme", "--expires-in", "soon",
                 "--config", config]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert duration_s("90") == 90 and duration_s("15m") == 900 and duration_s("1.5h") == 5400
