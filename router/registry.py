"""The router registry: a folder of router versions, each a candidate, live or retired.

Layout (the folder is ``router.registry``; by default the folder that holds ``router.path``)::

    models/routers/
      default/ v2/ ...   versions: every subfolder with a router.json; its name is the version
      registry.json      {"live": "v2", "versions": {"v2": {"state": "live", "changed": ISO
                         time, "previous": "default"}, "default": {"state": "retired", ...}}}
      .registry.lock     held (flock) while registry.json is read, changed and replaced

A version with no entry is a candidate. While no version is recorded live, ``router.path`` is
what gateways serve, and it is shown as live when it is one of the folder's versions.
``promote`` marks a version live and the one live before it retired (its entry keeps
``previous``: what a rollback promotes). Writes are atomic (temp file + rename) and serialised by
the lock, so two ``contextforge models promote`` at once cannot lose an update. Running gateways
follow ``registry.json`` (``service.promotion``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec

from router.artifact import ArtifactError, RouterSpec, TrainedRouter, load_router
from router.config import Config

State = Literal["candidate", "live", "retired"]
REGISTRY_FILE = "registry.json"
LOCK_FILE = ".registry.lock"


class UnknownVersion(KeyError):
    """A version that is no router folder of the registry."""


class RegistryError(ValueError):
    """``registry.json`` is unreadable or cannot be written."""


class VersionState(msgspec.Struct, frozen=True, omit_defaults=True):
    state: State
    changed: str  # when it took this state (ISO 8601, UTC)
    previous: str | None = None  # the version that was live before this one became live


class RegistryState(msgspec.Struct, frozen=True):
    """What ``registry.json`` holds."""

    live: str | None = None
    versions: dict[str, VersionState] = {}


class CardHeadline(msgspec.Struct, frozen=True):
    """A version's first evaluation in its ``card.json``: held-out rows only."""

    dataset: str
    n: int
    aiq: float | None
    zero_router_aiq: float | None
    quality: float | None
    cost: float | None


class VersionInfo(msgspec.Struct, frozen=True):
    """One version as ``models list`` and ``GET /admin/routers`` show it."""

    version: str
    state: State
    path: str
    kind: str | None = None
    models: int = 0
    created: str = ""
    data: str | None = None
    rows: int | None = None
    changed: str | None = None
    previous: str | None = None
    card: CardHeadline | None = None
    error: str | None = None  # why its router.json does not read


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _headline(folder: Path) -> CardHeadline | None:
    """The card's first evaluation; None without a (readable) card."""
    try:
        card = json.loads((folder / "card.json").read_text())
        e = card["evaluations"][0]
        r = e["router"]
        return CardHeadline(dataset=e["dataset"], n=e["n"], aiq=r.get("aiq"),
                            zero_router_aiq=e.get("zero_router_aiq"),
                            quality=r.get("quality"), cost=r.get("cost"))
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


