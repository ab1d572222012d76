"""Prometheus metrics (``GET /metrics``), one registry per app so apps and tests stay apart.

Label sets are kept small and bounded (models, providers, routes and statuses come from the
config; tenants from the key store), so the series count cannot grow with traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from router.dispatch import Dispatcher, Upstream, state_of
from router.providers import ProviderError

# Seconds: from sub-millisecond cache hits to multi-minute reasoning answers.
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_DECISION = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256)
_TPS = (1, 5, 10, 25, 50, 100, 200, 400, 800)
_STATES = {"healthy": 0, "degraded": 1, "open": 2}

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The gateway's instruments; ``render`` is the scrape body."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("contextforge_requests", "Requests answered, by outcome",
                                ["endpoint", "provider", "model", "status"], registry=r)
        self.upstream_errors = Counter("contextforge_upstream_errors",
                                       "Failed upstream calls (each attempt, failovers included)",
                                       ["provider", "model", "status"], registry=r)
        self.upstream_fallbacks = Counter("contextforge_model_fallbacks",
                                          "Routed requests moved to the next-best model after "
                                          "every deployment of the chosen one failed",
                                          ["failed", "chosen"], registry=r)
        self.hedges = Counter("contextforge_hedged_requests",
                              "Hedges (a late first token raced a call to a second deployment),"
                              " by whether the hedge's answer was the one used",
                              ["model", "answered"], registry=r)
        self.latency = Histogram("contextforge_request_duration_seconds",
                                 "Request latency, arrival to last byte",
                                 ["endpoint", "model"], buckets=_LATENCY, registry=r)
        self.ttft = Histogram("contextforge_time_to_first_token_seconds",
                              "Streams: arrival to the first content chunk",
                              ["model"], buckets=_LATENCY, registry=r)
        self.tokens_per_s = Histogram("contextforge_output_tokens_per_second",
                                      "Output tokens per second of generation",
                                      ["model"], buckets=_TPS, registry=r)
        self.tokens = Counter("contextforge_tokens", "Tokens billed",
                              ["tenant", "model", "kind"], registry=r)
        self.cost = Counter("contextforge_cost_usd", "Spend in USD", ["tenant", "model"],
                            registry=r)
        self.decisions = Counter("contextforge_routing_decisions",
                                 "Routing decisions by route and chosen model",
                                 ["route", "model"], registry=r)
        self.decision_time = Histogram("contextforge_routing_decision_seconds",
                                       "Embed + predict + policy time per routed request",
                                       buckets=_DECISION, registry=r)
        self.cache = Counter("contextforge_cache_requests", "Cache outcomes", ["outcome"],
                             registry=r)
        self.cache_saved_usd = Counter("contextforge_cache_saved_usd",
                                       "What the answers served from the cache cost when made",
                                       ["tier"], registry=r)
        self.cache_saved_seconds = Counter("contextforge_cache_saved_seconds",
                                           "How long the answers served from the cache took "
                                           "when made", ["tier"], registry=r)
        self.cache_evictions = Counter("contextforge_cache_evictions",
                                       "Cache entries evicted past a bound", ["tier"],
                                       registry=r)
        self.cache_backend_errors = Counter("contextforge_cache_backend_errors",
                                            "Shared cache (Redis) failures: a lookup served "
                                            "as a miss, a write dropped", ["op"], registry=r)
        self.limits_backend_errors = Counter(
            "contextforge_limits_backend_errors",
            "Rate-limit and budget store failures, by operation (refused or admitted locally "
            "per limits.on_backend_error)", ["op"], registry=r)
        self.budget_alerts = Counter("contextforge_budget_alerts",
                                     "Budget thresholds crossed", ["threshold"], registry=r)
        self.cache_false_hits = Counter("contextforge_cache_reported_false_hits",
                                        "Cache hits users reported wrong (entry evicted)",
                                        ["tier"], registry=r)
        # Online A/B: each arm of a route's split, by the router version that decided it.
        self.arm_requests = Counter("contextforge_route_arm_requests",
                                    "Routed requests per A/B arm, by outcome",
                                    ["route", "arm", "router", "status"], registry=r)
        self.arm_cost = Counter("contextforge_route_arm_cost_usd", "Spend in USD per A/B arm",
                                ["route", "arm", "router"], registry=r)
        self.arm_latency = Histogram("contextforge_route_arm_latency_seconds",
                                     "Request latency per A/B arm", ["route", "arm"],
                                     buckets=_LATENCY, registry=r)
        self.router_live = Gauge("contextforge_router_live",
                                 "1 for the router version this process routes with",
                                 ["version"], registry=r)
        self.router_swaps = Counter("contextforge_router_swaps",
                                    "Router promotions this process applied or refused",
                                    ["outcome"], registry=r)
        self._router_version: str | None = None
        # Deployments' health, read from the dispatchers at scrape time (``watch``).
        labels = ["model", "deployment"]
        self.deployment_state = Gauge("contextforge_deployment_state",
                                      "Deployment health: 0 healthy, 1 degraded, 2 open circuit",
                                      labels, registry=r)
        self.deployment_error_rate = Gauge("contextforge_deployment_error_rate",
                                           "Failed share of the deployment's calls in the "
                                           "breaker's window", labels, registry=r)
        self.deployment_latency = Gauge("contextforge_deployment_latency_ewma_seconds",
                                        "Latency average of the deployment's answers (phase: "
                                        "total or first_token)", [*labels, "phase"], registry=r)
        self.deployment_inflight = Gauge("contextforge_deployment_inflight",
                                         "Calls in flight to the deployment", labels, registry=r)
        self._dispatchers: Callable[[], Mapping[str, Dispatcher]] | None = None

        # labels() takes a lock and builds a key on every call (~2.6 µs); the label sets are
        # bounded, so each child is looked up once and kept.
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def upstream_failure(self, upstream: Upstream, model: str, exc: ProviderError) -> None:
        """The dispatcher's hook: one failed attempt at one deployment."""
        self.upstream_errors.labels(upstream.deployment.provider, model, str(exc.status)).inc()

    def serving_router(self, version: str) -> None:
        """The router version now serving (one series at a time: the old one is removed)."""
        if self._router_version is not None and self._router_version != version:
            self.router_live.remove(self._router_version)
        self.router_live.labels(version).set(1)
        self._router_version = version

    def watch(self, dispatchers: Callable[[], Mapping[str, Dispatcher]]) -> None:
        """Report these dispatchers' deployments (read at every scrape: a reconfigured
        gateway's current ones)."""
        self._dispatchers = dispatchers

    def _deployment_health(self) -> None:
        if self._dispatchers is None:
            return
        for gauge in (self.deployment_state, self.deployment_error_rate,
                      self.deployment_latency, self.deployment_inflight):
            gauge.clear()  # deployments removed by a reconfiguration disappear
        for model, d in self._dispatchers().items():
            for u in d.upstreams:
                self.deployment_state.labels(model, u.label).set(_STATES[state_of(u.breaker)])
                self.deployment_error_rate.labels(model, u.label).set(u.breaker.error_rate()[0])
                self.deployment_inflight.labels(model, u.label).set(u.health.inflight)
                for phase, ms in (("total", u.health.latency_ms),
                                  ("first_token", u.health.ttft_ms)):
                    if ms is not None:
                        self.deployment_latency.labels(model, u.label, phase).set(ms / 1e3)

    def render(self) -> bytes:
        self._deployment_health()
        return generate_latest(self.registry)
