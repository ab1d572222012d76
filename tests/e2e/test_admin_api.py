"""The admin API: run-time catalog and provider changes, validated, persisted, master-keyed."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from router.config import load_config
from router.overlay import load_effective_config, read_overlay
from service.app import create_app

KEY = {"authorization": "Bearer admin-s3cret"}
NEW_MODEL = {"name": "qwen-2.5-72b", "input_price": 0.9, "output_price": 0.9,
             "context_window": 32768, "stands_in_for": "zero-one-ai/Yi-34B-Chat",
             "capabilities": ["tools"], "deployments": [{"provider": "sim-fast"}]}
PROVIDER = {"name": "sim-fast", "type": "simulated", "simulated": {"ttft_ms": 0}}
CHAT = {"messages": [{"role": "user", "content": "Summarise the plot of Hamlet."}]}



@pytest.fixture()
def config_file(tmp_path):
    """A copy of the default config whose overlay and traffic log live in tmp_path."""
    text = (load_config().resolve("contextforge.yaml")).read_text()
    base = load_config().base_dir
    text = text.replace("path: models/", f"path: {base}/models/")
    text += f"\nadmin:\n  state_path: {tmp_path / 'admin.json'}\n"
    text = text.replace("dsn: sqlite:///var/traffic.sqlite3",
                        f"dsn: sqlite:///{tmp_path / 't.sqlite3'}")
    path = tmp_path / "contextforge.yaml"
    path.write_text(text)
    return path


def app_for(config_file, engine, master_key="admin-s3cret"):
    cfg = load_effective_config(config_file)
    cfg = msgspec.structs.replace(cfg, server=msgspec.structs.replace(cfg.server,
                                                                      master_key=master_key))
    return create_app(cfg, engine=engine)


def test_admin_needs_the_master_key_even_on_loopback(config_file, engine):
    with TestClient(app_for(config_file, engine)) as c:
        assert c.get("/admin/models").status_code == 401
        assert c.get("/admin/models", headers={"authorization": "Bearer no"}).status_code == 401
        assert c.get("/admin/models", headers=KEY).status_code == 200
    with TestClient(app_for(config_file, engine, master_key="")) as c:
        r = c.get("/admin/models", headers=KEY)
        assert r.status_code == 403 and "master key" in r.json()["error"]["message"]


def test_add_provider_and_model_serve_at_once_and_survive_a_restart(config_file, engine):
    with TestClient(app_for(config_file, engine)) as c:
        assert c.put("/admin/providers/sim-fast", json=PROVIDER, headers=KEY).status_code == 201
        r = c.put("/admin/models/qwen-2.5-72b", json=NEW_MODEL, headers=KEY)
        assert r.status_code == 201, r.text
        # Served by name at once, and a candidate of the routes that take every model.
        chat = c.post("/v1/chat/completions", json={**CHAT, "model": "qwen-2.5-72b"})
        assert chat.status_code == 200 and chat.json()["model"] == "qwen-2.5-72b"
        models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert "qwen-2.5-72b" in models["auto"]["candidates"]
        health = c.get("/admin/deployments", headers=KEY).json()["data"]
        assert any(h["model"] == "qwen-2.5-72b" and h["deployment"].startswith("simulated:")
                   for h in health)
    overlay = read_overlay(config_file.parent / "admin.json")
    assert overlay.models["qwen-2.5-72b"].input_price == 0.9
    # A restart reads the overlay: the model is still there.
    with TestClient(app_for(config_file, engine)) as c:
        r = c.post("/v1/chat/completions", json={**CHAT, "model": "qwen-2.5-72b"})
        assert r.status_code == 200


def test_change_price_then_delete(config_file, engine):
    with TestClient(app_for(config_file, engine)) as c:
        gpt = c.get("/admin/models/gpt-4o", headers=KEY).json()
        cost0 = float(c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
                      .headers["x-contextforge-cost-usd"])
        r = c.put("/admin/models/gpt-4o", json={**gpt, "input_price": 25.0,
                                                "output_price": 100.0}, headers=KEY)
        assert r.status_code == 200
        cost1 = float(c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-4o"})
                      .headers["x-contextforge-cost-usd"])
        assert cost1 == pytest.approx(cost0 * 10, rel=0.01)
        # gpt-4o is named by the gpt4o-30 route: deleting it is refused, nothing changes.
        conflict = c.delete("/admin/models/gpt-4o", headers=KEY)
        assert conflict.status_code == 409 and "gpt4o-30" in conflict.json()["error"]["message"]
        assert c.delete("/admin/models/command", headers=KEY).status_code == 204
        gone = c.post("/v1/chat/completions", json={**CHAT, "model": "command"})
        assert gone.status_code == 404
        assert c.delete("/admin/models/command", headers=KEY).status_code == 404
    assert "command" not in {m.name for m in load_effective_config(config_file).models}


def test_bad_changes_are_refused_and_change_nothing(config_file, engine):
    with TestClient(app_for(config_file, engine)) as c:
        before = c.get("/admin/models", headers=KEY).json()
        model = {**NEW_MODEL, "deployments": []}  # served by the default deployment
        cases = [
            ({**model, "input_price": "cheap"}, 400, "input_price"),
            ({**model, "name": "other"}, 400, "name"),
            ({**model, "stands_in_for": "gpt-7"}, 422, "gpt-7"),
            ({**model, "capabilities": ["telepathy"]}, 422, "telepathy"),
            ({**model, "deployments": [{"provider": "nowhere"}]}, 422, "nowhere"),
            ({**model, "aliases": ["gpt-4o"]}, 422, "gpt-4o"),
            # Out of bounds: refused while decoding, naming the field.
            ({**model, "context_window": 0}, 400, "context_window"),
            ({**model, "context_window": 10**20}, 400, "context_window"),
            ({**model, "expected_output_tokens": -5}, 400, "expected_output_tokens"),
            ({**model, "input_price": -1}, 400, "input_price"),
            ({**model, "dimensions": 256}, 422, "dimensions"),
            ({**model, "deployments": [{"provider": "cohere", "api_key_env": "NO_SUCH_KEY"}]},
             422, "NO_SUCH_KEY"),
        ]
        for body, status, needle in cases:
            r = c.put("/admin/models/qwen-2.5-72b", json=body, headers=KEY)
            assert r.status_code == status, (body, r.text)
            assert needle in r.text
        bad_json = c.put("/admin/models/x", content=b"{nope", headers=KEY)
        assert bad_json.status_code == 400
        assert c.get("/admin/models", headers=KEY).json() == before
    assert not (config_file.parent / "admin.json").exists()


def test_provider_in_use_cannot_be_deleted_and_keys_are_masked(config_file, engine):
    with TestClient(app_for(config_file, engine)) as c:
        secret = {**PROVIDER, "api_key": "sk-very-secret"}
        r = c.put("/admin/providers/sim-fast", json=secret, headers=KEY)
        assert r.status_code == 201 and r.json()["api_key"] == "***"
        c.put("/admin/models/qwen-2.5-72b", json=NEW_MODEL, headers=KEY)
        listed = c.get("/admin/providers", headers=KEY)
        assert "sk-very-secret" not in listed.text
        r = c.delete("/admin/providers/sim-fast", headers=KEY)
        assert r.status_code == 409 and "qwen-2.5-72b" in r.json()["error"]["message"]
        assert c.delete("/admin/models/qwen-2.5-72b", headers=KEY).status_code == 204
        assert c.delete("/admin/providers/sim-fast", headers=KEY).status_code == 204


def test_header_secrets_and_url_user_info_are_masked_everywhere(config_file, engine):
    """Admin answers, the deployments view and the log's deployment label show no secret."""
    model = {"name": "masked", "input_price": 1, "output_price": 1, "context_window": 8000,
             "deployments": [{"provider": "openai-compatible", "api_key": "sk-literal-123456",
                              "endpoint": "https://bob:pw-secret-99@llm.internal/v1?key=qk-77777",
                              "headers": {"x-custom-auth": "hdr-secret-42"}}]}
    with TestClient(app_for(config_file, engine)) as c:
        put = c.put("/admin/models/masked", json=model, headers=KEY)
        assert put.status_code == 201, put.text
        shown = [put.text, c.get("/admin/models/masked", headers=KEY).text,
                 c.get("/admin/models", headers=KEY).text,
                 c.get("/admin/deployments", headers=KEY).text]
    for text in shown:
        for secret in ("sk-literal-123456", "pw-secret-99", "qk-77777", "hdr-secret-42", "bob"):
            assert secret not in text
    assert "llm.internal" in shown[3]  # still says where it is
    masked = put.json()["deployments"][0]
    assert masked["headers"] == {"x-custom-auth": "***"}
    assert masked["endpoint"] == "https://***@llm.internal/v1?key=***"
