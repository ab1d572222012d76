"""deploy/compose.yaml: a valid Compose file (the compose-spec bindings reject unknown keys and
bad values), every service health-checked, the gateway started after healthy backends with
its config mounted, and that config building an engine with the gateway's environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from compose_spec import PyCompose

from tests.deploy.conftest import DEPLOY, yaml_documents
from tests.deploy.gateway_config import validate

COMPOSE = DEPLOY / "compose.yaml"


def services() -> dict:
    return yaml_documents(COMPOSE)[0]["services"]


def test_the_compose_file_is_valid():
    parsed = PyCompose.from_yaml(COMPOSE.read_text())
    assert sorted(parsed.service_names()) == ["gateway", "postgres", "redis"]


def test_the_validator_rejects_a_broken_file():
    broken = COMPOSE.read_text().replace("condition: service_healthy",
                                         "condition: service_happy", 1)
    with pytest.raises(ValueError, match="service_happy"):
        PyCompose.from_yaml(broken)


def test_every_service_has_a_healthcheck_and_the_gateway_waits_for_healthy_backends():
    found = services()
    for name, service in found.items():
        assert service["healthcheck"]["test"], f"{name}: no healthcheck"
    assert "/readyz" in " ".join(found["gateway"]["healthcheck"]["test"])
    depends = found["gateway"]["depends_on"]
    assert set(depends) == {"postgres", "redis"}
    assert {d["condition"] for d in depends.values()} == {"service_healthy"}


def test_the_gateway_runs_hardened_with_its_config_mounted():
    gateway = services()["gateway"]
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    assert gateway["user"].split(":")[0] == "10001"
    host, container, mode = next(v.split(":") for v in gateway["volumes"]
                                 if v.endswith("contextforge.yaml:ro"))
    assert (COMPOSE.parent / host).is_file() and mode == "ro"
    assert gateway["command"][gateway["command"].index("--config") + 1] == container
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"


def test_secrets_are_variables_never_literals():
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if any(w in key for w in ("KEY", "SECRET", "PASSWORD")):
                assert str(value).startswith("${"), f"{name}.{key}: a literal secret"


def test_the_config_builds_with_the_gateways_environment(tmp_path, monkeypatch):
    gateway = services()["gateway"]
    host = next(v.split(":")[0] for v in gateway["volumes"] if "contextforge.yaml" in v)
    # Provider keys default to empty in the compose file: the demo config must not need them.
    given = {k for k, v in gateway["environment"].items() if ":?" in str(v)}
    engine = validate(COMPOSE.parent / Path(host), given, tmp_path, monkeypatch)
    assert engine.config.redis.url == "redis://redis:6379/0"
    assert "@postgres:5432/" in engine.config.traffic.dsn
