"""yamllint over every YAML file in deploy/, with deploy/.yamllint."""

from __future__ import annotations

import subprocess

from tests.deploy.conftest import DEPLOY, tool

CONFIG = DEPLOY / ".yamllint"


def lint(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("yamllint"), "--strict", "-f", "parsable", "-c", str(CONFIG),
                           *paths], capture_output=True, text=True)


def test_every_deploy_yaml_passes_yamllint():
    files = sorted(str(p) for p in DEPLOY.rglob("*.y*ml"))
    assert len(files) >= 10  # the k8s manifests, compose, its config, the alert rules
    run = lint(*files)
    assert run.returncode == 0, run.stdout + run.stderr


def test_yamllint_fails_a_broken_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("a:\n  b: 1\n   c: 2\nd: yes\n")
    run = lint(str(broken))
    assert run.returncode != 0 and "syntax" in run.stdout
    truthy = tmp_path / "truthy.yaml"
    truthy.write_text("appendonly: yes\n")
    assert "truthy" in lint(str(truthy)).stdout
