"""One routing decision: embed the prompt, predict each candidate's quality, price it, choose.

``RoutingEngine`` ties the config's catalog and routes to the trained router and the encoder.
A catalog model is predicted by the router's own column for it when the router learned it
(trained on data or traffic naming it), else it borrows the column of the data model it stands
in for (the shipped router learned from public evaluation data whose models predate the
catalog's); ``CandidateView.stands_in_for`` is set only when it borrows. Cost
comes from the catalog's prices, the prompt's counted tokens and the model's expected answer
length.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Collection, Mapping

import msgspec
import numpy as np

from router.artifact import ArtifactError, TrainedRouter, load_router
from router.catalog import Catalog, prediction_column
from router.config import Config, ConfigError, ModelEntry, RouteEntry
from router.embedding import Encoder, MicroBatcher
from router.encoders import (
    LazyEncoder,
    RoutingEncoder,
    check_text_encoder,
    load_encoder,
    text_encoder_slot,
)
from router.policy import (
    NoEligibleModel,
    PolicySpec,
    calibrate_threshold,
    choose,
    describe,
    explore,
)
from router.requirements import Requirements, excluded_because, routing_prompt
from router.wire.openai import ChatRequest

PINNED = "none"  # a Decision's route when the caller named a concrete model


class CandidateView(msgspec.Struct, frozen=True):
    model: str
    stands_in_for: str | None
    predicted_quality: float | None
    estimated_cost_usd: float
    eligible: bool
    excluded_because: str | None = None


class Decision(msgspec.Struct, frozen=True):
    route: str
    model: str
    mode: str
    reason: str
    input_tokens: int
    candidates: list[CandidateView]
    router: str
    encoder: str
    elapsed_ms: float
    policy: str = ""  # ``router.policy.describe`` of the policy that decided
    # The probability that this decision's policy, exploration included, picked ``model``
    # for this request (1.0 when it does not explore): what off-policy estimates divide by.
    propensity: float = 1.0
    explored: bool = False  # the exploration draw, not the policy, picked ``model``
    arm: str | None = None  # a split route's arm: "a" (the live router) or "b" (the split's)


class UnknownTarget(KeyError):
    """A ``model`` value that is no catalog model, alias, route or ``auto``."""


class _Columns:
    """Which of a router's columns predict a route's candidates."""

    def __init__(self, models: list[ModelEntry], router: TrainedRouter):
        self.router = router
        self.columns = np.array([prediction_column(router.models, m.name, m.stands_in_for)
                                 for m in models])
        # Only models that borrow a column show their stand-in in decisions.
        self.borrows = [m.stands_in_for if m.name not in router.models else None
                        for m in models]


def arm_of(route: str, key: str, share: float) -> str:
    """A split route's arm for ``key`` (a user or tenant): "b" for ``share`` of keys, by a
    stable hash, so one key always meets the same arm and routes split independently."""
    digest = hashlib.blake2b(f"{route}\0{key}".encode(), digest_size=8).digest()
    return "b" if int.from_bytes(digest) / 2**64 < share else "a"


class _Route:
    """A route resolved against the catalog and router once, at start-up."""

    def __init__(self, entry: RouteEntry, models: list[ModelEntry], router: TrainedRouter,
                 split: TrainedRouter | None = None):
        self.entry = entry
        self.models = models
        main = _Columns(models, router)
        self.columns, self.borrows = main.columns, main.borrows
        self.arms = {"a": main, "b": _Columns(models, split)} if split is not None else None
        self.strong: int | None = None
        self.threshold: float | None = None
        if entry.policy.mode == "strong_share":
            if router.calibration is None:
                raise ConfigError(f"route {entry.name!r}: strong_share needs a router with "
                                  "calibration.npy (retrain it with `contextforge train`)")
            q = router.calibration[:, self.columns]
            self.strong = int(np.argmax(q.mean(axis=0)))
            self.threshold = calibrate_threshold(q, self.strong, entry.policy.strong_share)


class RoutingEngine:
    """Routing decisions for prompts, explained candidate by candidate."""

    def __init__(self, config: Config, encoder: RoutingEncoder, router: TrainedRouter,
                 text: LazyEncoder | None = None,
                 arms: Mapping[str, TrainedRouter] | None = None):
        """``encoder`` is what ``router`` reads; ``text`` holds the transformer behind
        ``text_encoder`` (pass another engine's ``text`` to share one loaded copy); ``arms``
        the router versions that split routes name (``load_arms``)."""
        self.config = config
        self.arms = dict(arms or {})
        self.catalog = Catalog(config.models)
        self.encoder = encoder
        self.router = router
        self.text = text or text_encoder_slot(config, encoder)
        self.routes: dict[str, _Route] = {}
        self._rngs: dict[str, random.Random] = {}
        for k, m in enumerate(config.models):
            # A stand-in names a data model the router must know (a typo would silently
            # drop the model from every route); a model the router learned needs none.
            if (m.stands_in_for is not None
                    and prediction_column(router.models, m.name, m.stands_in_for) is None):
                raise ConfigError(
                    f"models[{k}].stands_in_for: model {m.name!r} stands in for "
                    f"{m.stands_in_for!r}, which router {router.spec.name!r} does not know; "
                    f"its models: {', '.join(router.models)}")
        for i, entry in enumerate(config.routes):
            names = entry.candidates or [
                m.name for m in config.models
                if prediction_column(router.models, m.name, m.stands_in_for) is not None]
            split = None
            if entry.split is not None:
                split = self._split_router(i, entry, router, encoder)
            if not names:
                raise ConfigError(
                    f"routes[{i}]: route {entry.name!r} has no candidates: no catalog model has a "
                    f"column in router {router.spec.name!r} or a `stands_in_for` it knows "
                    f"({', '.join(router.models)})")
            models = [self.catalog.get(n) for n in names]
            for j, m in enumerate(models):
                for r in (router, split) if split is not None else (router,):
                    if prediction_column(r.models, m.name, m.stands_in_for) is None:
                        raise ConfigError(
                            f"routes[{i}].candidates[{j}]: router {r.spec.name!r} has no "
                            f"column for model {m.name!r} and it stands in for "
                            f"{m.stands_in_for!r}, which the router does not know either; "
                            f"its models: {', '.join(r.models)}")
            self.routes[entry.name] = _Route(entry, models, router, split)
            self._rngs[entry.name] = random.Random(entry.exploration.seed)

    def _split_router(self, i: int, entry: RouteEntry, router: TrainedRouter,
                      encoder: RoutingEncoder) -> TrainedRouter:
        """The router a split route's arm "b" reads: loaded (``load_arms``), on the same
        encoder and layers as the live one, so one embedding serves both arms."""
        assert entry.split is not None
        split = self.arms.get(entry.split.version)
        if split is None:
            raise ConfigError(f"routes[{i}].split.version: router version "
                              f"{entry.split.version!r} is not loaded")
        if split.layers != router.layers or split.spec.encoder.id != encoder.id:
            raise ConfigError(
                f"routes[{i}].split.version: {entry.split.version!r} reads encoder "
                f"{split.spec.encoder.id!r} layers {split.layers}, the live router "
                f"{encoder.id!r} layers {router.layers}: both arms must read the same")
        return split

    @classmethod
    def from_config(cls, config: Config) -> RoutingEngine:
        """Load the encoder and router the config names."""
        enc = config.encoder
        encoder = load_encoder(config.resolve(enc.path), quantized=enc.quantized, spin=enc.spin,
                               threads=enc.threads)
        check_text_encoder(config)
        router = load_router(config.resolve(config.router.path))
        try:
            router.check_encoder(encoder)
        except ArtifactError as exc:
            raise ConfigError(f"{config.resolve(config.router.path)}: {exc}") from None
        return cls(config, encoder, router, arms=load_arms(config, encoder))

    @property
    def text_encoder(self) -> Encoder:
        """The transformer (``encoder.text_path``) for ``/v1/embeddings`` and anything else
        that needs its vectors, never the static routing table; loaded on first use."""
        return self.text.get()

    def embed(self, prompt: str) -> np.ndarray:
        """What the router reads for ``prompt``: ``Encoder.encode_routing`` of its routing text
        (the sentence embedding is the first ``encoder.dim`` values)."""
        text = self.router.routing_texts([prompt])[0]
        return self.encoder.encode_routing([text], self.router.layers)[0]

    async def adecide(self, prompt: str, batcher: MicroBatcher, **kwargs) -> Decision:
        """``decide`` with the embedding computed by a shared micro-batcher (async callers),
        made with ``layers=self.router.layers``."""
        emb = await batcher.encode(self.router.routing_texts([prompt])[0])
        return self.decide(prompt, embedding=emb, **kwargs)

    def decide(
        self,
        prompt: str,
        *,
        route: str | None = None,
        required: Collection[str] = (),
        allowed: Collection[str] | None = None,
        max_output_tokens: int | None = None,
        policy: PolicySpec | None = None,
        embedding: np.ndarray | None = None,
        input_tokens: int | None = None,
        exploring: bool = False,
        arm_key: str | None = None,
    ) -> Decision:
        """Choose a model for ``prompt`` on ``route`` (default: the config's default route).

        ``input_tokens``: what the chosen model will read, when more than ``prompt`` (a whole
        conversation of which ``prompt`` is the routing text); costs and context windows are
        checked against it. Default: ``prompt``'s own token count. ``exploring``: apply the
        route's exploration (served traffic does; explanations and replays do not).
        ``arm_key``: who asks (a user or tenant), for a split route's arm."""
        t0 = time.perf_counter()
        name = route or self.config.default_route
        if name not in self.routes:
            raise KeyError(f"unknown route {name!r}; routes: {', '.join(sorted(self.routes))}")
        r = self.routes[name]
        spec = policy or r.entry.policy
        if embedding is None:
            embedding = self.embed(prompt)
        arm, predictor, columns, borrows = None, self.router, r.columns, r.borrows
        if r.arms is not None and r.entry.split is not None:
            arm = arm_of(name, arm_key or "", r.entry.split.share)
            chosen = r.arms[arm]
            predictor, columns, borrows = chosen.router, chosen.columns, chosen.borrows
        quality = predictor.predict(embedding[None, :], [prompt])[0, columns]
        n_in = self.encoder.count_tokens(prompt) if input_tokens is None else input_tokens
        cost = np.array([
            Catalog.cost_usd(m, n_in, Catalog.expected_output_tokens(m, max_output_tokens))
            for m in r.models
        ])
        needs = Requirements(frozenset(required), max_output_tokens)
        why = [excluded_because(m, needs, n_in, allowed) for m in r.models]
        eligible = np.array([w is None for w in why])
        i, reason = choose(quality, cost, eligible, spec, strong=r.strong, threshold=r.threshold)
        propensity, explored = 1.0, False
        if exploring and r.entry.exploration.rate > 0:
            best = i
            i, propensity = explore(best, quality, eligible, r.entry.exploration,
                                    self._rngs[name])
            if i != best:
                explored = True
                reason = (f"exploring (rate {r.entry.exploration.rate:g}) instead of "
                          f"{r.models[best].name}: {reason}")
        views = [
            CandidateView(m.name, b, round(float(q), 4), float(c), w is None, w)
            for m, b, q, c, w in zip(r.models, borrows, quality, cost, why, strict=True)
        ]
        return Decision(
            route=name, model=r.models[i].name, mode=spec.mode, reason=reason, input_tokens=n_in,
            candidates=views, router=predictor.spec.name, encoder=self.encoder.id,
            elapsed_ms=round((time.perf_counter() - t0) * 1e3, 3), policy=describe(spec),
            propensity=propensity, explored=explored, arm=arm,
        )

    def routing_text(self, request: ChatRequest) -> str | None:
        """The text the router embeds for ``request`` (None when it pins a model or names
        nothing): its routing prompt without the router's boilerplate."""
        try:
            routed = self.target(request.model) in self.routes
        except UnknownTarget:
            return None
        return self.router.routing_texts([routing_prompt(request)])[0] if routed else None

    def target(self, model: str) -> str:
        """The route (or, pinned, the catalog model) a request's ``model`` names: ``auto`` is
        the default route; ``UnknownTarget`` when it names nothing."""
        name = self.config.default_route if model == "auto" else model
        if name in self.routes:
            return name
        if name in self.catalog:
            return self.catalog.get(name).name
        raise UnknownTarget(f"The model `{model}` does not exist: use a catalog model, a route "
                            "or `auto` (see GET /v1/models)")

    def select(self, model: str, prompt: str, *, needs: Requirements, input_tokens: int,
               embedding: np.ndarray | None = None, policy: PolicySpec | None = None,
               allowed: Collection[str] | None = None, exploring: bool = False,
               arm_key: str | None = None) -> Decision:
        """The decision for a request naming ``model``: routed when it names a route (or
        ``auto``), pinned when it names a catalog model; the gateway and ``contextforge route``
        both come here. ``NoEligibleModel`` when nothing can serve the request (for a pinned
        model: with the reason), ``UnknownTarget`` when ``model`` names nothing."""
        name = self.target(model)
        if name in self.routes:
            try:
                return self.decide(prompt, route=name, required=needs.capabilities,
                                   allowed=allowed, max_output_tokens=needs.max_output_tokens,
                                   policy=policy, embedding=embedding, input_tokens=input_tokens,
                                   exploring=exploring, arm_key=arm_key)
            except NoEligibleModel:
                caps = ", ".join(sorted(needs.capabilities)) or "no special capabilities"
                raise NoEligibleModel(
                    f"no model on route {name!r} satisfies this request: it needs {caps} and "
                    f"{input_tokens} input + {needs.max_output_tokens or 0} output tokens of "
                    "context") from None
        m = self.catalog.get(name)
        why = excluded_because(m, needs, input_tokens)
        if why:
            raise NoEligibleModel(f"model {m.name!r} cannot serve this request: {why}")
        cost = Catalog.cost_usd(m, input_tokens,
                                Catalog.expected_output_tokens(m, needs.max_output_tokens))
        return Decision(route=PINNED, model=m.name, mode="pinned", reason="named by the caller",
                        policy="pinned",
                        input_tokens=input_tokens, candidates=[CandidateView(
                            m.name, None if m.name in self.router.models else m.stands_in_for,
                            None, cost, True)],
                        router=self.router.spec.name, encoder=self.encoder.id, elapsed_ms=0.0)

    def prompt_limit(self, target: str) -> int:
        """The most prompt tokens a request to ``target`` (from ``target()``) may carry."""
        route = self.routes.get(target)
        if route is not None and route.entry.max_prompt_tokens is not None:
            return route.entry.max_prompt_tokens
        return self.config.server.max_prompt_tokens


def load_arms(config: Config, encoder: RoutingEncoder,
              loaded: Mapping[str, TrainedRouter] | None = None) -> dict[str, TrainedRouter]:
    """The router versions that ``config``'s split routes name, from its registry (reusing
    ``loaded`` ones), each checked to read ``encoder``."""
    from router.registry import Registry, load_version

    versions = {r.split.version for r in config.routes if r.split is not None}
    if not versions:
        return {}
    registry = Registry.for_config(config)
    arms = {}
    for i, route in enumerate(config.routes):
        if route.split is None or route.split.version in arms:
            continue
        version = route.split.version
        if loaded is not None and version in loaded:
            arms[version] = loaded[version]
            continue
        try:
            router = load_version(registry.path(version), version)
            router.check_encoder(encoder)
        except (ArtifactError, LookupError) as exc:
            why = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ConfigError(f"routes[{i}].split.version: {why}") from None
        arms[version] = router
    return arms
