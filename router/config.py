"""The one declarative config file (YAML), decoded into typed structs and validated at start-up.

Every error names its path in the file, e.g.
``contextforge.yaml: routes[1].candidates[0]: unknown model 'gpt5'``.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml

from router.dispatch_config import DispatchConfig as DispatchConfig
from router.dispatch_config import FallbackResponse, HedgeConfig, Region, Strategy
from router.errors import ConfigError as ConfigError
from router.governance.networks import network_errors
from router.policy import Exploration, PolicySpec

# Deployments and named providers are the providers' schema: the common fields plus each
# adapter's own settings (see router/providers/_settings.py); resolved here per model.
# SimulatedSettings is re-exported: callers build simulated deployments from this module.
from router.providers import (
    Deployment,
    ProviderEntry,
    resolve_deployment,
)
from router.providers import SimulatedSettings as SimulatedSettings
from router.redact import known_region
from router.tracing_config import TracingConfig as TracingConfig
from router.tracing_config import check_tracing

CAPABILITIES = frozenset({"tools", "vision", "json", "embeddings"})


# Bounds on what a config (or an admin PUT) may say: beyond them a value is a typo or an
# attack, and it would reach arithmetic on every request (costs, context checks).
Price = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]  # USD per million tokens
Tokens = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
MAX_DIMENSIONS = 65_536


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A model callers can be routed to; prices are USD per million tokens."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    input_price: Price
    output_price: Price
    context_window: Tokens
    # The router's data model whose predictions it borrows while the router has no column of
    # its own for this model (before it is retrained on traffic or collected data naming it).
    stands_in_for: str | None = None
    capabilities: list[str] = []
    aliases: list[str] = []
    expected_output_tokens: Tokens = 256
    # Embeddings models: the vectors' length, the most ``dimensions`` a request may ask for.
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=MAX_DIMENSIONS)] | None = None
    deployments: list[Deployment] = []
    strategy: Strategy | None = None  # how its deployments are balanced; None: dispatch's
    # Models (names or aliases) to try, in order, when every deployment of this one failed,
    # before a route's next-best candidates; a pinned request's prompt that does not fit this
    # model's context window goes to the first of them that holds it.
    fallbacks: list[str] = []


PromptTokens = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]


class Split(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Online A/B on a route: ``share`` of its traffic is decided by router ``version`` (a
    version of the registry, see ``router.registry``) instead of the live router. Who goes
    where is a stable hash of the route and the user (the request's ``user``, else its
    tenant) or the tenant (``by``), so one user always meets the same arm."""

    version: Annotated[str, msgspec.Meta(min_length=1)]
    share: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    by: Literal["user", "tenant"] = "user"


class RouteEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    # Empty: every catalog model the router can predict (its own column or a stand-in's).
    candidates: list[str] = []
    policy: PolicySpec = PolicySpec()
    max_prompt_tokens: PromptTokens | None = None  # None: server.max_prompt_tokens
    exploration: Exploration = Exploration()  # off by default (rate 0)
    split: Split | None = None  # online A/B against another router version
    # Its requests only reach deployments in these regions (their ``residency``), whatever
    # fails: no failover, fallback or retry goes elsewhere. Empty: no requirement.
    regions: list[Region] = []
    strategy: Strategy | None = None  # balancing for the requests it routes; None: the model's
    # Models to try, in order, when the chosen model (and its own ``fallbacks``) failed,
    # before the route's next-best candidates (``dispatch.fallback_models``).
    fallbacks: list[str] = []
    # Its requests' answer when everything failed; None: ``dispatch.fallback_response``.
    fallback_response: FallbackResponse | None = None
    # Hedging of the requests it routes (its own share cap); None: ``dispatch.hedge``.
    hedge: HedgeConfig | None = None


class EncoderConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The encoders (``router.encoders``): ``path`` is what routers read, an ONNX transformer
    or a static token table (its ``encoder.json`` says which); ``text_path`` is the transformer
    whose vectors ``/v1/embeddings`` serves and the semantic cache compares, loaded on first
    use when it is not ``path``. ``quantized``, ``threads`` and ``spin`` apply to ONNX ones."""

    path: str = "models/encoders/all-MiniLM-L6-v2"
    text_path: str = "models/encoders/all-MiniLM-L6-v2"
    quantized: bool = False
    threads: int = 2
    # Busy-wait in onnxruntime's threads: lower latency per lone encode, less CPU for the
    # rest of the process (see Encoder.load). Off for the gateway; on for encode-only jobs.
    spin: bool = False


class RouterConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The router a gateway serves, and the registry of versions it follows
    (``router.registry``): its live version, when one is recorded, serves instead of ``path``."""

    path: str = "models/routers/default"
    # The folder of router versions and registry.json; "" is the folder that holds ``path``.
    registry: str = ""
    # How often a running gateway checks registry.json for a new live version; 0: never (the
    # admin API's promotions still apply at once to the gateway that receives them).
    poll_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 2.0


class TlsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """TLS terminated by the gateway itself (``server.tls``): PEM files, relative to the
    config file's folder; checked at start-up (``check_tls``)."""

    cert_path: Annotated[str, msgspec.Meta(min_length=1)]  # the chain, the server's own first
    key_path: Annotated[str, msgspec.Meta(min_length=1)]
    # The environment variable holding the key's passphrase, for an encrypted key (a
    # passphrase written in the config would sit next to the key it protects).
    key_password_env: str = ""


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The HTTP gateway (``contextforge serve``)."""

    host: str = "127.0.0.1"  # loopback only: no key needed; any other address needs master_key
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024  # base64 images make bodies large
    master_key: str = ""  # else env CONTEXTFORGE_MASTER_KEY
    upstream_timeout_s: float = 60.0
    # Concurrent prompts arriving within this window share one encoder run; a lone request
    # waits this long, so it is kept well under the gateway's per-request latency budget.
    batch_wait_ms: float = 0.0
    # A prompt longer than this is refused (413) before routing; a route may set its own.
    # Counting stops at the limit, so it also bounds the work one request can ask for.
    max_prompt_tokens: PromptTokens = 262_144
    # Slow clients: the request's headers and its body must each arrive within this time
    # (408 for a body, the connection closed for headers), so idle sockets cannot pile up.
    header_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    body_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # On shutdown, in-flight requests and streams get this long to finish; then they are cut
    # (their log rows are still written).
    drain_timeout_s: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    # Reverse proxies in front of the gateway (addresses or CIDRs): only a request whose peer
    # is one of them has its client address read from ``proxy_header``. Empty: the peer is
    # the client, and a forwarding header is ignored (any client could write one).
    trusted_proxies: list[str] = []
    # The header those proxies append to. Only that one is read: a proxy passes the other
    # through from the client untouched, so reading both would let a client pick its address.
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    # TLS terminated here; None: plain HTTP (loopback, or a proxy in front terminates it).
    tls: TlsConfig | None = None

    def __post_init__(self) -> None:
        if self.batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must be >= 0")
        if self.max_body_bytes <= 0 or self.upstream_timeout_s <= 0:
            raise ValueError("max_body_bytes and upstream_timeout_s must be > 0")
        errors = network_errors(self.trusted_proxies, "trusted_proxies")
        if errors:
            raise ValueError("; ".join(errors))


class CacheConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The response cache (``router.cache``): an exact tier and a semantic tier, scoped so an
    answer only ever serves the tenant (or user) and conversation it was made for."""

    enabled: bool = False
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=365 * 86400)] = 3600.0
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 100_000
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 * 1024 * 1024
    # Who an entry is shared with: every user of the tenant, or only the same ``user``.
    scope: Literal["tenant", "user"] = "tenant"
    # Keep only temperature-0 requests unless a request opts in (``cache.store``).
    deterministic_only: bool = True
    # The semantic tier: a paraphrase of a cached question (same scope) is answered too, when
    # the verifier says the two ask the same thing (calibrated to 1% false hits on QQP).
    semantic: bool = True
    # The FAISS index factory string of each tenant's vectors: "Flat" (exact; fine up to ~10k
    # entries a tenant) or "HNSW32" (approximate; sub-millisecond at 100k and more).
    index: str = "HNSW32"
    # Nearest entries the verifier checks per lookup: each is one more chance of a false hit.
    candidates: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    verifier: str = "models/cache/verifier.npz"
    # When the router reads a static table (encoder.path), a lookup first searches the
    # entries' static vectors and runs the transformer (encode, search, verifier) only when
    # the nearest one of the scope clears this gate's threshold: a miss then costs no
    # transformer run on the request's path. Calibrated per table on QQP's train split to keep
    # 95 % of the verifier's hits (models/cache/CARD.md); "" runs the transformer every time.
    gate: str = "models/cache/gate.json"
    # Where the cache is saved (relative to the config's folder; "" keeps it in memory only):
    # at start-up it is reloaded, every ``snapshot_interval_s`` and at shutdown it is written,
    # so a crash loses at most the entries kept since the last write.
    snapshot_path: str = ""
    snapshot_interval_s: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0


class RedisConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Redis that several replicas share (``router.redis_client``): the response cache's
    exact tier and its semantic entries' feed today; rate limits and budgets later. An empty
    ``url`` keeps everything in this process (the embedded default: nothing to run)."""

    # redis://[user:password@]host:port/db, rediss://... (TLS) or unix:///path/to/socket
    url: str = ""
    # Every key this gateway writes starts with it: several deployments may share one Redis.
    prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "contextforge:"
    # Per command: past it a lookup is a miss and a write is dropped (requests never wait on
    # a Redis that stopped answering for longer than this).
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis(cfg: Config) -> list[str]:
    """A Redis URL this client can open; no local cache snapshots once Redis holds the cache."""
    errors = []
    url = cfg.redis.url
    if url and not url.startswith(REDIS_SCHEMES):
        scheme = url.split("://", 1)[0] + "://" if "://" in url else "no scheme"
        errors.append(f"redis.url: must start with {', '.join(REDIS_SCHEMES)} (got "
                      f"{scheme})")
    if url and cfg.cache.enabled and cfg.cache.snapshot_path:
        errors.append("cache.snapshot_path: with redis.url the cache lives in Redis, which "
                      "keeps it across restarts; remove snapshot_path (local snapshots would "
                      "hold one replica's view only)")
    return errors


class TrafficConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The traffic log: one row per request (what retraining reads)."""

    enabled: bool = True
    # sqlite:///PATH (relative to the config file's folder) or postgresql://user@host/db
    dsn: str = "sqlite:///var/traffic.sqlite3"
    log_prompts: bool = True  # the routing prompt's text
    log_embeddings: bool = True  # its 384-d embedding (1.5 KB a row)
    # The answer's text and tool calls, so `contextforge eval score` can score it later.
    log_answers: bool = True
    # Rows older than this many days are deleted (checked hourly); None keeps them all.
    retention_days: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # PII replaced by [EMAIL], [PHONE], [CARD] in the logged prompt, answer, tool calls and
    # feedback comments (router/redact.py), on the log's writer thread; [] logs them as sent.
    # Off by default: retraining and `eval score` read these texts, and a judge scores an
    # answer better when its numbers are there. The embedding is computed from the prompt as
    # sent: with redaction on, set log_embeddings: false too if embeddings count as personal
    # data where you operate.
    redact: tuple[Literal["email", "phone", "card"], ...] = ()
    # Where a phone number written without +country code is assumed to be (ISO 3166 code).
    redact_region: str = "US"

    def __post_init__(self) -> None:
        if not self.dsn.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError("dsn must be sqlite:///PATH or postgresql://...")
        if not known_region(self.redact_region):
            raise ValueError(f"redact_region {self.redact_region!r}: not a region code "
                             "libphonenumber knows (US, GB, DE, ...)")


ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                        "ES512", "EdDSA"})


class JwtConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the signing keys are and what a valid token must say."""

    jwks: str  # a file path, or an https:// URL refreshed every ``refresh_s``
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    tenant_claim: str = "org"
    user_claim: str = "sub"
    roles_claim: str = "roles"
    models_claim: str | None = None
    leeway_s: float = 30.0
    refresh_s: float = 300.0
    min_refresh_s: float = 10.0

    def __post_init__(self) -> None:
        bad = [a for a in self.algorithms if a not in ASYMMETRIC]
        if bad or not self.algorithms:
            raise ValueError(f"algorithms: {bad or 'none given'}; use asymmetric ones "
                             f"({', '.join(sorted(ASYMMETRIC))}): a shared secret would have "
                             "to live on every replica and in the identity provider")


class GovernanceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Keys, tenants and the audit log (``router.governance``)."""

    # sqlite:///PATH (relative to the config file's folder) or postgresql://... for replicas
    dsn: str = "sqlite:///var/governance.sqlite3"
    # The secret that keys the stored hashes of API keys: $CONTEXTFORGE_KEY_SECRET, else this
    # file (created on first use with SQLite; with PostgreSQL every replica must read the same
    # secret, so it must exist or the variable be set).
    key_secret_path: str = "var/key-secret"
    # How long a replica trusts a key it has checked: revoking a key takes effect everywhere
    # within this time (each replica re-reads a key in use at most this often).
    key_cache_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.5
    # JWT bearer tokens from an identity provider (OIDC/SSO); None: API keys only.
    jwt: JwtConfig | None = None
    # The organisation that runs the gateway: its admin and operator keys (and the master
    # key) change the catalog, providers and routers; other organisations' admins manage
    # only their own keys and cache entries.
    platform_org: str = "default"
    # Per organisation, the networks (addresses or CIDRs) its keys and tokens may call from,
    # on top of each key's own ``ips``; an organisation not named here may call from anywhere.
    # The master key is not bound by them (it is the way back in from anywhere).
    networks: dict[str, list[str]] = {}

    def __post_init__(self) -> None:
        if not self.dsn.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError("dsn must be sqlite:///PATH or postgresql://...")
        errors = [e for org, entries in self.networks.items()
                  for e in network_errors(entries, f"networks.{org}")]
        if errors:
            raise ValueError("; ".join(errors))


class RateRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rate limits on one scope: ``name`` is one key id, user, project, organisation or model,
    or ``*`` for each of them separately (a per-key default)."""

    scope: Literal["key", "user", "project", "org", "model"]
    name: str = "*"
    requests_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Tokens are counted up front (input + the most the model may write) and corrected after.
    tokens_per_minute: Annotated[int, msgspec.Meta(ge=1)] | None = None
    burst_per_second: Annotated[int, msgspec.Meta(ge=1)] | None = None  # most in any 1 s
    concurrent: Annotated[int, msgspec.Meta(ge=1)] | None = None  # requests in flight


class BudgetRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A spend limit per period on one scope (``name`` as for ``RateRule``)."""

    scope: Literal["key", "user", "project", "org"]
    usd: Annotated[float, msgspec.Meta(gt=0)]
    name: str = "*"
    period: Literal["day", "month", "total"] = "month"


class LimitsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Rate limits, concurrency caps and budgets (``router.limits``)."""

    # memory: this process (one instance); redis: shared by replicas (needs redis.url).
    backend: Literal["memory", "redis"] = "memory"
    # When the Redis backend cannot answer: refuse (503, the default: limits never silently
    # lapse), or admit under this process's own limiter and say so in the log and metrics.
    on_backend_error: Literal["closed", "open"] = "closed"
    rules: list[RateRule] = []
    budgets: list[BudgetRule] = []
    # Providers count prompt tokens with their own tokenizers (and add per-message overhead):
    # token limits and budget reservations count the prompt this much larger, plus 16 tokens,
    # so the real count and cost stay within what was admitted and reserved.
    input_token_margin: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.1
    # A reservation whose request died (a crashed replica) stops holding money after this.
    reservation_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 600.0
    # POSTed a JSON alert at 50%, 80% and 100% of a budget (also logged); "" logs only.
    alert_webhook: str = ""


class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Where the admin API's catalog changes persist (an overlay on this file; see
    # router/overlay.py). Relative to the config file's folder.
    state_path: str = "var/admin-state.json"


class BatchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Batch API (``/v1/files``, ``/v1/batches``): where jobs live and how fast they run."""

    enabled: bool = True
    # Files, jobs and per-line results; "" keeps them in the governance database.
    dsn: str = ""
    # Lines in flight at once, over every batch of this replica: low, so live traffic keeps
    # the upstreams' capacity and the event loop.
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    # Live (non-batch) requests in flight at which the runner claims no more lines.
    yield_above: Annotated[int, msgspec.Meta(ge=0)] = 16
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 100 * 1024 * 1024
    max_lines: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 50_000
    # How often the runner looks for work when nothing wakes it (another replica's batch).
    poll_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # A claimed line belongs to its runner this long; a line still unanswered then fails
    # (so a runner that died releases its lines to another replica after it).
    lease_s: Annotated[float, msgspec.Meta(ge=10, le=86400)] = 600.0
    # Deployments with ``native_batch`` (``service.batch_native``): how often their provider
    # batches are polled, and how long an admitted line waits for its batch's other lines
    # before it is submitted without them.
    native_poll_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    native_collect_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 60.0


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    admin: AdminConfig = AdminConfig()
    server: ServerConfig = ServerConfig()
    traffic: TrafficConfig = TrafficConfig()
    governance: GovernanceConfig = GovernanceConfig()
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    redis: RedisConfig = RedisConfig()
    dispatch: DispatchConfig = DispatchConfig()
    batch: BatchConfig = BatchConfig()
    tracing: TracingConfig = TracingConfig()  # OpenTelemetry traces; off by default
    # Serves every model that lists no deployments: the default config runs without API keys.
    default_deployment: Deployment = Deployment(provider="simulated")
    providers: list[ProviderEntry] = []
    encoder: EncoderConfig = EncoderConfig()
    router: RouterConfig = RouterConfig()
    models: list[ModelEntry] = []
    routes: list[RouteEntry] = []
    default_route: str = "auto"
    base_dir: str = ""  # set by load_config: relative paths are read from the file's folder

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir or ".") / p

    def deployments(self, model: ModelEntry) -> list[Deployment]:
        """The model's deployments, named providers resolved; the default one if it has none."""
        named = {p.name: p for p in self.providers}
        return [resolve_deployment(d, named)
                for d in (model.deployments or [self.default_deployment])]


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "contextforge.yaml"


def check_config(cfg: Config) -> list[str]:
    """Every consistency problem of a decoded config, each naming its path."""
    errors: list[str] = []
    names: dict[str, str] = {}
    for i, m in enumerate(cfg.models):
        where = f"models[{i}]"
        if m.dimensions is not None and "embeddings" not in m.capabilities:
            errors.append(f"{where}.dimensions: only embeddings models have dimensions")
        for j, cap in enumerate(m.capabilities):
            if cap not in CAPABILITIES:
                errors.append(f"{where}.capabilities[{j}]: unknown capability {cap!r}; "
                              f"known: {sorted(CAPABILITIES)}")
        for key in (m.name, *m.aliases):
            if key in names:
                errors.append(f"{where}: name or alias {key!r} already used by {names[key]}")
            names[key] = where
    for i, m in enumerate(cfg.models):
        errors += _check_fallbacks(f"models[{i}].fallbacks", m.fallbacks, names,
                                   own=(m.name, *m.aliases))
    seen: set[str] = set()
    for i, p in enumerate(cfg.providers):
        if p.name in seen:
            errors.append(f"providers[{i}].name: {p.name!r} is defined twice")
        seen.add(p.name)
    route_names = set()
    for i, r in enumerate(cfg.routes):
        if r.name in route_names or r.name in names:
            errors.append(f"routes[{i}].name: {r.name!r} is already a route or model name")
        route_names.add(r.name)
        for j, c in enumerate(r.candidates):
            if c not in names:
                errors.append(f"routes[{i}].candidates[{j}]: unknown model {c!r}")
        errors += _check_fallbacks(f"routes[{i}].fallbacks", r.fallbacks, names)
    if cfg.routes and cfg.default_route not in route_names:
        errors.append(f"default_route: {cfg.default_route!r} is not a route; "
                      f"routes: {sorted(route_names)}")
    return errors + check_regions(cfg) + check_redis(cfg) + check_tracing(cfg.tracing)


def _check_fallbacks(where: str, chain: list[str], names: dict[str, str],
                     own: tuple[str, ...] = ()) -> list[str]:
    """A fallback chain's problems: unknown names, and a model falling back to itself."""
    out = []
    for j, name in enumerate(chain):
        if name not in names:
            out.append(f"{where}[{j}]: unknown model {name!r}")
        elif name in own:
            out.append(f"{where}[{j}]: a model cannot fall back to itself")
    return out


