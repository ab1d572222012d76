"""The one declarative config file (YAML), decoded into typed structs and validated at start-up.

Every error names its path in the file, e.g.
``contextforge.yaml: routes[1].candidates[0]: unknown model 'gpt5'``.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import yaml

from router.policy import PolicySpec

CAPABILITIES = frozenset({"tools", "vision", "json", "embeddings"})


class ConfigError(ValueError):
    """The config file is missing, malformed or inconsistent."""


class SimulatedSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the in-process simulated provider behaves for one deployment."""

    ttft_ms: float = 0.0  # time to first token
    tokens_per_s: float = 0.0  # 0: the rest of the answer arrives at once
    failure_rate: float = 0.0  # share of calls that fail as an upstream error would
    seed: int = 0  # failures are drawn from a seeded generator, so runs repeat

    def __post_init__(self) -> None:
        if self.ttft_ms < 0 or self.tokens_per_s < 0:
            raise ValueError("ttft_ms and tokens_per_s must be >= 0")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be in [0, 1]")


class Deployment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One place a model is served: a provider adapter, its endpoint and credentials.

    Keys come from ``api_key`` (discouraged: the file then holds a secret) or, better, the
    environment variable named by ``api_key_env``; with neither, the adapter reads its
    provider's conventional variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...).
    """

    provider: str
    model: str = ""  # the upstream's model id (e.g. a dated version); "" = the catalog name
    endpoint: str = ""  # base URL; "" = the provider's public endpoint
    api_key: str = ""
    api_key_env: str = ""
    region: str = ""  # AWS region (Bedrock), GCP location (Vertex AI)
    project: str = ""  # GCP project (Vertex AI)
    api_version: str = ""  # Azure OpenAI's api-version; Anthropic's anthropic-version
    headers: dict[str, str] = {}  # extra headers sent upstream on every call
    timeout_s: float | None = None  # None: the server's upstream_timeout_s
    weight: float = 1.0  # share of this model's traffic among its healthy deployments
    simulated: SimulatedSettings = SimulatedSettings()  # read only by provider "simulated"

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ValueError("weight must be > 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")

    def upstream_model(self, catalog_name: str) -> str:
        return self.model or catalog_name

    def __repr__(self) -> str:  # a literal key must never reach a log line or a traceback
        return f"Deployment(provider={self.provider!r}, model={self.model!r}, " \
               f"endpoint={self.endpoint!r})"


class ProviderEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A named upstream connection (``providers:``): an adapter ``type`` with its endpoint and
    credentials, defined once and referenced by name from any model's deployments."""

    name: str
    type: str  # the adapter: openai, azure, anthropic, gemini, bedrock, simulated, ...
    endpoint: str = ""
    api_key: str = ""
    api_key_env: str = ""
    region: str = ""
    project: str = ""
    api_version: str = ""
    headers: dict[str, str] = {}
    timeout_s: float | None = None
    simulated: SimulatedSettings = SimulatedSettings()

    def __repr__(self) -> str:  # never print a literal key
        return f"ProviderEntry(name={self.name!r}, type={self.type!r})"


_INHERITED = ("endpoint", "api_key", "api_key_env", "region", "project", "api_version",
              "timeout_s")


def resolve_deployment(d: Deployment, providers: dict[str, ProviderEntry]) -> Deployment:
    """``d`` with a named provider replaced by its adapter type and connection settings;
    the deployment's own non-empty fields win. An adapter name passes through unchanged."""
    entry = providers.get(d.provider)
    if entry is None:
        return d
    merged = {f: getattr(d, f) or getattr(entry, f) for f in _INHERITED}
    simulated = (d.simulated if d.simulated != SimulatedSettings() else entry.simulated)
    return msgspec.structs.replace(d, provider=entry.type, headers={**entry.headers,
                                   **d.headers}, simulated=simulated, **merged)


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A model callers can be routed to; prices are USD per million tokens."""

    name: str
    input_price: float
    output_price: float
    context_window: int
    stands_in_for: str | None = None  # the router's data model whose predictions it borrows
    capabilities: list[str] = []
    aliases: list[str] = []
    expected_output_tokens: int = 256
    deployments: list[Deployment] = []


class RouteEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    candidates: list[str] = []  # empty: every catalog model with a stand-in
    policy: PolicySpec = PolicySpec()


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
    path: str = "models/routers/default"


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

    def __post_init__(self) -> None:
        if self.batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must be >= 0")
        if self.max_body_bytes <= 0 or self.upstream_timeout_s <= 0:
            raise ValueError("max_body_bytes and upstream_timeout_s must be > 0")


class DispatchConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Retries, failover and circuit breaking (the config's ``dispatch`` section)."""

    max_attempts: int = 3  # calls per request, across deployments and retries
    backoff_ms: float = 50.0  # before retrying a deployment already tried (jittered, doubling)
    failure_threshold: int = 5  # consecutive failures that open a deployment's breaker
    cooldown_s: float = 30.0  # how long an open breaker skips its deployment
    # Routed requests only: when every deployment of the chosen model failed, how many other
    # candidates (next best by the route's policy) to try before answering with the error.
    fallback_models: int = 1

    def __post_init__(self) -> None:
        if self.fallback_models < 0:
            raise ValueError("fallback_models must be >= 0")
        if self.max_attempts < 1 or self.failure_threshold < 1:
            raise ValueError("max_attempts and failure_threshold must be >= 1")
        if self.backoff_ms < 0 or self.cooldown_s < 0:
            raise ValueError("backoff_ms and cooldown_s must be >= 0")


class TrafficConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The traffic log: one row per request (what retraining reads)."""

    enabled: bool = True
    # sqlite:///PATH (relative to the config file's folder) or postgresql://user@host/db
    dsn: str = "sqlite:///var/traffic.sqlite3"
    log_prompts: bool = True  # the routing prompt's text
    log_embeddings: bool = True  # its 384-d embedding (1.5 KB a row)

    def __post_init__(self) -> None:
        if not self.dsn.startswith(("sqlite:", "postgresql://", "postgres://")):
            raise ValueError("dsn must be sqlite:///PATH or postgresql://...")


class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Where the admin API's catalog changes persist (an overlay on this file; see
    # router/overlay.py). Relative to the config file's folder.
    state_path: str = "var/admin-state.json"


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    admin: AdminConfig = AdminConfig()
    server: ServerConfig = ServerConfig()
    traffic: TrafficConfig = TrafficConfig()
    dispatch: DispatchConfig = DispatchConfig()
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
        for label, value in (("input_price", m.input_price), ("output_price", m.output_price)):
            if value < 0:
                errors.append(f"{where}.{label}: must be >= 0, got {value}")
        if m.context_window <= 0:
            errors.append(f"{where}.context_window: must be > 0, got {m.context_window}")
        for j, cap in enumerate(m.capabilities):
            if cap not in CAPABILITIES:
                errors.append(f"{where}.capabilities[{j}]: unknown capability {cap!r}; "
                              f"known: {sorted(CAPABILITIES)}")
        for key in (m.name, *m.aliases):
            if key in names:
                errors.append(f"{where}: name or alias {key!r} already used by {names[key]}")
            names[key] = where
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
    if cfg.routes and cfg.default_route not in route_names:
        errors.append(f"default_route: {cfg.default_route!r} is not a route; "
                      f"routes: {sorted(route_names)}")
    return errors


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
