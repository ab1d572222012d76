"""A deploy file's gateway config, checked the way ``contextforge validate`` checks it in the
image: its ``/app/...`` paths read from this checkout, and only the environment variables the
container is given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.config import load_config
from router.engine import RoutingEngine
from router.validate import build_engine
from tests.deploy.conftest import ROOT

IMAGE_ROOT = "/app/"
# What the gateway reads from its environment: cleared, so only the container's count.
SECRET_VARS = ("CONTEXTFORGE_MASTER_KEY", "CONTEXTFORGE_KEY_SECRET", "PGPASSWORD")


def image_paths(text: str) -> list[str]:
    """The file paths a config names inside the image."""
    return sorted({word.strip("\"',{}[]") for word in text.split()
                   if word.strip("\"',{}[]").startswith(IMAGE_ROOT)})


def validate(config: Path, env: set[str], tmp: Path, mp: pytest.MonkeyPatch) -> RoutingEngine:
    """The engine ``config`` builds with exactly ``env`` set (to placeholders); ConfigError
    naming every problem otherwise."""
    local = tmp / config.name
    local.write_text(config.read_text().replace(IMAGE_ROOT, f"{ROOT}/"))
    for name in list(os.environ):
        if name.endswith("_API_KEY") or name in SECRET_VARS:
            mp.delenv(name)
    for name in env:
        mp.setenv(name, "placeholder-0123456789abcdef")
    return build_engine(load_config(local))
