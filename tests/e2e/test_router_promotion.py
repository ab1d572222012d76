"""Live router promotion: a running gateway swaps router versions without a restart, through
the admin API at once or, from ``contextforge models promote``, within a poll of the registry;
a version that cannot serve is refused; and promotion under a steady 100 requests/s fails no
request.

Two small versions on a tiny static table (quick to train and load): ``a`` learned that the
cheap model is as good on even topics, ``b`` that it never is, so the same prompt goes to
``small`` under ``a`` and to ``big`` under ``b``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time

import httpx
import numpy as np
import pytest
from litestar.testing import TestClient

from router.config import load_config
from router.encoders import load_encoder
from router.registry import Registry
from router.traffic import TrafficLog
from service import cli
from service.app import create_app
from tests.e2e.gateway_server import Lines, gateway
from tests.static_tables import build_tiny_static, topics_table

KEY = {"authorization": "Bearer admin-s3cret"}
EVEN_TOPIC = "Question 0: explain integrals in calculus with an example."
CHAT = {"model": "auto", "messages": [{"role": "user", "content": EVEN_TOPIC}]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(static table folder, router a, router b)."""
    from training.fit import train_router

    base = tmp_path_factory.mktemp("promotion")
    table = build_tiny_static(base / "tiny-static")
    encoder = load_encoder(table)
    topics = topics_table()
    never_cheap = dataclasses.replace(topics, name="topics-strong", scores=np.stack(
        [np.ones(len(topics.prompts)), np.zeros(len(topics.prompts))], axis=1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTEXTFORGE_EMBED_CACHE", str(base / "emb"))
        a = train_router(topics, base / "a", kind="knn", encoder=encoder, calibrate=False)
        b = train_router(never_cheap, base / "b", kind="knn", encoder=encoder, calibrate=False)
    return table, a, b


@pytest.fixture()
def config_file(tmp_path, trained, encoder_dir):
    """A two-model config serving routers/a, in a registry of its own that also holds b, a
    version trained on another table (``other-encoder``) and one that does not load."""
    table, a, b = trained
    routers = tmp_path / "routers"
    shutil.copytree(a, routers / "a")
    shutil.copytree(b, routers / "b")
    other = shutil.copytree(a, routers / "other-encoder")
    spec = json.loads((other / "router.json").read_text())
    spec["encoder"]["sha256"] = "0" * 64
    (other / "router.json").write_text(json.dumps(spec))
    broken = shutil.copytree(a, routers / "broken")
    (broken / "weights.npz").write_bytes(b"truncated")
    path = tmp_path / "cf.yaml"
    path.write_text(json.dumps({
        "encoder": {"path": str(table), "text_path": str(encoder_dir)},
        "router": {"path": str(routers / "a"), "poll_s": 0.05},
        "server": {"master_key": "admin-s3cret"},
        "traffic": {"dsn": f"sqlite:///{tmp_path / 't.sqlite3'}"},
        "admin": {"state_path": str(tmp_path / "admin.json")},
        "models": [
            {"name": "big", "input_price": 10, "output_price": 30, "context_window": 8000,
             "stands_in_for": "strong"},
            {"name": "small", "input_price": 0.1, "output_price": 0.3, "context_window": 8000,
             "stands_in_for": "weak"}],
        "routes": [{"name": "auto"}]}))
    return path


@pytest.fixture()
def registry_log():
    logger, lines = logging.getLogger("contextforge.registry"), Lines()
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)


def routed(client) -> tuple[str, str]:
    """(router version, model) of one routed chat request."""
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    return r.headers["x-contextforge-router"], r.headers["x-contextforge-model"]


def logged_routers(config) -> list[str | None]:
    log = TrafficLog(config.traffic.dsn, base_dir=config.resolve("."))
    try:
        return [r.router for r in log.records()]
    finally:
        log.close()


def test_the_admin_api_lists_versions_and_promotes_at_once(config_file):
    config = load_config(config_file)
    with TestClient(create_app(config)) as c:
        assert c.get("/admin/routers").status_code == 401
        listed = c.get("/admin/routers", headers=KEY).json()
        assert listed["live"] == listed["serving"] == "a"
        states = {v["version"]: v for v in listed["data"]}
        assert states["a"]["state"] == "live" and states["b"]["state"] == "candidate"
        assert states["b"]["kind"] == "knn" and states["b"]["data"] == "topics-strong"
        assert routed(c) == ("a", "small")

        r = c.post("/admin/routers/b/promote", headers=KEY)
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "live" and r.json()["previous"] == "a"
        assert routed(c) == ("b", "big")  # the very next request
        assert c.get("/readyz").json()["router"] == "b"
        metrics = c.get("/metrics").text
        assert 'contextforge_router_live{version="b"} 1.0' in metrics
        assert 'version="a"' not in metrics
        listed = c.get("/admin/routers", headers=KEY).json()
        assert {v["version"]: v["state"] for v in listed["data"]}["a"] == "retired"
        pinned = c.post("/v1/chat/completions", json={**CHAT, "model": "small"})
        assert "x-contextforge-router" not in pinned.headers  # no router decided it

        unknown = c.post("/admin/routers/zzz/promote", headers=KEY)
        assert unknown.status_code == 404
        assert "a, b, broken, other-encoder" in unknown.json()["error"]["message"]
        other = c.post("/admin/routers/other-encoder/promote", headers=KEY)
        assert other.status_code == 422 and "sha256" in other.json()["error"]["message"]
        broken = c.post("/admin/routers/broken/promote", headers=KEY)
        assert broken.status_code == 422 and "does not load" in broken.json()["error"]["message"]
        assert routed(c) == ("b", "big")  # refused: nothing changed
        assert Registry.for_config(config).read().live == "b"
    assert logged_routers(config) == ["a", "b", None, "b"]


def wait_for(client: httpx.Client, version: str, seconds: float = 10) -> float:
    """Seconds until the gateway routes with ``version``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if routed(client)[0] == version:
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"the gateway did not switch to router {version} in {seconds} s")


def test_cli_promotion_reaches_a_running_gateway_within_a_poll(config_file, capsys,
                                                               registry_log):
    config = load_config(config_file)
    with gateway(config, None) as url, httpx.Client(base_url=url) as client:
        assert routed(client) == ("a", "small")
        assert cli.main(["models", "promote", "b", "--config", str(config_file)]) == 0
        assert "within 0.05 s" in capsys.readouterr().out
        assert wait_for(client, "b") < 2
        assert routed(client) == ("b", "big")
        assert cli.main(["models", "promote", "a", "--config", str(config_file)]) == 0
        wait_for(client, "a")
        # Refused by the CLI before anything is written: running gateways see no change.
        assert cli.main(["models", "promote", "broken", "--config", str(config_file)]) == 2
        assert "does not load" in capsys.readouterr().err
    assert "router b now serving (was a)" in registry_log.text
    assert cli.main(["models", "list", "--config", str(config_file), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["live"] == "a"
    assert {v["version"]: v["state"] for v in listed["data"]} == {
        "a": "live", "b": "retired", "broken": "candidate", "other-encoder": "candidate"}
    assert cli.main(["models", "list", "--config", str(config_file)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:4] == ["VERSION", "STATE", "KIND", "MODELS"]
    assert table[3].split()[:4] == ["b", "retired", "knn", "2"]


def test_a_version_reading_other_encoder_layers_swaps_its_batcher_too(tmp_path, config_file,
                                                                      encoder_dir, encoder):
    """Routing on the transformer: ``a`` reads inner layers beside the embedding, ``b`` the
    embedding alone, so each swap also switches the micro-batcher that encodes for it."""
    from training.fit import train_router

    routers = tmp_path / "routers"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONTEXTFORGE_EMBED_CACHE", str(tmp_path / "emb"))
        for name, layers in (("a", None), ("b", ())):
            shutil.rmtree(routers / name)
            train_router(topics_table(), routers / name, kind="knn", encoder=encoder,
                         calibrate=False, layers=layers)
    raw = json.loads(config_file.read_text())
    raw["encoder"]["path"] = str(encoder_dir)
    config_file.write_text(json.dumps(raw))
    with TestClient(create_app(load_config(config_file))) as c:
        assert c.get("/admin/routers", headers=KEY).json()["serving"] == "a"
        for version in ("b", "a", "b"):
            assert c.post(f"/admin/routers/{version}/promote", headers=KEY).status_code == 200
            assert routed(c)[0] == version
            local = c.post("/v1/embeddings", json={"model": encoder.id, "input": EVEN_TOPIC})
            assert local.status_code == 200
            np.testing.assert_allclose(local.json()["data"][0]["embedding"],
                                       encoder.encode([EVEN_TOPIC])[0], atol=1e-5)


def test_start_up_serves_the_recorded_live_version(config_file):
    config = load_config(config_file)
    Registry.for_config(config).promote("b")
    with TestClient(create_app(config)) as c:
        assert routed(c) == ("b", "big")


def test_a_live_version_that_cannot_serve_is_refused_and_the_old_keeps_serving(config_file,
                                                                               registry_log):
    config = load_config(config_file)
    registry = Registry.for_config(config)
    with gateway(config, None) as url, httpx.Client(base_url=url) as client:
        registry.mark_live("other-encoder")  # as a hand edit would: no check
        deadline = time.monotonic() + 10
        while "router other-encoder refused" not in registry_log.text:
            assert time.monotonic() < deadline, registry_log.text
            time.sleep(0.02)
        assert routed(client) == ("a", "small")
        [refused] = [line for line in registry_log.lines if "refused" in line]
        assert "sha256" in refused and refused.endswith("a keeps serving")
        metrics = client.get("/metrics", headers=KEY).text
        assert 'contextforge_router_swaps_total{outcome="refused"} 1.0' in metrics
        registry.promote("b")  # the next change of the file is followed again
        wait_for(client, "b")


async def paced(client: httpx.AsyncClient, rate: float, stop: asyncio.Event,
                answered: list[str | None]):
    """Routed chat requests at ``rate`` a second until ``stop``, each sent on time whatever
    the ones before are doing: (status, router version) per request, in the order sent.
    ``answered`` gets each answer's router version as it arrives."""
    async def one():
        try:
            r = await client.post("/v1/chat/completions", json=CHAT)
        except httpx.HTTPError as exc:
            return 0, repr(exc)
        answered.append(r.headers.get("x-contextforge-router"))
        return r.status_code, answered[-1]

    loop = asyncio.get_running_loop()
    t0, sent = loop.time(), []
    while not stop.is_set():
        sent.append(asyncio.create_task(one()))
        await asyncio.sleep(max(0.0, t0 + len(sent) / rate - loop.time()))
    return await asyncio.gather(*sent)


async def until_answered_by(version: str, answered: list[str | None], seconds: float = 10):
    deadline = asyncio.get_running_loop().time() + seconds
    while not answered or answered[-1] != version:
        assert asyncio.get_running_loop().time() < deadline, f"{version} never answered"
        await asyncio.sleep(0.01)


def test_promotion_under_steady_load_fails_no_request(config_file):
    """100 requests/s while the live version changes four times, each change seen in the
    answers before the next: through the admin API (swapped at once) and the CLI (followed
    within a poll)."""
    config = load_config(config_file)

    async def run(url):
        stop, answered = asyncio.Event(), []
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            load = asyncio.create_task(paced(client, 100, stop, answered))
            t0 = time.monotonic()
            for i, version in enumerate(["b", "a", "b", "a"]):
                await asyncio.sleep(0.5)
                if i % 2 == 0:
                    r = await client.post(f"/admin/routers/{version}/promote", headers=KEY)
                    assert r.status_code == 200, r.text
                else:
                    args = ["models", "promote", version, "--config", str(config_file)]
                    assert await asyncio.to_thread(cli.main, args) == 0
                await until_answered_by(version, answered)
            await asyncio.sleep(0.5)
            stop.set()
            return await load, time.monotonic() - t0

    with gateway(config, None) as url:
        results, seconds = asyncio.run(run(url))
    failed = [r for r in results if r[0] != 200]
    # The load was real: close to 100/s (a loaded host's client falls a little behind).
    assert failed == [] and len(results) >= 250 and len(results) == pytest.approx(
        100 * seconds, rel=0.2)
    versions = [v for _, v in results]
    assert versions[0] == versions[-1] == "a" and "b" in versions
    # Every promotion was served (requests sent around a swap may land on either side).
    assert sum(versions[i - 1] != v for i, v in enumerate(versions) if i) >= 4


def test_a_split_route_sends_a_stable_share_of_users_to_another_version(config_file):
    """Online A/B: route auto splits half its users to version b; each user always meets
    the same arm, and the arms are counted in the log and in /metrics."""
    cfg = json.loads(config_file.read_text())
    cfg["routes"] = [{"name": "auto", "split": {"version": "b", "share": 0.5}}]
    config_file.write_text(json.dumps(cfg))
    config = load_config(config_file)
    users = [f"user-{i}" for i in range(24)]
    with TestClient(create_app(config)) as client:
        seen: dict[str, set[tuple[str, str]]] = {}
        for _ in range(2):
            for user in users:
                r = client.post("/v1/chat/completions", json={**CHAT, "user": user})
                assert r.status_code == 200
                seen.setdefault(user, set()).add((r.headers["x-contextforge-router"],
                                                  r.headers["x-contextforge-model"]))
        metrics = client.get("/metrics").text
    assert all(len(v) == 1 for v in seen.values())  # stable per user
    arms = {next(iter(v)) for v in seen.values()}
    assert arms == {("a", "small"), ("b", "big")}  # each version decides its arm
    n_b = sum(next(iter(v))[0] == "b" for v in seen.values())
    assert 4 <= n_b <= 20  # about half of 24 users
    log = TrafficLog(config.traffic.dsn, base_dir=config.resolve("."))
    try:
        rows = log.records()
    finally:
        log.close()
    assert {(r.arm, r.router) for r in rows} == {("a", "a"), ("b", "b")}
    assert (f'contextforge_route_arm_requests_total{{arm="b",route="auto",router="b",'
            f'status="200"}} {2.0 * n_b}') in metrics


def test_a_split_naming_an_unknown_version_is_a_config_error(config_file):
    from router.config import ConfigError
    from router.validate import build_engine

    cfg = json.loads(config_file.read_text())
    cfg["routes"] = [{"name": "auto", "split": {"version": "nope"}}]
    config_file.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"routes\[0\]\.split\.version: no router version "
                                          r"'nope'"):
        build_engine(load_config(config_file))


def test_route_explains_the_live_version(config_file, capsys):
    """`contextforge route` shows what the gateways serve: the registry's live version."""
    config = load_config(config_file)
    assert cli.main(["route", "--config", str(config_file), "--json", EVEN_TOPIC]) == 0
    before = json.loads(capsys.readouterr().out)
    Registry.for_config(config).promote("b")
    assert cli.main(["route", "--config", str(config_file), "--json", EVEN_TOPIC]) == 0
    after = json.loads(capsys.readouterr().out)
    assert (before["router"], before["model"]) == ("a", "small")
    assert (after["router"], after["model"]) == ("b", "big")
