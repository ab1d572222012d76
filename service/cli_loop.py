"""The closed loop's verbs of ``contextforge`` (``service.cli`` parses, these run):
``collect``, ``eval score``, ``eval ab`` and ``train --from-logs``. Heavy imports happen inside
each verb, as in ``service.cli``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

import msgspec


def print_json(obj) -> None:
    """``obj`` as indented JSON on stdout (every ``--json``-style answer of the CLI)."""
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(obj)).decode() + "\n")


def cmd_train_from_logs(args: argparse.Namespace) -> int:
    from eval.card import write_card
    from router.artifact import load_router
    from router.catalog import prediction_column
    from router.traffic import TrafficLog
    from training.data import load
    from training.encoders import load_choice
    from training.fit import parse_layers, train_router
    from training.from_logs import METHOD, parse_since, table_from_logs

    base = load(args.base) if args.base else None
    cfg = None
    if args.config:  # the catalog: stand-ins kept where traffic is silent; the card's columns
        from router.overlay import load_effective_config

        cfg = load_effective_config(args.config)
    log = TrafficLog(args.from_logs, base_dir=Path.cwd())
    try:
        table, window = table_from_logs(
            log, scorer=args.scorer, since=parse_since(args.since), base=base,
            stand_ins={m.name: m.stands_in_for for m in cfg.models} if cfg else None)
    finally:
        log.close()
    layers = None if args.layers is None else parse_layers(args.layers)
    encoder = load_choice(args.encoder)
    out = train_router(table, Path(args.out), kind=args.router, encoder=encoder,
                       surface=not args.no_surface, layers=layers)
    router = load_router(out)
    traffic = {"window": window.as_dict(), "method": METHOD, "base": args.base}
    if cfg is not None:  # which catalog models this router predicts itself, which borrow
        chat = [m for m in cfg.models if "embeddings" not in m.capabilities]
        traffic["learned"] = [m.name for m in chat if m.name in router.models]
        traffic["stand_ins"] = {
            m.name: m.stands_in_for for m in chat if m.name not in router.models
            and prediction_column(router.models, m.name, m.stands_in_for) is not None}
    results = []
    if base is not None and (base.splits == "test").any():
        from eval.routing import evaluate_on

        results.append(evaluate_on(router, base, split="test", encoder=encoder))
    write_card(out, results, traffic=traffic)
    print(f"trained {router.spec.kind} router on {window.rows_read} scored log rows"
          f"{f' + {args.base}' if args.base else ''} -> {out}")
    print("observations: " + ", ".join(f"{m} {n}" for m, n in window.observations.items()))
    for r in results:
        print(f"{r['dataset']} test (its own models): AIQ {r['router']['aiq']:.4f}")
    return 0


def cmd_eval_score(args: argparse.Namespace) -> int:
    from eval import score_logs
    from router.traffic import TrafficLog
    from training.from_logs import parse_since

    since = parse_since(args.since)
    log = TrafficLog(args.logs, base_dir=Path.cwd())
    try:
        with _progress(args.scorer) as tick:
            if args.scorer == "reference":
                from eval.pack import load_references

                refs = load_references(args.references)
                executor = score_logs.executor_for(args.executor)
                run = score_logs.score_references(log, refs, since=since, executor=executor,
                                                  progress=tick)
            elif args.scorer == "feedback":
                run = score_logs.score_feedback(log, since=since, progress=tick)
            else:
                if not args.judge:
                    raise ValueError(f"--scorer {args.scorer} needs --judge MODEL")
                run = asyncio.run(_judge_run(args, log, since, tick))
    finally:
        log.close()
    print_json(run.summary())
    return 0


async def _judge_run(args: argparse.Namespace, log, since: float | None, tick):
    import httpx

    from eval import score_logs

    async with httpx.AsyncClient(timeout=120) as client:
        judge = score_logs.gateway_judge(client, args.gateway, args.judge, scorer=args.scorer,
                                         reference_model=args.reference_model,
                                         api_key=args.api_key)
        return await score_logs.score_with_judge(log, judge, scorer=args.scorer, since=since,
                                                 concurrency=args.concurrency, progress=tick)


@contextlib.contextmanager
def _progress(what: str):
    """A progress bar on stderr (rows read), off when stderr is not a terminal."""
    from tqdm import tqdm

    with tqdm(desc=f"scoring ({what})", unit="row", disable=not sys.stderr.isatty()) as bar:
        yield bar.update


def cmd_eval_ab(args: argparse.Namespace) -> int:
    from eval.ab import ab_on_data, catalog_prices, render_markdown
    from router.artifact import load_router

    if args.bootstrap < 1:
        raise ValueError("--bootstrap: give at least 1 resample")
    if args.willingness_to_pay is not None and args.willingness_to_pay <= 0:
        raise ValueError("--willingness-to-pay must be > 0 (USD per request per quality unit)")
    stands_in, prices = None, None
    if args.config:
        from router.overlay import load_effective_config

        # The catalog's stand-ins, read as the gateway reads them (overlay applied).
        catalog = load_effective_config(args.config).models
        stands_in = {m.name: m.stands_in_for for m in catalog}
        # Both routers decide with the costs the gateway would: the catalog's prices.
        prices = catalog_prices(catalog)
    a, b = load_router(args.a), load_router(args.b)
    if args.logs:
        if args.plot:
            raise ValueError("--plot draws cost-quality curves, which --logs has none of: "
                             "omit it")
        from eval.ab import ab_on_logs, bandit_from_log
        from router.policy import PolicySpec
        from router.traffic import TrafficLog

        wtp = args.willingness_to_pay
        if wtp is None and args.config:
            from router.overlay import load_effective_config

            cfg = load_effective_config(args.config)
            route = next(r for r in cfg.routes if r.name == cfg.default_route)
            wtp = route.policy.willingness_to_pay
        since = _after_training(args, (args.a, args.b))
        log = TrafficLog(args.logs, base_dir=Path.cwd())
        try:
            bandit = bandit_from_log(log, scorer=args.scorer, since=since)
        finally:
            log.close()
        result = ab_on_logs(a, b, bandit, willingness_to_pay=wtp or PolicySpec().willingness_to_pay,
                            stands_in=stands_in, replicates=args.bootstrap, seed=args.seed,
                            prices=prices)
    else:
        result = ab_on_data(a, b, args.data, split=args.split, stands_in=stands_in,
                            replicates=args.bootstrap, seed=args.seed,
                            willingness_to_pay=args.willingness_to_pay, prices=prices)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    markdown = render_markdown(result)
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    if args.plot:
        from eval.plots import plot_ab

        plot_ab(result, args.plot)
    print(markdown, end="")
    return 0


def _after_training(args: argparse.Namespace, folders) -> float | None:
    """``eval ab --logs``'s window: ``--since``, else the rows after every compared router's
    traffic training window (a router judged on rows it learned from looks better than it
    is: it remembers which explored answers were right)."""
    import datetime as dt

    from training.from_logs import parse_since

    if args.since:
        return parse_since(args.since)
    ends = []
    for folder in folders:
        card = Path(folder) / "card.json"
        last = (json.loads(card.read_text()).get("traffic", {}).get("window", {}).get("last")
                if card.exists() else None)
        if last:
            ends.append(dt.datetime.fromisoformat(last).timestamp())
    if not ends:
        return None
    since = max(ends) + 1e-3
    when = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    print(f"estimating on rows logged after {when} UTC, when the routers' training traffic "
          "ends (--since to change)", file=sys.stderr)
    return since


def cmd_collect(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from eval.collect import CollectError, collect, read_collected
    from eval.pack import answered_as, compare_recorded, read_pack, source_models

    pack = read_pack(args.pack)[: args.limit]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    api_key = args.api_key or os.environ.get("CONTEXTFORGE_API_KEY")
    try:
        report = asyncio.run(collect(pack, models, args.out, gateway=args.gateway,
                                     api_key=api_key, max_usd=args.max_usd,
                                     concurrency=args.concurrency,
                                     progress=sys.stderr.isatty()))
    except CollectError as exc:  # the gateway is unreachable or refuses the key
        print(f"contextforge collect: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # rows are flushed as they complete: nothing is lost
        print(f"\ninterrupted: rerun the same command to resume {args.out}", file=sys.stderr)
        return 130
    print(f"{args.out}: {report.written} rows written this run ({report.rows_in_file} in the "
          f"file), ${report.spent_usd:.4f} spent (${report.file_spent_usd:.4f} in the file)")
    if report.skipped or report.errors:
        print(f"  {report.skipped} pairs refused by the gateway (4xx), {report.errors} failed "
              f"after retries: see {args.out}.errors.jsonl")
    for model, mean in report.mean_score.items():
        print(f"  {model:<28} mean score {mean:.3f}")
    if report.stopped_at_cap:
        print(f"stopped at the spend cap: ${report.file_spent_usd:.4f} of --max-usd "
              f"{args.max_usd} spent on this file, the next pair is estimated at "
              f"${report.next_estimate_usd:.6f}; {report.remaining} pairs remain: rerun with a "
              "higher --max-usd to resume", file=sys.stderr)
    elif report.remaining:
        print(f"{report.remaining} pairs remain (failed this run): a rerun resumes them",
              file=sys.stderr)
    if args.compare_recorded:
        from router.overlay import load_effective_config

        mapping = answered_as(load_effective_config(args.config), models,
                              source_models(pack))
        agreement = compare_recorded(read_collected(args.out), pack, mapping)
        print(f"recorded outcomes: {agreement.agreed}/{agreement.compared} agree "
              f"({agreement.rate:.2%}); {agreement.not_compared} rows not compared")
        for d in agreement.disagreements:
            print(f"  {d.pack_id} {d.model} (as {d.data_model}): recorded {d.recorded:g}, "
                  f"scored {d.score:g}: {d.detail}")
    return 1 if report.stopped_at_cap or report.remaining else 0
