"""The gateway for ``batch.py``, in a process of its own: the shipped config, its stores under
``--dir``, every model on the simulated provider answering after ``--ttft-ms``."""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
import uvicorn

from router.config import Deployment, load_config
from router.providers.simulated import SimulatedSettings
from service.server import uvicorn_config, with_address


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--yield-above", type=int, default=16)
    a = p.parse_args()
    cfg = load_config()
    db = lambda name: f"sqlite:///{a.dir / name}"  # noqa: E731
    cfg = msgspec.structs.replace(
        cfg, traffic=msgspec.structs.replace(cfg.traffic, dsn=db("traffic.sqlite3")),
        governance=msgspec.structs.replace(cfg.governance, dsn=db("gov.sqlite3")),
        batch=msgspec.structs.replace(cfg.batch, concurrency=a.concurrency,
                                      yield_above=a.yield_above),
        default_deployment=Deployment(provider="simulated",
                                      simulated=SimulatedSettings(ttft_ms=a.ttft_ms)))
    cfg = with_address(cfg, "127.0.0.1", a.port)
    uvicorn.Server(uvicorn_config(cfg, log_level="warning")).run()


if __name__ == "__main__":
    main()