def check_regions(cfg: Config) -> list[str]:
    """Every region a route or an organisation requires is some deployment's ``residency``:
    otherwise each of their requests would be refused (a typo, or the last deployment there
    removed)."""
    have = {d.residency for m in cfg.models for d in cfg.deployments(m) if d.residency}
    wanted = [(f"routes[{i}].regions[{j}]", r) for i, route in enumerate(cfg.routes)
              for j, r in enumerate(route.regions)]
    wanted += [(f"dispatch.tenant_regions.{org}[{j}]", r)
               for org, regions in cfg.dispatch.tenant_regions.items()
               for j, r in enumerate(regions)]
    known = ", ".join(sorted(have)) or "none"
    return [f"{where}: no deployment is in region {r!r} (deployments' residency: {known})"
            for where, r in wanted if r not in have]


MASTER_KEY_ENV = "CONTEXTFORGE_MASTER_KEY"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def master_key(server: ServerConfig) -> str:
    """The master key: the config's, else ``$CONTEXTFORGE_MASTER_KEY``; "" when neither."""
    return server.master_key or os.environ.get(MASTER_KEY_ENV, "")


def check_server(server: ServerConfig) -> list[str]:
    """A gateway listening beyond loopback must demand a key: never an open gateway."""
    if not is_loopback(server.host) and not master_key(server):
        return [f"server.host: {server.host!r} is not loopback: set server.master_key or "
                f"{MASTER_KEY_ENV} so that callers must authenticate"]
    return []


def tls_files(cfg: Config) -> tuple[Path, Path, str | None] | None:
    """``server.tls``'s certificate and key paths (resolved) and the key's passphrase (from
    its environment variable), or None without TLS."""
    tls = cfg.server.tls
    if tls is None:
        return None
    password = os.environ.get(tls.key_password_env) if tls.key_password_env else None
    return cfg.resolve(tls.cert_path), cfg.resolve(tls.key_path), password


def check_tls(cfg: Config) -> list[str]:
    """``server.tls``'s files exist and load as a certificate chain and its key."""
    tls, files = cfg.server.tls, tls_files(cfg)
    if tls is None or files is None:
        return []
    cert, key, password = files
    env = tls.key_password_env
    errors = [f"server.tls.{field}: no such file {path}"
              for field, path in (("cert_path", cert), ("key_path", key)) if not path.is_file()]
    if env and not password:
        errors.append(f"server.tls.key_password_env: ${env} is not set")
    if errors:
        return errors
    try:
        # A callable even without a passphrase: given None, OpenSSL would prompt on the
        # terminal for an encrypted key, and the check would hang.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, lambda: password or "")
    except (ssl.SSLError, OSError) as exc:
        return [f"{_tls_problem(cert, key, password)} ({exc})"]
    return []


def _tls_problem(cert: Path, key: Path, password: str | None) -> str:
    # OpenSSL says "PEM lib" for most of these: look at the files to say which it is.
    try:
        cert_text, key_text = cert.read_text(), key.read_text()
    except (OSError, UnicodeDecodeError):
        return f"server.tls: {cert} or {key} is not a PEM file"
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        return f"server.tls.cert_path: {cert} holds no PEM certificate"
    if "PRIVATE KEY-----" not in key_text:
        return f"server.tls.key_path: {key} holds no PEM private key"
    if "ENCRYPTED" in key_text and not password:
        return (f"server.tls.key_path: {key} is encrypted: name the environment variable "
                "holding its passphrase in server.tls.key_password_env")
    if "ENCRYPTED" in key_text:
        return f"server.tls.key_password_env: the passphrase does not decrypt {key}"
    return f"server.tls.key_path: {key} is not the key of the certificate {cert}"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read, decode and validate the config file; raise ``ConfigError`` listing every problem."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw["base_dir"] = str(path.resolve().parent)
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.models[0].input_price`": put the path first, as a user reads
        msg, _, where = str(exc).partition(" - at `$.")
        raise ConfigError(f"{path}: {where.rstrip('`') + ': ' if where else ''}{msg}") from exc
    errors = check_config(cfg)
    if errors:
        raise ConfigError(f"{path}: " + f"\n{path}: ".join(errors))
    return cfg
