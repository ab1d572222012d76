"""The closed loop on a catalog with models the router has never seen (issue 13's scenario).

    python benchmarks/closed_loop.py [--json FILE] [--work DIR] [--passes 20] [--rate 0.5]
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
   Every router decides with the catalog's prices, as the gateway does (``eval ab --config``);
   the same figures with each router's own cost model are under ``decision_costs``.
6. **Off-policy vs replay**: the retrained router's quality on the logged (scored) rows,
   estimated from the log alone (doubly robust; SNIPS and IPS beside it) and measured by
   replaying its choices on the same prompts against the recorded outcomes, at the route's
   willingness to pay. A router judged on the very rows it learned from is judged unfairly:
   it learned that the explored model was right on a prompt, so it picks that model there
   exactly when the logged draw was a success, and the estimate counts its own memory (here
   +7 points, measured). So the estimate is cross-fitted: the logged prompts are split into
   ``--folds`` parts by a hash, and each part is estimated, and replayed, with the router
   retrained without that part's rows (the same recipe; the base data stays in every fit).
7. **Collect**: the shipped pack through the same gateway to all 11 models (``collect``, the
   real reference scorer), compared with the outcomes the data recorded for them.
8. **Promotion under load** (``benchmarks/promotion_load.py``): the retrained version promoted
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


def cross_fitted(table, n_base: int, bandit, kind: str, work: Path, args, stand_in, rb, train,
                 prices):
    """The retrained router's quality on the logged rows, estimated off-policy and replayed,
    each fold of logged prompts by a router retrained without that fold's log rows."""
    import hashlib

    from eval import ope
    from eval.ab import replay, tradeoff_picks
    from router.artifact import load_router
    from training.fit import train_router
    from training.from_logs import prompt_key

    def fold(prompt: str) -> int:
        return hashlib.sha256(prompt.encode()).digest()[0] % args.folds

    models = sorted(set(bandit.models))
    logged = np.array([models.index(m) for m in bandit.models])
    row_fold = np.array([fold(p) for p in bandit.prompts])
    table_fold = np.array([-1] * n_base + [fold(p) for p in table.prompts[n_base:]])
    outcome = {prompt_key(p): train.scores[i] for i, p in enumerate(train.prompts)}
    n = len(bandit)
    target = np.zeros(n, dtype=int)
    q_hat, c_hat = np.zeros((n, len(models))), np.zeros((n, len(models)))
    fallback = np.array([bandit.costs[logged == j].mean() for j in range(len(models))])
    for k in range(args.folds):
        out = train_router(table.select(table_fold != k), work / f"fold{k}", kind=kind,
                           name=f"fold{k}", calibrate=False)
        rows = np.flatnonzero(row_fold == k)
        r = replay(load_router(out), models, fallback,
                   prompts=[bandit.prompts[i] for i in rows], prices=prices)
        target[rows] = tradeoff_picks(r.quality, r.cost, [1.0 / args.wtp])[0]
        q_hat[rows], c_hat[rows] = r.quality, r.cost
    truth = np.array([outcome[" ".join(p.split())][rb.models.index(models[t])]
                      for p, t in zip(bandit.prompts, target, strict=True)])
    counts = ope.resample_counts(n, args.bootstrap, 0)
    est = ope.evaluate_target(target, logged, bandit.propensities, bandit.rewards,
                              bandit.costs, q_hat, c_hat, counts)
    return {"n": n, "dr": est["dr"]["quality"], "snips": est["snips"]["quality"],
            "ips": est["ips"]["quality"], "agreement": est["agreement"],
            "replay_quality": float(truth.mean())}


def per_task(a, b, f, rb, stand_in, prices) -> dict[str, dict[str, float]]:
    """AIQ before, after and with full information on each task's test rows."""
    from eval.ab import ab_on_data

    out = {}
    for task in sorted(set(rb.tasks.tolist())):
        rows = rb.select(rb.tasks == task)
        pair = ab_on_data(a, b, rows, split="test", stands_in=stand_in, replicates=10,
                          prices=prices)
        full = ab_on_data(a, f, rows, split="test", stands_in=stand_in, replicates=10,
                          prices=prices)
        out[task] = {"before": pair["a"]["aiq"], "after": pair["b"]["aiq"],
                     "full_info": full["b"]["aiq"]}
    return out


