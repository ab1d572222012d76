"""The router registry: versions and their states, atomic and serialised writes, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from router.artifact import ArtifactError
from router.config import ConfigError, load_config
from router.registry import Registry, RegistryError, UnknownVersion

SHIPPED = Path(__file__).resolve().parents[3] / "models" / "routers" / "default"
ROOT = SHIPPED.parents[2]


def copy_version(folder: Path, name: str) -> Path:
    out = folder / name
    out.mkdir(parents=True)
    for f in ("router.json", "weights.npz", "card.json"):
        shutil.copy2(SHIPPED / f, out / f)
    return out


@pytest.fixture()
def registry(tmp_path) -> Registry:
    """Versions a (router.path: live until another is promoted), b, c, d: copies of the
    shipped router."""
    folder = tmp_path / "routers"
    for name in "abcd":
        copy_version(folder, name)
    return Registry(folder, folder / "a")


def states(registry: Registry) -> dict[str, str]:
    return {v.version: v.state for v in registry.list()}


def test_a_fresh_registry_shows_router_path_live_and_the_rest_as_candidates(registry):
    listed = registry.list()
    assert [v.version for v in listed] == ["a", "b", "c", "d"]
    assert states(registry) == {"a": "live", "b": "candidate", "c": "candidate",
                                "d": "candidate"}
    a = listed[0]
    card = json.loads((SHIPPED / "card.json").read_text())
    assert (a.kind, a.models, a.data, a.rows) == ("taskmix", 11, "routerbench", 2225)
    assert a.created == card["created"]
    assert a.card is not None and a.card.aiq == card["evaluations"][0]["router"]["aiq"]
    assert a.card.dataset == "routerbench" and a.card.n == card["evaluations"][0]["n"]
    assert registry.live() == "a" and registry.live_path() == registry.folder / "a"
    assert not registry.file.exists()  # reading writes nothing


def test_promote_makes_live_retires_the_previous_and_rolls_back(registry):
    state = registry.promote("b")
    assert state.live == "b" and state.versions["b"].previous == "a"
    assert states(registry) == {"a": "retired", "b": "live", "c": "candidate",
                                "d": "candidate"}
    on_disk = json.loads(registry.file.read_text())
    assert on_disk["live"] == "b"
    assert on_disk["versions"]["a"]["state"] == "retired"
    assert registry.live_path() == registry.folder / "b"
    # Rollback: the retired version again; the one it replaced is retired in turn.
    first = registry.stamp()
    state = registry.promote("a")
    assert state.live == "a" and state.versions["a"].previous == "b"
    assert states(registry)["b"] == "retired"
    assert registry.stamp() != first
    # Promoting the live version changes nothing, not even the file.
    stamp = registry.stamp()
    assert registry.promote("a").live == "a" and registry.stamp() == stamp


def test_unknown_versions_are_refused_naming_the_known_ones(registry):
    (registry.folder / ".b.tmp123").mkdir()  # save_router's temp folder: not a version
    (registry.folder / "empty").mkdir()  # no router.json: not a version
    for name in ("zzz", "../routers/a", ".b.tmp123", "empty"):
        with pytest.raises(UnknownVersion) as err:
            registry.promote(name)
        assert "versions: a, b, c, d" in err.value.args[0]
    assert not registry.file.exists()


def test_a_broken_version_or_a_failed_check_is_refused_and_nothing_is_written(registry):
    (registry.folder / "c" / "weights.npz").write_bytes(b"not a zip")
    (registry.folder / "d" / "router.json").write_text("{")
    for name in ("c", "d"):
        with pytest.raises(ArtifactError, match=f"{name}"):
            registry.promote(name)

    def reads_other_encoder(router, folder):
        raise ArtifactError(f"router {router.spec.name!r} was trained on encoder 'x'")

    with pytest.raises(ArtifactError, match="'b' was trained"):
        registry.promote("b", reads_other_encoder)
    assert not registry.file.exists()
    listed = {v.version: v for v in registry.list()}
    assert listed["d"].error and "router.json" in listed["d"].error and listed["d"].kind is None
    assert listed["c"].error is None  # its router.json reads; only loading it fails


def test_a_copied_folder_reports_its_own_version_name(registry):
    assert json.loads((registry.folder / "b" / "router.json").read_text())["name"] == "default"
    assert registry.load("b").spec.name == "b"


def test_a_failed_write_leaves_the_old_registry_and_no_temp_file(registry, monkeypatch):
    registry.promote("b")
    before = registry.file.read_bytes()

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError, match="No space"):
        registry.promote("c")
    monkeypatch.undo()
    assert registry.file.read_bytes() == before
    assert not [p for p in registry.folder.iterdir() if p.name.startswith(".registry-")]
    assert registry.read().live == "b"


def chain(registry: Registry) -> list[str]:
    """The versions from the live one back through each one's ``previous``."""
    state = registry.read()
    out = [state.live]
    while (prev := state.versions[out[-1]].previous) is not None:
        out.append(prev)
    return out


