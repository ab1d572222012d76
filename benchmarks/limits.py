"""Limits, budgets and revocation across two replicas on Redis and PostgreSQL; what the guard costs.

    python benchmarks/limits.py [--json FILE] [--blocks 12] [--block 150]

One run; every server is a real process (``contextforge serve``), every model deployed on the
immediate upstream (``_immediate_upstream.py``: 20 prompt + 3 answer tokens, at once):

1. Limits: two replicas sharing Redis (limits, budgets) and PostgreSQL (keys). 20 concurrent
   clients on one key limited to 100 requests a minute send 140 requests, alternately to each
   replica: ``max_admitted_per_window``. The same for tokens: an organisation limited to 1,000
   tokens a minute, 100 requests; ``max_tokens_per_window`` sums the admitted answers' usage.
   Both runs end well inside the window, so all they admitted lies in one minute.
2. Budget: a $1.00 organisation budget; 50 concurrent requests across both replicas to a model
   priced so that together they would cost about $1.50. ``spent_usd`` is the budget's settled
   spend in Redis once every request has ended, ``answers_usd`` the sum of the admitted
   answers' ``x-contextforge-cost-usd``.
3. Revocation: a key in use on both replicas is revoked through replica A's admin API; replica B
   is asked every 10 ms until it refuses the key. ``revoke_s`` is the worst of 5 keys.
4. The guard: three gateways on the same upstream — open (loopback, no credential, no limits),
   guarded in-process (an API key; request, token and concurrency limits; a budget reserved and
   settled on every request) and guarded on Redis (the same rules on the Redis backend, keys in
   PostgreSQL) — timed at c=1 (``model: auto``: embedded and routed) in alternating blocks with
   the upstream itself, so machine noise hits all four alike. ``guard_p50_ms_*`` is a guarded
   gateway's p50 minus the open one's; ``overhead_p50_ms`` the open one's minus the upstream's.
   Targets: the guard adds <= 0.5 ms in-process and <= 1.5 ms on Redis.

Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (database ``test``); a key
prefix and a schema of the run's own are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import psycopg
import redis
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _http_load import post, sequential  # noqa: E402
from gateway_overhead import bench_config, bodies, cpu_model, free_port, running  # noqa: E402

from router.config import load_config  # noqa: E402
from router.governance.stores import Governance  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
PG = "postgresql://postgres@127.0.0.1:5432/test"
MASTER = "bench-master-key"
SECRET = "bench-key-secret-0123456789"
PATH = "/v1/chat/completions"
# $1300 per million tokens: an answer of the immediate upstream (23 tokens) costs ~$0.03, so 50
# of them would cost ~$1.50 and a $1.00 budget stops them.
PRICED = {"name": "bench-priced", "input_price": 1300.0, "output_price": 1300.0,
          "context_window": 8192}
ASK = {"model": "gpt-4o", "max_tokens": 10,
       "messages": [{"role": "user", "content": "Name three prime numbers."}]}
REQUESTS_LIMIT, TOKENS_LIMIT, BUDGET_USD = 100, 1000, 1.00
ROOMY = 10**9  # the guard's rules in the timing runs: checked on every request, never reached


def write_config(tmp: Path, name: str, upstream: int, **sections: object) -> Path:
    """The shipped config on the immediate upstream, with ``sections`` replaced."""
    folder = tmp / name
    folder.mkdir()
    cfg = yaml.safe_load(bench_config(folder, upstream).read_text())
    cfg["models"].append(PRICED)
    cfg["server"] = {**cfg.get("server", {}), "master_key": MASTER}
    cfg["governance"] = {"dsn": f"sqlite:///{folder / 'governance.sqlite3'}"}
    cfg.update(sections)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def shared(prefix: str, dsn: str, limits: dict) -> dict[str, object]:
    return {"redis": {"url": REDIS_URL, "prefix": prefix}, "governance": {"dsn": dsn},
            "limits": {"backend": "redis", **limits}}


def serve(stack: ExitStack, config: Path, tmp: Path, env: dict[str, str]) -> int:
    port = free_port()
    argv = [sys.executable, "-m", "service.cli", "serve", "--config", str(config),
            "--port", str(port)]
    stack.enter_context(running(argv, f"http://127.0.0.1:{port}/healthz",
                                tmp / f"gateway-{port}.log", cwd=ROOT, env=env))
    return port


def new_key(config: Path, org: str) -> tuple[str, str]:
    gov = Governance.open(load_config(config))
    try:
        key, presented = gov.keys.create(org)
        return key.id, presented
    finally:
        gov.close()


def hammer(ports: list[int], key: str, body: dict, n: int, clients: int = 20
           ) -> list[httpx.Response]:
    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=f"http://127.0.0.1:{ports[i % 2]}", timeout=60) as c:
            return c.post(PATH, json=body, headers={"authorization": f"Bearer {key}"})

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(n)))


def limits_case(ports: list[int], config: Path) -> dict[str, object]:
    _, key = new_key(config, "acme")
    t0 = time.monotonic()
    answers = hammer(ports, key, ASK, 140)
    took = time.monotonic() - t0
    _, tokens_key = new_key(config, "tokens-org")
    t1 = time.monotonic()
    token_answers = hammer(ports, tokens_key, ASK, 100)
    tokens_took = time.monotonic() - t1
    assert max(took, tokens_took) < 60, "a run outlasted the window"
    ok = [r for r in token_answers if r.status_code == 200]
    return {
        "limit": REQUESTS_LIMIT, "sent": len(answers),
        "max_admitted_per_window": sum(r.status_code == 200 for r in answers),
        "refused_429": sum(r.status_code == 429 for r in answers), "limit_run_s": took,
        "tokens_limit": TOKENS_LIMIT, "tokens_admitted_requests": len(ok),
        "max_tokens_per_window": sum(r.json()["usage"]["total_tokens"] for r in ok),
    }


def budget_case(ports: list[int], config: Path, prefix: str) -> dict[str, object]:
    _, key = new_key(config, "budget-org")
    answers = hammer(ports, key, {**ASK, "model": PRICED["name"]}, 50)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    r = redis.Redis.from_url(REDIS_URL)
    try:
        for _ in range(100):  # settlements run just after each response
            held = r.hgetall(f"{prefix}budget:org:budget-org:{day}")
            if float(held.get(b"reserved", 0) or 0) < 1e-12:
                break
            time.sleep(0.05)
    finally:
        r.close()
    ok = [a for a in answers if a.status_code == 200]
    return {"budget_usd": BUDGET_USD, "budget_requests": len(answers), "budget_admitted": len(ok),
            "spent_usd": float(held.get(b"spent", 0) or 0),
            "reserved_usd_after": float(held.get(b"reserved", 0) or 0),
            "answers_usd": sum(float(a.headers["x-contextforge-cost-usd"]) for a in ok),
            "budget_refusals_named": sum(a.status_code == 429 and "budget-org" in a.text
                                         for a in answers)}


def revoke_case(ports: list[int], config: Path, trials: int = 5) -> dict[str, object]:
    times = []
    a, b = (httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=10) for p in ports)
    with a, b:
        for _ in range(trials):
            key_id, key = new_key(config, "revoke-org")
            auth = {"authorization": f"Bearer {key}"}
            # In use on both: each replica holds it in its key cache.
            assert a.post(PATH, json=ASK, headers=auth).status_code == 200
            assert b.post(PATH, json=ASK, headers=auth).status_code == 200
            gone = a.delete(f"/admin/keys/{key_id}", headers={"authorization": f"Bearer {MASTER}"})
            assert gone.status_code == 204, gone.text
            revoked = time.monotonic()
            while b.post(PATH, json=ASK, headers=auth).status_code != 401:
                if time.monotonic() - revoked > 10:
                    raise RuntimeError("replica B still takes a key revoked 10 s ago")
                time.sleep(0.01)
            times.append(time.monotonic() - revoked)
    return {"revoke_s": max(times), "revoke_s_each": times}


async def alternate(targets: dict[str, tuple[int, list[bytes]]], blocks: int, block: int
                    ) -> dict[str, list[float]]:
    """Seconds per request of each target, in blocks of ``block`` sequential requests, the
    order of the targets rotated every round."""
    for port, raws in targets.values():  # warm: connections, lazy imports, key caches
        await sequential(port, raws * 4)
    names = list(targets)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(blocks):
        for name in names[i % len(names):] + names[:i % len(names)]:
            port, raws = targets[name]
            out[name] += [t for t, _ in await sequential(
                port, [raws[(i * block + j) % len(raws)] for j in range(block)])]
    return out


def guard_case(tmp: Path, up: int, prefix: str, dsn: str, env: dict[str, str],
               blocks: int, block: int) -> dict[str, object]:
    rules = {"rules": [{"scope": "key", "requests_per_minute": ROOMY,
                        "tokens_per_minute": ROOMY, "concurrent": 64}],
             "budgets": [{"scope": "org", "usd": ROOMY, "period": "month"}]}
    open_cfg = write_config(tmp, "open", up)
    memory_cfg = write_config(tmp, "memory", up, limits={"backend": "memory", **rules})
    redis_cfg = write_config(tmp, "redis", up, **shared(prefix + "guard:", dsn, rules))
    with ExitStack() as stack:
        ports = {name: serve(stack, cfg, tmp, env)
                 for name, cfg in (("open", open_cfg), ("memory", memory_cfg),
                                   ("redis", redis_cfg))}
        keys = {"memory": new_key(memory_cfg, "acme")[1], "redis": new_key(redis_cfg, "acme")[1]}
        auto = bodies("auto")
        targets = {"direct": (up, [post(PATH, b) for b in bodies("gpt-4o")]),
                   "open": (ports["open"], [post(PATH, b) for b in auto])}
        for name, key in keys.items():
            targets[name] = (ports[name], [post(PATH, b, headers={
                "authorization": f"Bearer {key}"}) for b in auto])
        lat = asyncio.run(alternate(targets, blocks, block))
    p50 = {n: float(np.percentile(np.array(v) * 1e3, 50)) for n, v in lat.items()}
    p99 = {n: float(np.percentile(np.array(v) * 1e3, 99)) for n, v in lat.items()}
    return {"direct_p50_ms": p50["direct"], "gateway_p50_ms": p50["open"],
            "overhead_p50_ms": p50["open"] - p50["direct"],
            "guarded_p50_ms_memory": p50["memory"], "guarded_p50_ms_redis": p50["redis"],
            "guard_p50_ms_memory": p50["memory"] - p50["open"],
            "guard_p50_ms_redis": p50["redis"] - p50["open"],
            "p99_ms": p99, "timed_requests_each": len(lat["open"])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=12, help="rounds of the guard's timing")
    ap.add_argument("--block", type=int, default=150, help="sequential requests per block")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CONTEXTFORGE_KEY_SECRET": SECRET}
    os.environ["CONTEXTFORGE_KEY_SECRET"] = SECRET  # this process creates the keys
    run = uuid.uuid4().hex[:12]
    prefix, schema = f"cf-bench-{run}:", f"cf_bench_{run}"
    dsn = f"{PG}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    result: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
            tmp = Path(tmpdir)
            up = free_port()
            stack.enter_context(running(
                [sys.executable, str(ROOT / "benchmarks/_immediate_upstream.py"), str(up)],
                f"http://127.0.0.1:{up}/v1/models", tmp / "upstream.log", env=env))
            limits = {"rules": [
                {"scope": "key", "requests_per_minute": REQUESTS_LIMIT},
                {"scope": "org", "name": "tokens-org", "tokens_per_minute": TOKENS_LIMIT}],
                "budgets": [{"scope": "org", "name": "budget-org", "usd": BUDGET_USD,
                             "period": "day"}]}
            configs = [write_config(tmp, f"replica-{x}", up, **shared(prefix, dsn, limits))
                       for x in "ab"]
            with ExitStack() as replicas:
                ports = [serve(replicas, c, tmp, env) for c in configs]
                result |= limits_case(ports, configs[0])
                result |= budget_case(ports, configs[0], prefix)
                result |= revoke_case(ports, configs[0])
            result |= guard_case(tmp, up, prefix, dsn, env, args.blocks, args.block)
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
        r = redis.Redis.from_url(REDIS_URL)
        stale = list(r.scan_iter(match=prefix + "*"))
        if stale:
            r.delete(*stale)
        r.close()
    result |= {"machine": f"{cpu_model()}, {os.cpu_count()} cores",
               "date": time.strftime("%Y-%m-%d")}
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def report(r: dict) -> None:
    rows = [
        ("requests admitted in one window (limit 100/min, 140 sent)",
         f"{r['max_admitted_per_window']}", f"<= {r['limit']}",
         r["max_admitted_per_window"] <= r["limit"]),
        ("tokens admitted in one window (limit 1000/min)", f"{r['max_tokens_per_window']}",
         f"<= {r['tokens_limit']}", r["max_tokens_per_window"] <= r["tokens_limit"]),
        ("budget spent, USD (50 requests worth ~$1.50)", f"{r['spent_usd']:.4f}",
         f"<= {r['budget_usd']:.2f}, >= {0.9 * r['budget_usd']:.2f}",
         0.9 * r["budget_usd"] <= r["spent_usd"] <= r["budget_usd"] + 1e-9),
        ("revocation seen by the other replica, s (worst of 5)", f"{r['revoke_s']:.3f}",
         "<= 1.0", r["revoke_s"] <= 1.0),
        ("routed overhead p50, ms (open gateway - upstream)", f"{r['overhead_p50_ms']:.3f}",
         "", None),
        ("guard p50, ms, in-process", f"{r['guard_p50_ms_memory']:.3f}", "<= 0.5",
         r["guard_p50_ms_memory"] <= 0.5),
        ("guard p50, ms, Redis + PostgreSQL", f"{r['guard_p50_ms_redis']:.3f}", "<= 1.5",
         r["guard_p50_ms_redis"] <= 1.5),
    ]
    width = max(len(x[0]) for x in rows)
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"{name:<{width}}  {value:>10}  {target:<18}{verdict}")
    print(f"({r['timed_requests_each']} timed requests per gateway; {r['machine']})")


if __name__ == "__main__":
    raise SystemExit(main())
