"""Live router promotion: a running gateway serves the registry's live version
(``router.registry``) and follows it without a restart.

``RouterRegistryWatch.sync`` compares the registry's live version with the router serving and
swaps the live one in through the gateway's build-then-swap (``Gateway.prepare_router``, then
``Gateway.use_engine``): built and warmed off the event loop, swapped in one step; requests
already routed finish on the engine they started with. ``follow`` runs ``sync`` whenever
``registry.json`` changes (its stat polled every ``router.poll_s``, off the loop), so
``contextforge models promote V`` reaches every replica that shares the folder within one
interval. ``promote`` is the admin API's: checked, written and swapped at once.

A version that does not load, reads another encoder or lacks a column the routes need is
refused with one log line, and the router serving keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from router.artifact import ArtifactError
from router.config import ConfigError
from router.engine import RoutingEngine
from router.registry import (
    Registry,
    RegistryError,
    RegistryState,
    load_version,
    serving_config,
)
from service.gateway import Gateway

log = logging.getLogger("contextforge.registry")

_UNSEEN = object()  # the registry file's stamp before the first look


class RouterRegistryWatch:
    """Keeps ``gateway`` on ``registry``'s live router version."""

    def __init__(self, gateway: Gateway, registry: Registry):
        self.gateway = gateway
        self.registry = registry
        self._stamp: object = _UNSEEN
        self._started = False  # the first sync (start-up) is no promotion

    @property
    def serving(self) -> str:
        """The router version this process routes with."""
        return self.gateway.engine.router.spec.name

    def _serves(self, folder: Path) -> bool:
        """Whether the router serving is ``folder``'s, under its name (resolving paths touches
        the disk: call it off the event loop)."""
        router = self.gateway.engine.router
        return (router.path is not None and Path(router.path).resolve() == folder.resolve()
                and router.spec.name == folder.name)

    async def sync(self) -> bool:
        """Serve the registry's live version if another one serves; True when it swapped.
        A version that cannot serve is logged and left; it is tried again once
        ``registry.json`` changes."""
        stamp = await asyncio.to_thread(self.registry.stamp)
        if stamp == self._stamp:
            return False
        try:
            return await self._sync(stamp)
        finally:
            self._started = True

    async def _sync(self, stamp: object) -> bool:
        self._stamp = stamp
        try:
            state = await asyncio.to_thread(self.registry.read)
        except RegistryError as exc:
            log.error("router registry: %s; %s keeps serving", exc, self.serving)
            return False
        async with self.gateway.changes:
            folder = self.registry.live_path(state)
            if await asyncio.to_thread(self._serves, folder):
                return False
            try:
                await self._swap(folder)
            except (ArtifactError, ConfigError) as exc:
                self.gateway.metrics.child(self.gateway.metrics.router_swaps, "refused").inc()
                log.error("router %s refused: %s; %s keeps serving", folder.name, exc,
                          self.serving)
                return False
        return True

    async def promote(self, version: str) -> RegistryState:
        """Make ``version`` live here and in the registry (the admin API): ``UnknownVersion``,
        ``ArtifactError`` or ``ConfigError`` when it cannot serve, and then nothing changed."""
        async with self.gateway.changes:
            folder = await asyncio.to_thread(self.registry.path, version)
            router = await asyncio.to_thread(load_version, folder, version)
            engine = await self.gateway.prepare_router(
                router, serving_config(self.gateway.config, self.registry, folder))
            state = await asyncio.to_thread(self.registry.mark_live, version)
            self._use(engine)
        return state

    async def _swap(self, folder: Path) -> None:
        # By folder, not version: what serves with no live version may lie outside the registry.
        router = await asyncio.to_thread(load_version, folder, folder.name)
        engine = await self.gateway.prepare_router(
            router, serving_config(self.gateway.config, self.registry, folder))
        self._use(engine)

    def _use(self, engine: RoutingEngine) -> None:
        before = self.serving
        self.gateway.use_engine(engine)
        if not self._started:
            log.info("router %s serving (%s)", self.serving, engine.router.path)
            return
        self.gateway.metrics.child(self.gateway.metrics.router_swaps, "swapped").inc()
        log.info("router %s now serving (was %s)", self.serving, before)

    async def follow(self, interval_s: float) -> None:
        """Run ``sync`` every ``interval_s`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync()
            except Exception:  # the watch must outlive any one bad look (a full disk, ...)
                log.exception("router registry: checking %s failed", self.registry.file)
