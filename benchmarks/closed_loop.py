"""The closed loop on a catalog with models the router has never seen (issue 13's scenario).

    python benchmarks/closed_loop.py [--json FILE] [--work DIR] [--passes 4] [--rate 0.5]
                                     [--margin 1.0] [--kind taskmix] [--wtp 0.05]

1. **Start**: a router of ``--kind`` trained on every RouterBench *train* prompt, but with the
   outcomes of only 5 of its 11 models (``KNOWN``). The catalog has all 11 models; the other 6
   stand in for the known model closest in mean cost per request (``stands_in_for``), and
   each is deployed on the simulated provider, which answers with *its own* model's recorded
   answer (``simulated.answers_as`` defaults to the catalog model's own name).
2. **Serve**: ``contextforge serve`` on that catalog, route ``auto`` exploring (``--rate``,
   ``--margin``), and every train prompt sent ``--passes`` times; the traffic log keeps each
   answer with its propensity.
3. **Score**: ``eval score``'s reference scorer over the log, with the references of every
   train prompt the pack rules can label (``eval.build_pack.candidates``: ARC-Challenge and
   Winogrande; MBPP has no tests in the data, so its rows stay unscored).
4. **Retrain**: ``train --from-logs`` (``training.from_logs``) stacked on the start router's
   data (the same train prompts, 5 models).
5. **Offline A/B** on the RouterBench *test* split (``eval.ab.ab_on_data``; the start router
   read through the catalog's stand-ins): ``aiq_before``, ``aiq_after``, their paired
   bootstrap CI, and ``aiq_full_info`` of the same kind trained with all 11 models' outcomes.
6. **Off-policy vs replay**: the retrained router's quality on the logged (scored) rows,
   estimated from the log alone (``eval.ab.ab_on_logs``, doubly robust; SNIPS and IPS beside
   it) and measured by replaying its choices on the same prompts against the recorded
   outcomes, at the route's willingness to pay.
7. **Promotion under load** (``benchmarks/promotion_load.py``): the retrained version promoted
   while 100 requests/s flow; ``failed_during_promotion``.

Costs in the catalog: one blended USD/token price per model fitted on the train rows (its
total recorded cost over prompt tokens plus answer words), so what the gateway logs is close
to what the data billed; the test figures use the data's real costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gateway_overhead import free_port, wait_healthy  # noqa: E402

KNOWN = ["gpt-4-1106-preview", "gpt-3.5-turbo-1106", "claude-instant-v1",
         "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def catalog(table, known: list[str]) -> tuple[list[dict], dict[str, str | None]]:
    """The 11 models as catalog entries (blended prices from the train rows) and each unknown
    model's stand-in: the known model closest in mean cost per request."""
    from training.data import count_tokens

    train = table.split("train")
    tokens = count_tokens(train.prompts).astype(float)
    words = {m: np.array([len(a.split()) for a in train.meta["responses"][m]], dtype=float)
             for m in table.models}
    mean_cost = np.nanmean(train.costs, axis=0)
    models, stand_in = [], {}
    for j, m in enumerate(table.models):
        seen = ~np.isnan(train.costs[:, j])
        price = float(np.nansum(train.costs[seen, j])
                      / (tokens[seen].sum() + words[m][seen].sum()) * 1e6)
        closest = None
        if m not in known:
            closest = min(known, key=lambda k: abs(mean_cost[table.models.index(k)]
                                                   - mean_cost[j]))
        stand_in[m] = closest
        entry = {"name": m, "input_price": round(price, 6), "output_price": round(price, 6),
                 "context_window": 200_000,
                 "expected_output_tokens": max(1, int(words[m][seen].mean()))}
        if closest:
            entry["stands_in_for"] = closest
        models.append(entry)
    return models, stand_in