def test_concurrent_promotes_lose_no_update(registry, monkeypatch):
    """Each promote reads, changes and replaces registry.json; a slow write widens the race.
    Without the lock some promotes would overwrite others' entries (a retired version would
    fall back to candidate and drop out of the chain of previous versions)."""
    write = Registry._write

    def slow_write(self, state):
        time.sleep(0.05)
        write(self, state)

    monkeypatch.setattr(Registry, "_write", slow_write)
    start = threading.Barrier(3)

    def promote(version):
        start.wait()
        registry.promote(version)

    threads = [threading.Thread(target=promote, args=(v,)) for v in "bcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live = registry.read().live
    assert sorted(chain(registry)) == ["a", "b", "c", "d"] and chain(registry)[-1] == "a"
    assert states(registry) == {v: "live" if v == live else "retired" for v in "abcd"}


PROMOTE_SLOWLY = """
import sys, time
from router.registry import Registry
write = Registry._write
Registry._write = lambda self, state: (time.sleep(0.05), write(self, state))
registry = Registry(sys.argv[1], sys.argv[1] + "/a")
for version in sys.argv[2:]:
    registry.promote(version)
"""


def test_two_processes_promoting_at_once_lose_no_update(registry):
    for name in ("e", "f", "g", "h"):
        copy_version(registry.folder, name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", PROMOTE_SLOWLY, str(registry.folder), *vs],
                              env=env) for vs in (("b", "c", "d"), ("e", "f", "g", "h"))]
    assert [p.wait(60) for p in procs] == [0, 0]
    assert sorted(chain(registry)) == list("abcdefgh")


def test_a_corrupt_registry_file_is_reported(registry):
    registry.file.write_text("{nope")
    with pytest.raises(RegistryError, match=r"registry\.json"):
        registry.list()
    with pytest.raises(RegistryError):
        registry.promote("b")


def test_the_config_names_the_registry(tmp_path):
    routers = tmp_path / "routers"
    copy_version(routers, "a")
    copy_version(routers, "b")
    cfg_file = tmp_path / "cf.yaml"
    cfg_file.write_text(f"router: {{path: {routers / 'a'}}}\n")
    registry = Registry.for_config(load_config(cfg_file))
    assert registry.folder == routers.resolve() and registry.live() == "a"
    # Elsewhere (relative to the config file's folder): router.path serves until a version
    # there is promoted; it is no version of that registry.
    copy_version(tmp_path / "elsewhere", "c")
    cfg_file.write_text(f"router: {{path: {routers / 'a'}, registry: elsewhere, poll_s: 0.5}}\n")
    cfg = load_config(cfg_file)
    registry = Registry.for_config(cfg)
    assert registry.folder == (tmp_path / "elsewhere").resolve() and cfg.router.poll_s == 0.5
    assert registry.live() is None and registry.live_path() == (routers / "a").resolve()
    assert states(registry) == {"c": "candidate"}
    registry.promote("c")
    assert registry.live_path() == registry.folder / "c" and states(registry) == {"c": "live"}
    cfg_file.write_text("router: {poll_s: -1}\n")
    with pytest.raises(ConfigError, match=r"router\.poll_s"):
        load_config(cfg_file)
