"""The config's ``tracing`` section: OpenTelemetry traces of each request (``service.tracing``).

Off by default, and then nothing of OpenTelemetry's SDK is imported or built. On, each request
is one span following the OpenTelemetry GenAI conventions, with child spans for the stages and
each upstream attempt; a client's W3C ``traceparent`` is continued and the provider receives
the attempt's. ``exporter`` says where the spans go: ``otlp`` (OTLP over HTTP/protobuf to
``endpoint``), ``console`` (stdout, for debugging) or ``none`` (made and dropped: sampling and
propagation without an exporter, e.g. to measure the cost).

Its own module, like ``dispatch_config``: it holds nothing but the section's types and checks.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec

HeaderName = Annotated[str, msgspec.Meta(min_length=1, max_length=200,
                                         pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")]
EnvName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z_]\w*$")]


class TracingConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Traces of requests (see the module docstring)."""

    enabled: bool = False
    exporter: Literal["otlp", "console", "none"] = "otlp"
    # OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces; "" takes OpenTelemetry's
    # own OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else http://localhost:4318/v1/traces.
    endpoint: str = ""
    # Headers sent with every export (a vendor's dataset name); secrets go in headers_env:
    # header name -> the environment variable holding its value (an API key).
    headers: dict[HeaderName, str] = {}
    headers_env: dict[HeaderName, EnvName] = {}
    service_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = \
        "contextforge-router"
    # Share of traces kept, decided at the trace's root: a client's sampled flag is followed
    # (ParentBased), so a trace is never cut in half.
    sample_ratio: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    # Seconds an export may take before it is dropped (exports run off the event loop).
    export_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0


def check_tracing(cfg: TracingConfig) -> list[str]:
    """The section's problems, each with its path: an endpoint that is no http(s) URL, an
    unset header variable (only checked when tracing is on: a config shared with tools that
    never export need not carry the secret)."""
    errors = []
    if cfg.endpoint and not cfg.endpoint.startswith(("http://", "https://")):
        errors.append(f"tracing.endpoint: must be an http:// or https:// URL (got "
                      f"{cfg.endpoint!r})")
    if cfg.exporter != "otlp" and (cfg.endpoint or cfg.headers or cfg.headers_env):
        errors.append(f"tracing.exporter: endpoint and headers are for the otlp exporter, "
                      f"not {cfg.exporter!r}")
    if cfg.enabled and cfg.exporter == "otlp":
        errors += [f"tracing.headers_env.{header}: ${env} is not set"
                   for header, env in cfg.headers_env.items() if env not in os.environ]
    dup = sorted(set(cfg.headers) & set(cfg.headers_env))
    if dup:
        errors.append(f"tracing.headers_env: {', '.join(dup)} also in tracing.headers")
    return errors


def export_headers(cfg: TracingConfig) -> dict[str, str]:
    """The headers of every export: ``headers`` and the values of ``headers_env``."""
    return {**cfg.headers, **{h: os.environ.get(env, "") for h, env in cfg.headers_env.items()}}
