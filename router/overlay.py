"""Run-time catalog changes (the admin API's), persisted as an overlay on the config file.

The YAML file stays the operator's: the admin API never rewrites it. Its changes go to a small
JSON file (``admin.state_path``) holding, per model and per named provider, either the entry
that replaces or adds one, or ``null`` for one removed. ``load_config`` applies the overlay,
so ``serve``, ``route`` and ``validate`` all see the catalog the admin API left; edits to the
YAML's other entries keep applying. Writes are atomic (temp file + rename): a crash leaves the
old overlay or the new one, never half of one.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from router.config import Config, ConfigError, ModelEntry, ProviderEntry, check_config, load_config
from router.files import write_atomic


class Overlay(msgspec.Struct, omit_defaults=True):
    version: int = 1
    models: dict[str, ModelEntry | None] = msgspec.field(default_factory=dict)
    providers: dict[str, ProviderEntry | None] = msgspec.field(default_factory=dict)

    def apply(self, config: Config) -> Config:
        """``config`` with this overlay's upserts and removals (order kept; new entries last)."""
        return msgspec.structs.replace(
            config,
            models=_merge(config.models, self.models),
            providers=_merge(config.providers, self.providers),
        )


def _merge(entries, changes):
    out = [changes.get(e.name, e) if e.name in changes else e for e in entries]
    out = [e for e in out if e is not None]
    have = {e.name for e in entries}
    out += [e for name, e in changes.items() if e is not None and name not in have]
    return out


def read_overlay(path: Path) -> Overlay:
    """The overlay at ``path`` (an empty one if the file does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Overlay()
    try:
        return msgspec.json.decode(data, type=Overlay)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not a valid admin overlay: {exc}") from exc


def write_overlay(path: Path, overlay: Overlay) -> None:
    write_atomic(path, msgspec.json.format(msgspec.json.encode(overlay)))


def overlay_path(config: Config) -> Path:
    return config.resolve(config.admin.state_path)


def load_effective_config(path: str | os.PathLike[str] | None = None) -> Config:
    """The config file with the admin API's persisted changes applied (what ``serve`` runs)."""
    config = load_config(path)
    where = overlay_path(config)
    try:
        overlay = read_overlay(where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if not overlay.models and not overlay.providers:
        return config
    merged = overlay.apply(config)
    errors = check_config(merged)
    if errors:
        raise ConfigError(f"{where}: " + f"\n{where}: ".join(errors))
    return merged