def in_sample(retrained, start, bandit, args, stand_in, rb, train, prices
              ) -> dict[str, float]:
    """The same comparison for the router retrained on every logged row, judged on them."""
    from eval.ab import ab_on_logs, replay, tradeoff_picks
    from training.from_logs import prompt_key

    est = ab_on_logs(start, retrained, bandit, willingness_to_pay=args.wtp,
                     stands_in=stand_in, replicates=100, prices=prices)
    models = sorted(set(bandit.models))
    r = replay(retrained, models, np.zeros(len(models)), prompts=bandit.prompts,
               prices=prices)
    picks = tradeoff_picks(r.quality, r.cost, [1.0 / args.wtp])[0]
    outcome = {prompt_key(p): train.scores[i] for i, p in enumerate(train.prompts)}
    truth = [outcome[" ".join(p.split())][rb.models.index(models[k])]
             for p, k in zip(bandit.prompts, picks, strict=True)]
    return {"dr": est["b"]["dr"]["quality"]["estimate"], "replay": float(np.mean(truth))}


PACK_PROBE = "Write a function to find the intersection of two arrays."


def collect_phase(url: str, work: Path, models: list[str]) -> dict:
    """``contextforge collect`` of the shipped pack to all 11 models through the gateway, the
    real reference scorer, and the agreement with the outcomes the data recorded for the
    model each deployment answers as (its own)."""
    from eval.collect import collect, read_collected
    from eval.pack import compare_recorded, read_pack

    pack = read_pack("starter")
    out = work / "collected.jsonl"
    asyncio.run(collect(pack, models, out, gateway=url, concurrency=16))
    got = compare_recorded(read_collected(out), pack, {m: m for m in models})
    return {"compared": got.compared, "agreed": got.agreed, "rate": got.rate,
            "not_compared": got.not_compared,
            "disagreements": [{"pack_id": d.pack_id, "model": d.model, "recorded": d.recorded,
                               "score": d.score, "detail": d.detail}
                              for d in got.disagreements]}


