"""The ``contextforge`` command line.

Verbs (DESIGN.md fixes their names and flags): ``serve``, ``route``, ``train``,
``eval routing``, ``eval cache``, ``eval ab``, ``eval score``, ``collect``,
``models list|promote`` (the router registry), ``keys create|list|rotate|revoke`` and
``audit verify`` (``service.cli_governance``), plus ``setup`` (build the encoder and the
default router when missing) and ``validate`` (check a config file). The closed loop's verbs
run in ``service.cli_loop``; ``report`` (a usage report of the traffic log) in
``service.cli_report``.
Heavy imports happen inside each verb so ``route`` never imports torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from service.cli_governance import add_governance_verbs
from service.cli_loop import (
    cmd_collect,
    cmd_eval_ab,
    cmd_eval_score,
    print_json,
)
from service.cli_report import add_report_verb

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROUTER = REPO / "models" / "routers" / "default"


def cmd_setup(args: argparse.Namespace) -> int:
    from router.artifact import load_router
    from training.encoders import encoder_folder, encoder_for
    from training.export_encoder import ensure_encoder

    # The transformer is always built: /v1/embeddings serves it whatever routing reads.
    print(f"encoder: {ensure_encoder()}", flush=True)
    if not (DEFAULT_ROUTER / "router.json").exists() or args.retrain:
        from eval.card import write_card
        from eval.routing import evaluate_routing
        from training.fit import train_router

        print(f"training the default router into {DEFAULT_ROUTER} ...", flush=True)
        train_router("routerbench", DEFAULT_ROUTER, name="default")
        router = load_router(DEFAULT_ROUTER)
        write_card(DEFAULT_ROUTER, [evaluate_routing(router, "routerbench", split="test")])
    folders = [DEFAULT_ROUTER]
    if args.config:  # the config's own router too (e.g. one trained on the static table)
        from router.overlay import load_effective_config

        cfg = load_effective_config(args.config)
        folders.append(cfg.resolve(cfg.router.path))
    for folder in dict.fromkeys(folders):
        router = load_router(folder)
        # Builds the routing encoder the router reads if missing; refuses a different table.
        encoder_for(router)
        print(f"router: {folder} (reads {encoder_folder(router.spec.encoder.id)})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from router.overlay import load_effective_config
    from router.validate import build_engine

    # The same pipeline as start-up, the admin API and reconfiguration (router.validate).
    cfg = load_effective_config(args.config)
    build_engine(cfg)
    print(f"{args.config or 'contextforge.yaml'}: ok ({len(cfg.models)} models, "
          f"{len(cfg.routes)} routes)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from router.overlay import load_effective_config
    from service.server import serve, with_address

    serve(with_address(load_effective_config(args.config), args.host, args.port))
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from router.overlay import load_effective_config
    from router.registry import Registry, load_version, serving_config
    from router.requirements import Requirements
    from router.validate import build_engine

    config = load_effective_config(args.config)
    engine = build_engine(config)
    # Explain what the gateways serve: the registry's live version when one is recorded.
    registry = Registry.for_config(config)
    live = registry.live_path()
    if live.resolve() != config.resolve(config.router.path).resolve():
        engine = build_engine(serving_config(config, registry, live), like=engine,
                              router=load_version(live, live.name))
    target = engine.target(args.route or "auto")
    policy = None
    if args.mode and target in engine.routes:
        policy = msgspec.structs.replace(engine.routes[target].entry.policy, mode=args.mode)
    prompts = args.prompt or []
    if not prompts:
        print("route: give at least one PROMPT", file=sys.stderr)
        return 2
    needs = Requirements(frozenset(args.require or ()), args.max_tokens)
    for prompt in prompts:
        # The gateway's path: routed for a route or auto, pinned for a catalog model.
        d = engine.select(target, prompt, needs=needs, policy=policy,
                          input_tokens=engine.encoder.count_tokens(prompt))
        if args.json:
            print_json(d)
            continue
        print(f"{prompt[:70]!r}\n  -> {d.model}  (route {d.route}, {d.mode}: {d.reason};"
              f" {d.elapsed_ms:.1f} ms)")
        for c in sorted(d.candidates, key=lambda c: -(c.predicted_quality or 0)):
            mark = "*" if c.model == d.model else " "
            note = "" if c.eligible else f"  [excluded: {c.excluded_because}]"
            quality = "   -  " if c.predicted_quality is None else f"{c.predicted_quality:.3f}"
            source = f"as {c.stands_in_for}" if c.stands_in_for else "learned"
            print(f"   {mark} {c.model:<22} q={quality}  "
                  f"${c.estimated_cost_usd:.6f}  ({source}){note}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.from_logs:
        from service.cli_loop import cmd_train_from_logs

        return cmd_train_from_logs(args)
    if args.since:
        raise SystemExit("--since goes with --from-logs")
    from eval.card import write_card
    from eval.routing import evaluate_on, evaluate_routing
    from router.artifact import load_router
    from training.data import load
    from training.encoders import load_choice
    from training.fit import parse_layers, train_router
    from training.table import stack

    layers = None if args.layers is None else parse_layers(args.layers)
    encoder = load_choice(args.encoder)
    table = load(args.data)
    base = load(args.base) if args.base else None
    fitted = stack(base, table) if base is not None else table
    out = train_router(fitted, Path(args.out), kind=args.router, encoder=encoder,
                       surface=not args.no_surface, layers=layers)
    print(f"trained {args.router or 'default kind'} router on {fitted.name} -> {out}")
    results = []
    if base is not None:  # the data's models beside the base's: judged on what is held out
        for held in (t for t in (table, base) if (t.splits == "test").any()):
            results.append(evaluate_on(load_router(out), held, split="test", encoder=encoder))
    elif (table.splits == "test").any():
        results.append(evaluate_routing(load_router(out), table, split="test", encoder=encoder))
    write_card(out, results)
    for r in results:
        print(f"test: AIQ {r['router']['aiq']:.4f} (single-model hull {r['zero_router_aiq']:.4f}),"
              f" best single {r['best_single']['model']} {r['best_single']['quality']:.4f}")
    return 0


def cmd_eval_routing(args: argparse.Namespace) -> int:
    from eval.routing import evaluate_routing
    from router.artifact import load_router
    from training.encoders import encoder_for

    router = load_router(args.router)
    result = evaluate_routing(router, args.data, split=args.split,
                              encoder=encoder_for(router, args.encoder))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.plot:
        from eval.plots import plot_routing

        plot_routing(result, args.plot)
    r, b = result["router"], result["best_single"]
    print(f"{result['dataset']} [{args.split}] n={result['n']}: router AIQ {r['aiq']:.4f} "
          f"vs single-model hull {result['zero_router_aiq']:.4f}; best single {b['model']} "
          f"q={b['quality']:.4f} ${b['cost']:.6f}; router reaches it at "
          f"{result['cost_at_best_quality']}")
    if "apgr" in result:
        print(f"APGR {result['apgr']:.4f}  CPT(50%) {result['cpt50']}  CPT(80%) {result['cpt80']}")
    return 0


def cmd_eval_cache(args: argparse.Namespace) -> int:
    from eval.cache_eval import evaluate_cache, format_result
    from router.cache.verifier import DEFAULT_PATH, Verifier
    from router.encoders import load_encoder
    from training.data import load_pairs

    verifier = Verifier.load(args.verifier or DEFAULT_PATH)
    encoder_dir = args.encoder or Path(__file__).resolve().parents[1] / "models" / "encoders" / (
        verifier.encoder or "all-MiniLM-L6-v2")
    result = evaluate_cache(load_pairs(args.data), verifier, encoder=load_encoder(encoder_dir))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(format_result(result))
    return 0


def _aiq(card) -> str:
    return "-" if card is None or card.aiq is None else f"{card.aiq:.4f}"


def cmd_models_list(args: argparse.Namespace) -> int:
    from router.overlay import load_effective_config
    from router.registry import Registry

    registry = Registry.for_config(load_effective_config(args.config))
    versions, live = registry.list(), registry.live()
    if args.json:
        print_json({"registry": str(registry.folder), "live": live, "data": versions})
        return 0
    print(f"registry {registry.folder}: " + (f"live {live}" if live else
          f"no version live; serving router.path {registry.default}"))
    rows = [("VERSION", "STATE", "KIND", "MODELS", "DATA", "CREATED", "AIQ")]
    for v in versions:
        data = f"{v.data} ({v.rows} rows)" if v.data else "-"
        rows.append((v.version, v.state, v.kind or f"error: {v.error}", str(v.models), data,
                     v.created[:10] or "-", _aiq(v.card)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from router.engine import RoutingEngine
    from router.overlay import load_effective_config
    from router.registry import Registry, serving_config

    config = load_effective_config(args.config)
    registry = Registry.for_config(config)

    def serves(router, folder: Path) -> None:
        # The router's part of the validation pipeline (router.validate, step 6): the encoder
        # it reads and a column for every route's candidates. Not the deployments' keys: this
        # may run where they are not set, and the gateways checked them when they started.
        RoutingEngine.from_config(serving_config(config, registry, folder))

    before = registry.live()
    registry.promote(args.version, serves)
    poll = config.router.poll_s
    print(f"{args.version} is live (was {before or 'router.path'}); recorded in "
          f"{registry.file}")
    print(f"running gateways that follow it switch within {poll:g} s, without a restart"
          if poll > 0 else "router.poll_s is 0: running gateways switch on a restart or "
          "through POST /admin/routers/VERSION/promote")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="contextforge", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="build the encoder and default router if missing")
    s.add_argument("--retrain", action="store_true", help="retrain the default router")
    s.add_argument("--config", help="also build the encoder this config's router reads")
    s.set_defaults(func=cmd_setup)

    s = sub.add_parser("validate", help="check a config file and the artifacts it names")
    s.add_argument("--config")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("serve", help="run the OpenAI-compatible gateway")
    s.add_argument("--config")
    s.add_argument("--host", help="address to bind (default: the config's, 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default: the config's, 8000)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("route", help="show the routing decision for prompts (no provider call)")
    s.add_argument("prompt", nargs="*")
    s.add_argument("--config")
    s.add_argument("--route", help="route name, or a catalog model to see it pinned "
                   "(default: the config's default_route)")
    s.add_argument("--mode", choices=["tradeoff", "target_quality", "max_cost", "strong_share"])
    s.add_argument("--require", action="append", help="capability: tools, vision, json")
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_route)

    s = sub.add_parser("train", help="fit a router and write its folder")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="built-in name or a JSONL/CSV path")
    source.add_argument("--from-logs", metavar="DSN",
                        help="scored traffic: the traffic log's DSN (see `eval score`)")
    s.add_argument("--since", help="with --from-logs: rows from this date or time (ISO 8601)")
    s.add_argument("--base", help="a dataset whose training rows the data (or the traffic) "
                   "is stacked on, so the router keeps its models' columns for the catalog's "
                   "stand-ins (built-in name or path)")
    s.add_argument("--scorer", default="reference",
                   help="with --from-logs: whose scores to learn from (default: reference)")
    s.add_argument("--config", help="with --from-logs: the catalog, so the card says which "
                   "models got their own column and which keep a stand-in")
    s.add_argument("--router", help="kind: knn, linear, mlp, mf, ensemble, taskmix "
                   "(default: the shipped kind, taskmix)")
    s.add_argument("--out", required=True)
    s.add_argument("--no-surface", action="store_true",
                   help="embeddings only: no length / number / script features beside them")
    # Not training.fit.LAYERS_HELP: importing training here would load sklearn for every verb.
    s.add_argument("--layers", help="encoder layers whose mean hidden states the router reads "
                   "beside the embedding: comma-separated, or 'none' (default: the shipped "
                   "choice, training.fit.DEFAULT_LAYERS, for a transformer; none for static)")
    s.add_argument("--encoder", help="what the router reads: minilm, static, a built encoder's "
                   "id or folder (default: the shipped choice, training.encoders)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("collect", help="a labelled prompt pack through the gateway to your "
                       "deployments, scored: a dataset for train --data")
    s.add_argument("--pack", required=True, help="a shipped pack (starter) or a pack file")
    s.add_argument("--models", required=True, help="catalog models, comma-separated")
    s.add_argument("--out", required=True, help="JSONL to write (a rerun resumes it)")
    s.add_argument("--max-usd", type=float, help="stop before the file's spend (its rows' "
                   "costs, the estimates of requests in flight and of the next one) would "
                   "exceed this")
    s.add_argument("--gateway", default="http://127.0.0.1:8000", help="the running gateway "
                   "(default: %(default)s)")
    s.add_argument("--api-key", help="the gateway's key (default: $CONTEXTFORGE_API_KEY)")
    s.add_argument("--concurrency", type=int, default=8, help="requests at a time "
                   "(default: %(default)s)")
    s.add_argument("--limit", type=int, help="only the pack's first N prompts")
    s.add_argument("--compare-recorded", action="store_true", help="compare the scores with "
                   "the outcomes the pack's source data recorded for the data model each "
                   "model's simulated deployments answer as (read from --config)")
    s.add_argument("--config", help="the gateway's config, for --compare-recorded")
    s.set_defaults(func=cmd_collect)

    ev = sub.add_parser("eval", help="evaluate routers").add_subparsers(dest="what", required=True)
    s = ev.add_parser("routing", help="cost-quality evaluation of a router")
    s.add_argument("--router", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--json")
    s.add_argument("--plot")
    s.add_argument("--encoder", help="the router's encoder, when not a built one under "
                   "models/encoders/ (an encoder folder)")
    s.set_defaults(func=cmd_eval_routing)

    s = ev.add_parser("cache", help="false-hit and hit rates of the semantic cache's shipped "
                      "hit decision on labelled pairs, beside cosine baselines")
    s.add_argument("--data", required=True, help="qqp, or a JSONL/CSV of {text_a, text_b, "
                   "label[, split]}")
    s.add_argument("--json")
    s.add_argument("--verifier", help="a verifier npz (default: the shipped "
                   "models/cache/verifier.npz)")
    s.add_argument("--encoder", help="an encoder folder (default: the verifier's, under "
                   "models/encoders/)")
    s.set_defaults(func=cmd_eval_cache)

    s = ev.add_parser("ab", help="offline A/B of two routers: replayed on labelled data, or "
                      "estimated off-policy from logged traffic")
    s.add_argument("--a", required=True, help="router folder A (the incumbent)")
    s.add_argument("--b", required=True, help="router folder B (the candidate)")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="built-in name or a JSONL/CSV path")
    source.add_argument("--logs", help="traffic log DSN (scored rows)")
    s.add_argument("--split", default="test")
    s.add_argument("--config", help="a config whose catalog's stands_in_for maps models a "
                   "router has no column for, and whose prices both routers decide with (as "
                   "the gateway does)")
    s.add_argument("--willingness-to-pay", type=float, help="USD per request per quality "
                   "unit of the compared tradeoff (default: the curve's first point, as eval "
                   "routing reports)")
    s.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--scorer", default="reference",
                   help="with --logs: whose scores are the rewards (default: reference)")
    s.add_argument("--since", help="with --logs: rows from this date or time (default: after "
                   "the routers' training traffic, from their cards)")
    s.add_argument("--json")
    s.add_argument("--markdown")
    s.add_argument("--plot")
    s.set_defaults(func=cmd_eval_ab)

    s = ev.add_parser("score", help="score logged answers; verdicts are written beside their "
                      "rows, each (request, scorer) once, so reruns and resumed runs repeat "
                      "nothing")
    s.add_argument("--logs", required=True, help="traffic log DSN")
    s.add_argument("--since", help="rows from this date or time (ISO 8601)")
    s.add_argument("--scorer", default="reference",
                   choices=["reference", "feedback", "judge", "pairwise"])
    s.add_argument("--references", help="reference: a labelled prompt pack (JSONL, .gz ok) "
                   "whose prompts the logged ones are matched to (default: the shipped pack)")
    s.add_argument("--gateway", default="http://127.0.0.1:8000",
                   help="judge/pairwise: the gateway the judge is called through")
    s.add_argument("--judge", help="judge/pairwise: the judge model (a catalog model)")
    s.add_argument("--reference-model", help="pairwise: the model whose answer is compared")
    s.add_argument("--api-key", help="judge/pairwise: the gateway's key, if it has one")
    s.add_argument("--concurrency", type=int, default=8, help="judge calls at a time")
    s.add_argument("--executor", help="reference: where batches are scored: local (default), "
                   "processes[:N], or dask://HOST:PORT")
    s.set_defaults(func=cmd_eval_score)
    models = sub.add_parser("models", help="the router registry: versions and the live one")
    mv = models.add_subparsers(dest="what", required=True)
    s = mv.add_parser("list", help="router versions with their state and card figures")
    s.add_argument("--config")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models_list)
    s = mv.add_parser("promote", help="make a router version live (running gateways follow)")
    s.add_argument("version")
    s.add_argument("--config")
    s.set_defaults(func=cmd_models_promote)
    add_governance_verbs(sub)
    add_report_verb(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``contextforge`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        # Expected user errors (bad config, unknown model, bad data row): one clear line.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"contextforge {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
