"""A gateway in a process of its own, for tests that kill it: the shipped config with its
stores under ``--dir`` and ``gpt-4o-mini`` served by the upstream at ``--upstream``
(``--native KEY``: through its Batch API, ``native_batch``, with that key).

    python -m tests.e2e.batch_server --port P --dir D --upstream URL [--native KEY]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import uvicorn

from router.config import Deployment, ProviderEntry, load_config
from service.server import uvicorn_config, with_address

KEY = "sk-test-0123456789abcdef"


def config(folder: Path, upstream: str, concurrency: int, dsn: str = "", lease_s: float = 600,
           native: str = ""):
    cfg = load_config()
    db = lambda name: f"sqlite:///{folder / name}"  # noqa: E731
    native_batch = {"native_batch": True} if native else {}
    provider = ProviderEntry(name="counted", type="openai-compatible",
                             endpoint=f"{upstream}/v1", api_key=native or KEY, **native_batch)
    models = [msgspec.structs.replace(m, deployments=[Deployment(provider="counted")])
              if m.name == "gpt-4o-mini" else m for m in cfg.models]
    return msgspec.structs.replace(
        cfg, providers=[*cfg.providers, provider], models=models,
        traffic=msgspec.structs.replace(cfg.traffic, dsn=db("traffic.sqlite3")),
        governance=msgspec.structs.replace(cfg.governance, dsn=db("gov.sqlite3")),
        batch=msgspec.structs.replace(cfg.batch, concurrency=concurrency, poll_s=0.2,
                                      dsn=dsn, lease_s=lease_s, native_poll_s=0.1,
                                      native_collect_s=30),
        # One call per line: a retry would count as a second answer upstream.
        dispatch=msgspec.structs.replace(cfg.dispatch, max_attempts=1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--dsn", default="", help="the batch store (default: the governance one)")
    p.add_argument("--lease-s", type=float, default=600)
    p.add_argument("--native", default="", help="the upstream's key: use its Batch API")
    a = p.parse_args()
    cfg = with_address(config(a.dir, a.upstream, a.concurrency, a.dsn, a.lease_s, a.native),
                       "127.0.0.1", a.port)
    uvicorn.Server(uvicorn_config(cfg, log_level="warning")).run()


if __name__ == "__main__":
    main()
