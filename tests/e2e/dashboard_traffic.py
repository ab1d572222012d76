"""A gateway config and a little real traffic for the dashboard's tests: two organisations'
keys, routed chats (streamed and not), an exact cache hit, a failing deployment, a budget per
organisation, and scores beside some answers (as ``contextforge eval score`` writes them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from router.config import (
    BudgetRule,
    Config,
    Deployment,
    GovernanceConfig,
    LimitsConfig,
    SimulatedSettings,
    load_config,
)
from router.governance.stores import Governance
from router.traffic import ScoreRow, TrafficLog

MASTER = "master-key"
FAILING = "command"  # its one deployment always fails
PROMPTS = ["Name three prime numbers.",
           "Write a Python function that reverses a linked list.",
           "Prove that the square root of two is irrational.",
           "What is the capital of Australia?"]

ROUTES = ["auto", "quality-first", "budget", "gpt4o-30"]
Post = Callable[[str, dict[str, Any], dict[str, str]], Any]  # (path, json, headers) -> response


def dashboard_config(tmp_path: Path) -> Config:
    cfg = load_config()
    models = [msgspec.structs.replace(m, deployments=[Deployment(
                  provider="simulated", simulated=SimulatedSettings(failure_rate=1.0))])
              if m.name == FAILING else m for m in cfg.models]
    return msgspec.structs.replace(
        cfg, models=models,
        traffic=msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp_path / 't.sqlite3'}"),
        governance=GovernanceConfig(dsn=f"sqlite:///{tmp_path / 'g.sqlite3'}"),
        limits=LimitsConfig(budgets=[BudgetRule(scope="org", usd=1.0, period="month")]),
        cache=msgspec.structs.replace(cfg.cache, enabled=True, semantic=False,
                                      snapshot_path=""),
        server=msgspec.structs.replace(cfg.server, master_key=MASTER))


def new_key(cfg: Config, org: str, role: str = "member", **kw: Any) -> str:
    gov = Governance.open(cfg)
    try:
        return gov.keys.create(org, role=role, **kw)[1]
    finally:
        gov.close()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def make_traffic(post: Post, keys: dict[str, str]) -> dict[str, list[str]]:
    """Requests of each organisation in ``keys`` (org -> member key); the ids answered, per
    organisation. Each asks every prompt routed, one twice (a cache hit), one streamed, and
    the failing model once (a 502)."""
    answered: dict[str, list[str]] = {}
    for org, key in keys.items():
        ids = answered[org] = []
        for i, prompt in enumerate(PROMPTS):
            body = {"model": ROUTES[i % len(ROUTES)], "temperature": 0,
                    "messages": [{"role": "user", "content": f"{prompt} ({org})"}]}
            r = post("/v1/chat/completions", body, bearer(key))
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        again = {"model": "auto", "temperature": 0, "messages": [{"role": "user",
                                                "content": f"{PROMPTS[0]} ({org})"}]}
        hit = post("/v1/chat/completions", again, bearer(key))
        assert hit.headers["x-contextforge-cache"] == "hit-exact", hit.headers
        stream = post("/v1/chat/completions", {**again, "stream": True,
                                               "messages": [{"role": "user",
                                                             "content": "Stream a haiku."}]},
                      bearer(key))
        assert stream.status_code == 200
        failed = post("/v1/chat/completions", {**again, "model": FAILING}, bearer(key))
        assert failed.status_code == 502, failed.text
    return answered


def score(dsn: str, request_ids: list[str], value: float = 0.75) -> None:
    """Scores beside these rows, as ``contextforge eval score`` writes them."""
    log = TrafficLog(dsn)
    try:
        log.write_scores([ScoreRow(i, "test-judge", value) for i in request_ids])
    finally:
        log.close()
