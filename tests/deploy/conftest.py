"""Fixtures of the deploy-file tests: the repository's deploy/ folder, the linters' runs.

checkov lives in its own venv under ``.cache/``, made on first use: its pins would downgrade
packages the project runs on (botocore 1.44 -> 1.35, packaging 26 -> 23.2, networkx 3.6 ->
2.6), so it cannot share the project's venv. Making it takes ~40 s once; a run ~3 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHECKOV_VERSION = "3.3.30"
CHECKOV_VENV = ROOT / ".cache" / f"checkov-{CHECKOV_VERSION}"


def tool(name: str) -> str:
    """A linter installed beside this interpreter (the dev extra), by its path."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _make_checkov_venv() -> Path:
    """The venv, built beside its final place and renamed into it: a session killed halfway
    leaves no half-made venv that later sessions would trust."""
    building = CHECKOV_VENV.with_name(f"{CHECKOV_VENV.name}.{uuid.uuid4().hex[:8]}")
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True)
    run = subprocess.run([str(building / "bin" / "pip"), "install", "-q",
                          "--disable-pip-version-check", f"checkov=={CHECKOV_VERSION}"],
                         capture_output=True, text=True)
    if run.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        pytest.fail(f"cannot install checkov=={CHECKOV_VERSION}: {run.stderr[-2000:]}")
    try:
        building.rename(CHECKOV_VENV)
    except OSError:  # another session made it first
        shutil.rmtree(building, ignore_errors=True)
    return CHECKOV_VENV


@pytest.fixture(scope="session")
def checkov() -> Path:
    """The Python of checkov's own venv (made on first use). checkov runs as
    ``python -m checkov.main``: the venv was renamed after it was built, which breaks its
    scripts' shebangs but not its interpreter."""
    python = CHECKOV_VENV / "bin" / "python"
    if not (CHECKOV_VENV / "bin" / "checkov").exists():
        _make_checkov_venv()
    return python


def run_checkov(python: Path, target: Path, frameworks: list[str]) -> list[dict[str, Any]]:
    """checkov's JSON reports (one per framework) on a file or a folder, offline."""
    flag = "-f" if target.is_file() else "-d"
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}
    run = subprocess.run([str(python), "-m", "checkov.main", flag, str(target),
                          "--framework", *frameworks,
                          "--skip-download", "--quiet", "-o", "json"],
                         capture_output=True, text=True, env=env, cwd=target.parent)
    try:
        reports = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no report (exit {run.returncode}): "
                    f"{run.stdout[-1500:]}{run.stderr[-1500:]}")
    return reports if isinstance(reports, list) else [reports]


@pytest.fixture(scope="session")
def checkov_reports(checkov) -> dict[str, dict[str, Any]]:
    """checkov over deploy/ (the Dockerfile and the Kubernetes manifests), by framework."""
    return {r["check_type"]: r
            for r in run_checkov(checkov, DEPLOY, ["dockerfile", "kubernetes"])}
