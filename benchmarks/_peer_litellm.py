"""The LiteLLM proxy as a peer for ``gateway_overhead.py --peer litellm``, in its own venv.

LiteLLM is never a dependency of the project: it is installed on first use into a scratch
venv (``.cache/peer-litellm``, git-ignored, reused while it holds the pinned version) with
``litellm[proxy]`` plus uvloop and httptools, the fast server stack its CLI picks when they
are installed (as ours does). It runs with one worker, no master key, no database, telemetry
off and the local cost map (no network), with one model on the same immediate upstream as
the gateway.

This LiteLLM refuses to start without a master key unless told the lack is deliberate
(``LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY``): a benchmark on loopback is that case,
and a master key would add an auth check to every request that our measured path does not make.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

VERSION = "1.108.7"  # the version the figures (2026-12-04) were measured with
HEALTH_PATH = "/health/liveliness"


def ensure_venv(venv: Path, version: str = VERSION) -> str:
    """The venv's litellm version, installing ``litellm[proxy]==version`` (with uvloop and
    httptools) first unless the venv already has it."""
    python = venv / "bin" / "python"
    if installed(python) != version:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"installing litellm[proxy]=={version} into {venv} (once)...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        f"litellm[proxy]=={version}", "uvloop", "httptools"], check=True)
    got = installed(python)
    if got is None:
        raise RuntimeError(f"litellm did not install into {venv}")
    return got


def installed(python: Path) -> str | None:
    """The litellm version in the venv of ``python``, or None."""
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                          "print(m.version('litellm'))"], capture_output=True, text=True)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def write_config(tmp: Path, upstream_port: int, model: str) -> Path:
    """A proxy config with ``model`` served by the immediate upstream (OpenAI format)."""
    cfg = {
        "model_list": [{"model_name": model, "litellm_params": {
            "model": f"openai/{model}", "api_base": f"http://127.0.0.1:{upstream_port}/v1",
            "api_key": "sk-bench"}}],
        "litellm_settings": {"telemetry": False},
    }
    path = tmp / "litellm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def command(venv: Path, config: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that start the proxy on 127.0.0.1:port with one worker."""
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    env.pop("LITELLM_MASTER_KEY", None)
    env.pop("DATABASE_URL", None)
    return argv, env
