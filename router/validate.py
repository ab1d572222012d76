"""One validation pipeline for a config, run by every entry point that accepts one:
``contextforge validate``, ``contextforge serve`` (start-up), the admin API and
``Gateway.reconfigure``. A config that passes here is one the gateway serves.

1. structure: types and bounds, decoded by msgspec (``load_config``; admin bodies decode into
   the same structs);
2. cross-references: names, aliases, routes, candidates (``check_config``);
3. the server: a non-loopback address needs a master key (``check_server``), and the TLS
   certificate and key it terminates with load (``check_tls``);
4. providers: every deployment names an adapter or a named provider (``check_providers``);
5. adapters: every deployment's adapter builds, keys and endpoints present
   (``check_deployments``);
6. the cache: its index factory string builds, its verifier file exists (``check_cache``);
7. the router: every candidate's stand-in is a model the trained router knows
   (``RoutingEngine``), when an engine is built.

Every step reports all of its problems, each naming its path, in one ``ConfigError``.
"""

from __future__ import annotations

from router.artifact import ArtifactError, TrainedRouter
from router.cache.store import check_cache
from router.config import Config, ConfigError, check_config, check_server, check_tls
from router.engine import RoutingEngine, load_arms
from router.providers import check_deployments, check_providers


def check(config: Config) -> None:
    """Steps 2-6: everything that needs no model files; ``ConfigError`` otherwise."""
    errors = (check_config(config) + check_server(config.server) + check_tls(config)
              + check_cache(config))
    if errors:
        raise ConfigError("\n".join(errors))
    check_providers(config)
    check_deployments(config)


def build_engine(config: Config, *, like: RoutingEngine | None = None,
                 router: TrainedRouter | None = None) -> RoutingEngine:
    """Every step, and the engine that serves ``config``: ``like``'s encoders and router when
    given (a reconfiguration: the loaded transformer is shared too), else loaded from the
    files the config names. ``router`` (with ``like``) serves instead of ``like``'s: a
    promotion, refused (``ConfigError``) unless it reads ``like``'s encoder."""
    check(config)
    if like is None:
        if router is not None:
            raise TypeError("build_engine: a router to swap in needs the engine it replaces")
        return RoutingEngine.from_config(config)
    if router is None:
        router = like.router
    else:
        try:
            router.check_encoder(like.encoder)
        except ArtifactError as exc:
            raise ConfigError(f"{router.path}: {exc}") from None
    return RoutingEngine(config, like.encoder, router, text=like.text,
                         arms=load_arms(config, like.encoder, like.arms))


__all__ = ["ConfigError", "build_engine", "check"]
