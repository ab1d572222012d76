"""Deployment settings: the fields every adapter shares, defined once, and the config file's
flat deployment and named-provider entries, derived from the adapters' own settings structs.

Each adapter module owns a ``Settings`` subclass naming the fields it reads (Bedrock:
``region``; Vertex AI: ``project``, ``region``, ``api_version``; ...), and its registry row
names that struct. Users keep writing every field flat on a deployment (or a named provider)::

    - {provider: bedrock, model: us.anthropic.claude-3-5-sonnet-20241022-v2:0, region: us-east-1}

so the config's ``Deployment`` and ``ProviderEntry`` are the common fields plus the union of the
adapters' own fields, built from the registry (``entry_types``): no field is listed twice, and
a new adapter's new setting needs no edit here. Those adapter fields default to ``UNSET``, so
validation can tell a field the file sets from one it leaves out: a field the deployment's
adapter does not read is an error naming its path and the adapter (``unknown_settings``).

This module imports nothing from ``router.config``: the config module imports the entry types
from ``router.providers``, so the providers package must load without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

if TYPE_CHECKING:
    from router.providers._base import Provider, ProviderContext


class Connection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where an upstream is and how to authenticate: shared by deployments and named providers.

    Keys come from ``api_key`` (discouraged: the file then holds a secret) or, better, the
    environment variable named by ``api_key_env``; with neither, the adapter reads its
    provider's conventional variable (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...).
    """

    endpoint: str = ""  # base URL; "" = the provider's public endpoint
    api_key: str = ""
    api_key_env: str = ""
    headers: dict[str, str] = {}  # extra headers sent upstream on every call
    timeout_s: float | None = None  # None: the server's upstream_timeout_s

    def __post_init__(self) -> None:
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")


Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long dispatch waits on one deployment, per phase (``dispatch.timeouts`` for every
    deployment, a deployment's own ``timeouts`` field by field over it); ``None`` falls back.

    ``connect_s`` bounds opening a connection (TCP and TLS): a dead host fails over in that
    time instead of the whole answer's. ``first_token_s`` bounds a stream's first content (the
    chunks before it, a role, empty deltas, included), ``stream_idle_s`` each later chunk,
    ``total_s`` a whole non-streaming answer (and each retry also stays within the request's
    ``dispatch.retry.deadline_s``)."""

    connect_s: Seconds | None = None
    first_token_s: Seconds | None = None
    total_s: Seconds | None = None
    stream_idle_s: Seconds | None = None

    def over(self, base: Timeouts) -> Timeouts:
        """These timeouts, ``base``'s where these say nothing."""
        return Timeouts(*(getattr(self, f) if getattr(self, f) is not None else getattr(base, f)
                          for f in self.__struct_fields__))


class Settings(Connection):
    """What every adapter reads: one deployment's common fields. An adapter with settings of
    its own subclasses this (``class BedrockSettings(Settings): region: str = ""``)."""

    provider: str  # the adapter (once a named provider is resolved)
    model: str = ""  # the upstream's model id (e.g. a dated version); "" = the catalog name
    weight: float = 1.0  # share of this model's traffic among its healthy deployments
    # Where the deployment processes data (a label such as "eu", "us"; matched exactly): a
    # request pinned to regions only ever reaches deployments that name one of them. Not
    # ``region``: Bedrock and Vertex already read that as their cloud region (``eu-west-1``).
    residency: str = ""
    timeouts: Timeouts = Timeouts()
    # Its quota (dispatch ``strategy: usage_based`` keeps each deployment under them).
    rpm: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tpm: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # USD per million tokens when this deployment's price differs from the model's
    # (``strategy: lowest_cost``); None: the catalog model's price.
    input_price: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    output_price: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight <= 0:
            raise ValueError("weight must be > 0")

    def upstream_model(self, catalog_name: str) -> str:
        return self.model or catalog_name

    def __repr__(self) -> str:  # a literal key must never reach a log line or a traceback
        return f"{type(self).__name__}(provider={self.provider!r}, model={self.model!r}, " \
               f"endpoint={self.endpoint!r})"


class BatchSettings(Settings):
    """The settings of an adapter whose upstream has a batch API of its own
    (``router.providers.native_batch``): batch lines routed to the deployment's model go
    there (``native_batch``), their answers priced at ``1 - batch_discount`` of the list
    price (OpenAI's and Anthropic's batch APIs: half)."""

    native_batch: bool = False
    batch_discount: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.5


S = TypeVar("S", bound=Settings)


@dataclass(frozen=True, slots=True)
class Adapter(Generic[S]):
    """One registry row: the adapter's settings struct and how to build it from them."""

    settings: type[S]
    build: Callable[[S, ProviderContext], Provider]


class Deployment(Settings):
    """One place a model is served (a ``models[].deployments[]`` entry). The class the config
    decodes is built by ``entry_types`` and also carries every adapter's own fields."""


class ProviderEntry(Connection):
    """A named upstream connection (``providers:``): an adapter ``type`` with its endpoint,
    credentials and settings, defined once and referenced by name from any deployment. The
    class the config decodes is built by ``entry_types`` with every adapter's own fields."""

    name: str
    type: str  # the adapter: openai, azure, anthropic, gemini, bedrock, simulated, ...

    def __repr__(self) -> str:  # never print a literal key
        return f"ProviderEntry(name={self.name!r}, type={self.type!r})"


def _own_fields(settings: type[Settings]) -> dict[str, tuple[Any, Any]]:
    """An adapter's own fields (beyond ``Settings``): name -> (type, default)."""
    common = set(Settings.__struct_fields__)
    return {f.name: (f.type, f.default) for f in msgspec.structs.fields(settings)
            if f.name not in common}


def entry_types(adapters: Mapping[str, Adapter[Any]],
                ) -> tuple[type[Deployment], type[ProviderEntry]]:
    """The config's ``Deployment`` and ``ProviderEntry``: the common fields plus every
    adapter's own fields, flat, each ``UNSET`` unless the file sets it. Two adapters may share
    a field name only with one type (a programming error otherwise, raised at import)."""
    extra: dict[str, Any] = {}
    for name, adapter in adapters.items():
        for field, (kind, _) in _own_fields(adapter.settings).items():
            if extra.setdefault(field, kind) != kind:
                raise TypeError(f"adapter {name!r}: setting {field!r} is {kind}, but another "
                                f"adapter declares it as {extra[field]}")
    fields = [(f, kind | UnsetType, UNSET) for f, kind in sorted(extra.items())]
    options: dict[str, Any] = dict(kw_only=True, frozen=True, forbid_unknown_fields=True,
                                   module=__name__)
    deployment = msgspec.defstruct("Deployment", fields, bases=(Deployment,), **options)
    entry = msgspec.defstruct("ProviderEntry", fields, bases=(ProviderEntry,), **options)
    return deployment, entry


def _set_fields(entry: Connection) -> dict[str, Any]:
    """The fields ``entry`` gives a value: adapter fields left ``UNSET`` are not among them."""
    return {f: v for f in entry.__struct_fields__ if (v := getattr(entry, f)) is not UNSET}


def unknown_settings(entry: Connection, adapter_name: str, adapter: Adapter[Any],
                     where: str) -> list[str]:
    """One error per field of ``entry`` (a deployment or a named provider) that its adapter
    does not read, each naming its path: ``{where}.region: adapter 'openai' has no setting
    'region'``."""
    known = set(adapter.settings.__struct_fields__)
    own = set(type(entry).__struct_fields__) - set(Settings.__struct_fields__) - {"name", "type"}
    return [f"{where}.{f}: adapter {adapter_name!r} has no setting {f!r}"
            for f in sorted(own & set(_set_fields(entry)) - known)]


def settings_of(deployment: Deployment, adapter: Adapter[S]) -> S:
    """The deployment's settings as its adapter's own struct. ``ValueError`` names the fields
    the adapter does not read (``check_providers`` reports them with their paths first)."""
    values = _set_fields(deployment)
    unknown = sorted(set(values) - set(adapter.settings.__struct_fields__))
    if unknown:
        raise ValueError(f"adapter {deployment.provider!r} has no setting "
                         f"{', '.join(map(repr, unknown))}")
    return adapter.settings(**values)


def resolve_deployment(d: Deployment, providers: Mapping[str, ProviderEntry]) -> Deployment:
    """``d`` with a named provider replaced by its adapter type and connection settings;
    the deployment's own non-empty fields win, headers merge. An adapter name passes through
    unchanged."""
    entry = providers.get(d.provider)
    if entry is None:
        return d
    inherited = (set(type(entry).__struct_fields__) - {"name", "type", "headers"})
    merged = {f: _given(getattr(d, f)) or getattr(entry, f) for f in inherited}
    return msgspec.structs.replace(d, provider=entry.type,
                                   headers={**entry.headers, **d.headers}, **merged)


def _given(value: Any) -> Any:
    """``value`` if the deployment sets it, else a falsy stand-in (so the entry's wins)."""
    return None if value is UNSET else value