def promote_under_load(work: Path, config: Path, start: Path, retrained: Path,
                       models: list[str]) -> tuple[dict, dict]:
    """The collect phase, then ``benchmarks/promotion_load.py``'s drive on this catalog: v1
    (start) and v2 (retrained) in a registry, 20 s at 100 requests/s, the live version
    changing every 4 s (admin API and CLI alternately)."""
    from promotion_load import KEY, drive, summarise

    from router.providers.recorded import RecordedAnswers

    routers = work / "registry"
    shutil.copytree(start, routers / "v1")
    shutil.copytree(retrained, routers / "v2")
    cfg = yaml.safe_load(config.read_text())
    port = free_port()
    cfg["router"] = {"path": str(routers / "v1"), "poll_s": 2.0}
    cfg["server"] = {"host": "127.0.0.1", "port": port, "master_key": KEY}
    cfg["traffic"]["dsn"] = f"sqlite:///{work / 'promotion.sqlite3'}"
    cfg["admin"] = {"state_path": str(work / "admin.json")}
    path = work / "promotion.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    settings = argparse.Namespace(rate=100.0, seconds=20.0, every=4.0, poll_s=2.0)
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--config",
                               str(path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(work / "promotion.log", "w"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{url}/readyz", server)
        first = models[0]
        recorded_ready(url, PACK_PROBE, first, RecordedAnswers.load().answer(first, PACK_PROBE))
        agreement = collect_phase(url, work, models)
        log(f"collect: {agreement['agreed']}/{agreement['compared']} (prompt, model) rows "
            "agree with the recorded outcomes")
        results, promotions = asyncio.run(drive(url, path, settings))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return summarise(results, promotions, settings), agreement


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    ap.add_argument("--work", default=str(ROOT / ".cache" / "closed_loop"))
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--folds", type=int, default=5, help="cross-fitting folds (off-policy)")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--kind", default=None, help="router kind (default: the shipped default)")
    ap.add_argument("--wtp", type=float, default=0.05, help="the route's willingness to pay")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--skip-promotion", action="store_true")
    args = ap.parse_args()

    from eval.ab import Price, ab_on_data, bandit_from_log
    from eval.build_pack import candidates
    from eval.pack import load_references, write_pack
    from eval.score_logs import score_references
    from router.artifact import load_router
    from router.providers.recorded import RecordedAnswers
    from router.traffic import TrafficLog
    from training.data import load
    from training.fit import DEFAULT_KIND, train_router
    from training.from_logs import table_from_logs
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

    table, window = table_from_logs(traffic_log, base=base5, stand_ins=stand_in)
    bandit = bandit_from_log(traffic_log)
    traffic_log.close()
    log(f"retraining on {window.rows_read} scored rows + the start data: {window.observations}")
    retrained = train_router(table, work / "retrained", kind=kind, name="retrained",
                             calibrate=False)

    a, b, f = load_router(start), load_router(retrained), load_router(full)
    # The routers decide with the catalog's prices, as the gateway does (eval ab --config);
    # the figures with each router's own cost model are kept beside them.
    prices = {m["name"]: Price(m["input_price"], m["output_price"],
                               m["expected_output_tokens"]) for m in models}
    by_cost_model = {}
    for decide, p in (("catalog", prices), ("router_cost_models", None)):
        pair = ab_on_data(a, b, rb, split="test", stands_in=stand_in,
                          replicates=args.bootstrap, prices=p)
        full_info = ab_on_data(a, f, rb, split="test", stands_in=stand_in, replicates=100,
                               prices=p)
        got = {"aiq_before": pair["a"]["aiq"], "aiq_after": pair["b"]["aiq"],
               "aiq_full_info": full_info["b"]["aiq"], "aiq_diff_ci95": pair["diff"]["aiq"]["ci95"],
               "quality_before_after": [pair["a"]["quality"], pair["b"]["quality"]],
               "per_task": per_task(a, b, f, rb, stand_in, p)}
        got["gap_recovered"] = ((got["aiq_after"] - got["aiq_before"])
                                / (got["aiq_full_info"] - got["aiq_before"]))
        by_cost_model[decide] = got
    head = by_cost_model["catalog"]
    aiq_before, aiq_after = head["aiq_before"], head["aiq_after"]
    aiq_full, gap = head["aiq_full_info"], head["gap_recovered"]

    cross = cross_fitted(table, len(base5), bandit, kind, work, args, stand_in, rb, train,
                         prices)
    log(f"cross-fitted off-policy estimate vs replay: {cross}")
    cross["in_sample"] = in_sample(b, a, bandit, args, stand_in, rb, train, prices)

    promotion, agreement = {"failed_during_promotion": None}, None
    if not args.skip_promotion:
        log("collect, then the retrained router promoted back and forth under 100 requests/s "
            "(a gateway with a traffic log of its own)")
        promotion, agreement = promote_under_load(work, config, start, retrained,
                                                  [m["name"] for m in models])
        log(f"promotion: {promotion}")

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
        "aiq_diff_ci95": head["aiq_diff_ci95"],
        "ope_quality": cross["dr"]["estimate"],
        "ope_quality_ci95": cross["dr"]["ci95"],
        "ope_snips": cross["snips"]["estimate"],
        "ope_ips": cross["ips"]["estimate"],
        "replay_quality": cross["replay_quality"],
        "ope_rows": cross["n"],
        "ope_matches": cross["agreement"],
        "ope_in_sample": cross["in_sample"],
        "decision_costs": by_cost_model,
        "failed_during_promotion": promotion["failed_during_promotion"],
        "collect_agreement": agreement,
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
    other = by_cost_model["router_cost_models"]
    print(f"{'  (decisions on router cost models)':<40} before {other['aiq_before']:.4f}  after "
          f"{other['aiq_after']:.4f}  full {other['aiq_full_info']:.4f}  gap "
          f"{other['gap_recovered']:.1%}")
    for task, v in head["per_task"].items():
        print(f"{'  ' + task:<40} before {v['before']:.4f}  after {v['after']:.4f}  full "
              f"{v['full_info']:.4f}")
    print(f"{'retrained quality on the log':<40} off-policy DR {result['ope_quality']:.4f} "
          f"(SNIPS {result['ope_snips']:.4f}, IPS {result['ope_ips']:.4f}); replay "
          f"{result['replay_quality']:.4f}  ({result['ope_rows']} rows, cross-fitted)")
    print(f"{'failed during promotion':<40} {result['failed_during_promotion']}")
    if agreement is not None:
        print(f"{'collect vs recorded outcomes':<40} {agreement['agreed']}/"
              f"{agreement['compared']} agree ({agreement['rate']:.2%})")
        for d in agreement["disagreements"]:
            print(f"    {d['pack_id']} {d['model']}: recorded {d['recorded']:g}, scored "
                  f"{d['score']:g}: {d['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