def write_config(path: Path, models: list[dict], router: Path, traffic: Path, port: int,
                 args: argparse.Namespace) -> Path:
    enc = ROOT / "models" / "encoders" / "all-MiniLM-L6-v2"
    cfg = {
        "version": 1,
        "encoder": {"path": str(enc), "text_path": str(enc)},
        "router": {"path": str(router)},
        "server": {"host": "127.0.0.1", "port": port},
        "models": models,
        "routes": [{"name": "auto",
                    "policy": {"mode": "tradeoff", "willingness_to_pay": args.wtp},
                    "exploration": {"rate": args.rate, "margin": args.margin, "seed": 13}}],
        "default_route": "auto",
        "traffic": {"dsn": f"sqlite:///{traffic}", "log_prompts": True,
                    "log_embeddings": True, "log_answers": True},
        "default_deployment": {"provider": "simulated"},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


async def serve_prompts(url: str, prompts: list[str], passes: int, concurrency: int = 16,
                        ) -> dict[str, int]:
    """Every prompt ``passes`` times through ``auto``; counts by status."""
    statuses: dict[str, int] = {}
    queue: asyncio.Queue[str] = asyncio.Queue()
    for _ in range(passes):
        for p in prompts:
            queue.put_nowait(p)
    total = queue.qsize()

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            prompt = queue.get_nowait()
            try:
                r = await client.post(f"{url}/v1/chat/completions", json={
                    "model": "auto", "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}]})
                key = str(r.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1
            done = sum(statuses.values())
            if done % 2000 == 0:
                log(f"  {done}/{total} requests")

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return statuses


def recorded_ready(url: str, prompt: str, model: str, expected: str, timeout: float = 60) -> None:
    """Wait until the simulated provider answers from the recorded data (loaded in the
    background after start-up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.post(f"{url}/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": prompt}]}, timeout=30)
        if r.json()["choices"][0]["message"]["content"] == expected:
            return
        time.sleep(0.3)
    raise RuntimeError("the simulated provider never answered from the recorded data")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "closed_loop"))
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--kind", default=None, help="router kind (default: the shipped default)")
    ap.add_argument("--wtp", type=float, default=0.05, help="the route's willingness to pay")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--skip-promotion", action="store_true")
    args = ap.parse_args()

    from eval.ab import ab_on_data, ab_on_logs, bandit_from_log, replay, tradeoff_picks
    from eval.build_pack import candidates
    from eval.pack import load_references, write_pack
    from eval.score_logs import score_references
    from router.artifact import load_router
    from router.providers.recorded import RecordedAnswers
    from router.traffic import TrafficLog
    from training.data import load
    from training.fit import DEFAULT_KIND, train_router
    from training.from_logs import prompt_key, table_from_logs
    from training.table import RoutingTable

    kind = args.kind or DEFAULT_KIND
    work = Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    rb = load("routerbench")
    keep = [rb.models.index(m) for m in KNOWN]
    base5 = RoutingTable(name="routerbench-5", prompts=rb.prompts, models=list(KNOWN),
                         scores=rb.scores[:, keep], costs=rb.costs[:, keep], tasks=rb.tasks,
                         splits=rb.splits, cost_source=rb.cost_source)

    t0 = time.perf_counter()
    log(f"training the start ({kind}, 5 models) and full-information (11 models) routers")
    start = train_router(base5, work / "start", kind=kind, name="start", calibrate=False)
    full = train_router(rb, work / "full", kind=kind, name="full", calibrate=False)
    train_s = time.perf_counter() - t0

    models, stand_in = catalog(rb, KNOWN)
    port = free_port()
    traffic = work / "traffic.sqlite3"
    config = write_config(work / "catalog.yaml", models, start, traffic, port, args)
    log("stand-ins: " + ", ".join(f"{m} -> {s}" for m, s in stand_in.items() if s))

    train = rb.split("train")
    prompts = list(train.prompts)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--config",
                               str(config)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(work / "server.log", "w"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/readyz", server)
        yi = "zero-one-ai/Yi-34B-Chat"
        recorded_ready(url, prompts[0], yi, RecordedAnswers.load().answer(yi, prompts[0]))
        log(f"serving {len(prompts)} train prompts x {args.passes} passes (exploration rate "
            f"{args.rate}, margin {args.margin})")
        t1 = time.perf_counter()
        statuses = asyncio.run(serve_prompts(url, prompts, args.passes))
        serve_s = time.perf_counter() - t1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    log(f"served: {statuses} in {serve_s:.0f} s")

    built = candidates()
    refs_path = write_pack(work / "references.jsonl.gz",
                           [row for rows in built.candidates.values() for row in rows])
    traffic_log = TrafficLog(f"sqlite:///{traffic}")
    run = score_references(traffic_log, load_references(refs_path))
    log(f"scored: {run.summary()}")

    table, window = table_from_logs(traffic_log, base=base5)
    bandit = bandit_from_log(traffic_log)
    traffic_log.close()
    log(f"retraining on {window.rows_read} scored rows + the start data: {window.observations}")
    retrained = train_router(table, work / "retrained", kind=kind, name="retrained",
                             calibrate=False)

    a, b, f = load_router(start), load_router(retrained), load_router(full)
    before_after = ab_on_data(a, b, rb, split="test", stands_in=stand_in,
                              replicates=args.bootstrap)
    full_info = ab_on_data(a, f, rb, split="test", stands_in=stand_in, replicates=100)
    aiq_before, aiq_after = before_after["a"]["aiq"], before_after["b"]["aiq"]
    aiq_full = full_info["b"]["aiq"]
    gap = (aiq_after - aiq_before) / (aiq_full - aiq_before)

    logs_ab = ab_on_logs(a, b, bandit, willingness_to_pay=args.wtp, stands_in=stand_in,
                         replicates=args.bootstrap)
    # Replay: the retrained router's own choice on each logged row, scored by the outcome
    # the data recorded for that (prompt, model).
    outcome = {prompt_key(p): train.scores[i] for i, p in enumerate(train.prompts)}
    logged_models = sorted(set(bandit.models))
    r = replay(b, logged_models, np.zeros(len(logged_models)), prompts=bandit.prompts)
    picks = tradeoff_picks(r.quality, r.cost, [1.0 / args.wtp])[0]
    truth = [outcome[" ".join(p.split())][rb.models.index(logged_models[k])]
             for p, k in zip(bandit.prompts, picks, strict=True)]
    replay_quality = float(np.mean(truth))
    dr = logs_ab["b"]["dr"]["quality"]

    promotion = {"failed_during_promotion": None}
    if not args.skip_promotion:
        from promotion_load import run_promotion_load

        promotion = run_promotion_load(config, [start, retrained], seconds=20, rate=100)

    result = {
        "scenario": {"known": KNOWN, "stand_ins": {m: s for m, s in stand_in.items() if s},
                     "kind": kind, "passes": args.passes, "exploration_rate": args.rate,
                     "margin": args.margin, "willingness_to_pay": args.wtp,
                     "requests": sum(statuses.values()), "statuses": statuses,
                     "scored": run.summary(), "observations": window.observations},
        "aiq_before": aiq_before,
        "aiq_after": aiq_after,
        "aiq_full_info": aiq_full,
        "gap_recovered": gap,
        "aiq_diff_ci95": before_after["diff"]["aiq"]["ci95"],
        "ope_quality": dr["estimate"],
        "ope_quality_ci95": dr["ci95"],
        "ope_snips": logs_ab["b"]["snips"]["quality"]["estimate"],
        "ope_ips": logs_ab["b"]["ips"]["quality"]["estimate"],
        "replay_quality": replay_quality,
        "ope_rows": logs_ab["n"],
        "quality_before_after": [before_after["a"]["quality"], before_after["b"]["quality"]],
        "failed_during_promotion": promotion["failed_during_promotion"],
        "promotion": promotion,
        "timings_s": {"train_start_and_full": round(train_s, 1), "serve": round(serve_s, 1)},
    }
    print()
    print(f"{'AIQ on RouterBench test':<40} before {aiq_before:.4f}  after {aiq_after:.4f}  "
          f"full information {aiq_full:.4f}")
    ci = result["aiq_diff_ci95"]
    print(f"{'AIQ after - before (95% CI)':<40} {aiq_after - aiq_before:+.4f} "
          f"[{ci[0]:+.4f}, {ci[1]:+.4f}]")
    print(f"{'gap recovered':<40} {gap:.1%}")
    print(f"{'retrained quality on the log':<40} off-policy DR {dr['estimate']:.4f} "
          f"(SNIPS {result['ope_snips']:.4f}, IPS {result['ope_ips']:.4f}); replay "
          f"{replay_quality:.4f}  ({logs_ab['n']} rows)")
    print(f"{'failed during promotion':<40} {result['failed_during_promotion']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
