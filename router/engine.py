"""One routing decision: embed the prompt, predict each candidate's quality, price it, choose.

``RoutingEngine`` ties the config's catalog and routes to the trained router and the encoder.
Catalog models borrow predicted quality from the router's data model they stand in for (the
shipped router learned from public evaluation data whose models predate the catalog's); cost
comes from the catalog's prices, the prompt's counted tokens and the model's expected answer
length.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import msgspec
import numpy as np

from router.artifact import ArtifactError, TrainedRouter, load_router
from router.catalog import Catalog
from router.config import Config, ConfigError, ModelEntry, RouteEntry
from router.embedding import Encoder, MicroBatcher
from router.encoders import (
    LazyEncoder,
    RoutingEncoder,
    check_text_encoder,
    load_encoder,
    text_encoder_slot,
)
from router.policy import PolicySpec, calibrate_threshold, choose


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


class _Route:
    """A route resolved against the catalog and router once, at start-up."""

    def __init__(self, entry: RouteEntry, models: list[ModelEntry], router: TrainedRouter):
        self.entry = entry
        self.models = models
        self.columns = np.array([router.models.index(m.stands_in_for) for m in models])
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
                 text: LazyEncoder | None = None):
        """``encoder`` is what ``router`` reads; ``text`` holds the transformer behind
        ``text_encoder`` (pass another engine's ``text`` to share one loaded copy)."""
        self.config = config
        self.catalog = Catalog(config.models)
        self.encoder = encoder
        self.router = router
        self.text = text or text_encoder_slot(config, encoder)
        self.routes: dict[str, _Route] = {}
        for i, entry in enumerate(config.routes):
            names = entry.candidates or [m.name for m in config.models if m.stands_in_for]
            models = [self.catalog.get(n) for n in names]
            for j, m in enumerate(models):
                if m.stands_in_for not in router.models:
                    raise ConfigError(
                        f"routes[{i}].candidates[{j}]: model {m.name!r} stands in for "
                        f"{m.stands_in_for!r}, which router {router.spec.name!r} does not know; "
                        f"its models: {', '.join(router.models)}")
            self.routes[entry.name] = _Route(entry, models, router)

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
        return cls(config, encoder, router)

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
    ) -> Decision:
        """Choose a model for ``prompt`` on ``route`` (default: the config's default route).

        ``input_tokens``: what the chosen model will read, when more than ``prompt`` (a whole
        conversation of which ``prompt`` is the routing text); costs and context windows are
        checked against it. Default: ``prompt``'s own token count."""
        t0 = time.perf_counter()
        name = route or self.config.default_route
        if name not in self.routes:
            raise KeyError(f"unknown route {name!r}; routes: {', '.join(sorted(self.routes))}")
        r = self.routes[name]
        spec = policy or r.entry.policy
        if embedding is None:
            embedding = self.embed(prompt)
        quality = self.router.predict(embedding[None, :], [prompt])[0, r.columns]
        n_in = self.encoder.count_tokens(prompt) if input_tokens is None else input_tokens
        cost = np.array([
            Catalog.cost_usd(m, n_in, Catalog.expected_output_tokens(m, max_output_tokens))
            for m in r.models
        ])
        why = [self._excluded(m, n_in, required, allowed, max_output_tokens) for m in r.models]
        eligible = np.array([w is None for w in why])
        i, reason = choose(quality, cost, eligible, spec, strong=r.strong, threshold=r.threshold)
        views = [
            CandidateView(m.name, m.stands_in_for, round(float(q), 4), float(c), w is None, w)
            for m, q, c, w in zip(r.models, quality, cost, why, strict=True)
        ]
        return Decision(
            route=name, model=r.models[i].name, mode=spec.mode, reason=reason, input_tokens=n_in,
            candidates=views, router=self.router.spec.name, encoder=self.encoder.id,
            elapsed_ms=round((time.perf_counter() - t0) * 1e3, 3),
        )

    @staticmethod
    def _excluded(m: ModelEntry, n_in: int, required: Collection[str],
                  allowed: Collection[str] | None, max_out: int | None) -> str | None:
        if allowed is not None and m.name not in allowed:
            return "not in the allowed models"
        missing = sorted(set(required) - set(m.capabilities))
        if missing:
            return f"lacks {', '.join(missing)}"
        if n_in + (max_out or 0) > m.context_window:
            return f"{n_in} + {max_out or 0} tokens exceed its context window {m.context_window}"
        return None