class Registry:
    """The versions in ``folder`` and their states; ``default`` is ``router.path``, what
    serves while no version is recorded live."""

    def __init__(self, folder: str | os.PathLike[str], default: str | os.PathLike[str]):
        self.folder = Path(folder).resolve()
        self.default = Path(default).resolve()

    @classmethod
    def for_config(cls, config: Config) -> Registry:
        """The registry a config names (``router.registry``, else ``router.path``'s folder)."""
        default = config.resolve(config.router.path).resolve()
        folder = config.resolve(config.router.registry) if config.router.registry \
            else default.parent
        return cls(folder, default)

    @property
    def file(self) -> Path:
        return self.folder / REGISTRY_FILE

    def versions(self) -> list[str]:
        """The version names: subfolders with a ``router.json`` (not hidden: ``save_router``
        writes into a hidden temp folder first)."""
        try:
            entries = list(self.folder.iterdir())
        except FileNotFoundError:
            return []
        return sorted(p.name for p in entries
                      if not p.name.startswith(".") and (p / "router.json").is_file())

    def path(self, version: str) -> Path:
        """The folder of ``version``; ``UnknownVersion`` naming the known ones."""
        known = self.versions()
        if version not in known:
            raise UnknownVersion(f"no router version {version!r} in {self.folder}; versions: "
                                 f"{', '.join(known) or 'none'}")
        return self.folder / version

    def read(self) -> RegistryState:
        """``registry.json`` (empty when there is none yet)."""
        try:
            data = self.file.read_bytes()
        except FileNotFoundError:
            return RegistryState()
        except OSError as exc:
            raise RegistryError(f"{self.file}: cannot read: {exc.strerror}") from exc
        try:
            return msgspec.json.decode(data, type=RegistryState)
        except msgspec.DecodeError as exc:
            raise RegistryError(f"{self.file}: not a valid registry: {exc}") from exc

    def stamp(self) -> tuple[int, int, int] | None:
        """What changes whenever ``registry.json`` is replaced (inode, size, mtime); None
        when there is no file. Cheap: what gateways poll."""
        try:
            st = os.stat(self.file)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def live(self, state: RegistryState | None = None) -> str | None:
        """The live version: the one recorded, else ``router.path``'s folder when it is one
        of this registry's; None when what serves lies outside the registry."""
        state = self.read() if state is None else state
        if state.live is not None:
            return state.live
        if self.default.parent == self.folder and (self.default / "router.json").is_file():
            return self.default.name
        return None

    def live_path(self, state: RegistryState | None = None) -> Path:
        """The router folder a gateway serves: the recorded live version's, else
        ``router.path``."""
        state = self.read() if state is None else state
        return self.folder / state.live if state.live is not None else self.default

    def load(self, version: str) -> TrainedRouter:
        """``version``'s router, named by its folder: a folder copied from another version
        still reports its own name in decisions and the traffic log."""
        return load_version(self.path(version), version)

    def promote(self, version: str,
                check: Callable[[TrainedRouter, Path], object] | None = None) -> RegistryState:
        """Make ``version`` live: it must load (``ArtifactError`` otherwise) and pass ``check``
        (the caller's: e.g. that it reads the config's encoder); then it is marked live and
        the one live before it retired. Nothing is written when a check fails."""
        router = self.load(version)
        if check is not None:
            check(router, self.folder / version)
        return self.mark_live(version)

    def mark_live(self, version: str) -> RegistryState:
        """Record ``version`` as live (checked by the caller), the previous live retired."""
        self.path(version)
        with self._locked():
            state = self.read()
            current = self.live(state)
            if state.live == version:
                return state
            now = _now()
            versions = dict(state.versions)
            if current is not None and current != version:
                old = versions.get(current)
                versions[current] = VersionState("retired", now, old.previous if old else None)
            versions[version] = VersionState("live", now, current if current != version else None)
            new = RegistryState(live=version, versions=versions)
            self._write(new)
        return new

    def list(self) -> list[VersionInfo]:
        """Every version (and every recorded one whose folder is gone) with its state, what it
        is and its card's headline figures."""
        state = self.read()
        live = self.live(state)
        names = sorted(set(self.versions()) | set(state.versions))
        return [self._info(v, state, live) for v in names]

    def _info(self, version: str, state: RegistryState, live: str | None) -> VersionInfo:
        entry = state.versions.get(version)
        status: State = "live" if version == live else \
            "candidate" if entry is None or entry.state == "live" else entry.state
        folder = self.folder / version
        base: dict[str, Any] = {
            "version": version, "state": status, "path": str(folder),
            "changed": entry.changed if entry else None,
            "previous": entry.previous if entry else None}
        try:
            spec = msgspec.json.decode((folder / "router.json").read_bytes(), type=RouterSpec)
        except (OSError, msgspec.DecodeError) as exc:
            return VersionInfo(**base, error=f"router.json does not read: {exc}")
        return VersionInfo(**base, kind=spec.kind, models=len(spec.models),
                           created=spec.created, data=spec.data.name, rows=spec.data.rows,
                           card=_headline(folder))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry's lock: one read-change-write at a time, across processes (flock on
        a separate file, so replacing registry.json never drops it)."""
        try:
            fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RegistryError(f"{self.folder}: cannot lock the registry: {exc.strerror}") \
                from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, state: RegistryState) -> None:
        """Replace registry.json atomically: readers see the old file or the new one."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".registry-", dir=self.folder)
        except OSError as exc:
            raise RegistryError(f"{self.file}: cannot write: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(state)) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; gateways may run as others
            os.replace(tmp, self.file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_version(folder: Path, version: str) -> TrainedRouter:
    """The router in ``folder`` named ``version``; ``ArtifactError`` with the reason when it
    does not load."""
    try:
        router = load_router(folder)
    except ArtifactError:
        raise
    except Exception as exc:  # a broken artifact fails in numpy, zipfile, a predictor...
        raise ArtifactError(f"{folder}: does not load: {type(exc).__name__}: {exc}") from exc
    if router.spec.name == version:
        return router
    spec = msgspec.structs.replace(router.spec, name=version)
    return TrainedRouter(spec, router.predictor, router.path, router.calibration)


def serving_config(config: Config, registry: Registry, folder: Path) -> Config:
    """``config`` serving the router in ``folder``, with the registry pinned where it is (so
    it does not move with ``router.path``)."""
    router = msgspec.structs.replace(config.router, path=str(folder),
                                     registry=str(registry.folder))
    return msgspec.structs.replace(config, router=router)
