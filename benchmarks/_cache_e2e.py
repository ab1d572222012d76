"""The cache end to end: hits, and misses with the cache on and off, through two gateways in
one process, requests alternated between them (``cache_lookup.py`` runs it).

Both apps are ``service.app.create_app`` on the shipped config, or the one given
(``--config``: e.g. routing on the static table), with simulated providers and the traffic
log in a temporary folder, one with its cache on (the config's cache settings, no snapshot
file); they share one loaded encoder and router (``create_app(engine=...)``), so they differ
only in the cache. Each request
is one ASGI call into the app (the whole Litestar app: parsing, the request path, the JSON
response with its headers), timed around the call; no socket and no HTTP client, so what is
timed is the gateway's own work. Requests run one at a time; each miss prompt goes to both
apps back to back (which first alternates), and after the fill every kind is measured in
the same rounds, so host noise and drift hit all alike. Work a request leaves behind (on a
static-routing config with the cache's gate: the transformer vector of an answer kept by a
miss the gate stopped) is awaited after each request, outside its time, and timed apart
(``after_response``): it is the gateway's work, but not the request's wait.

Prompts are QQP test-split questions, each sent once per app (a miss must be new):
- ``miss_cache_on``: the cache holds ``fill`` entries of the request's scope (the default:
  tenant, ``model: auto``, temperature 0, no system prompt), so the lookup embeds the question
  (the route stage reuses that vector), searches and runs the verifier on the nearest entry,
  and the answer is kept: the realistic worst case;
- ``miss_cache_on_no_scope``: every request names its own ``seed``, so its scope holds nothing:
  no embedding for the lookup, a hash lookup only (then the answer is kept);
- ``hit_exact``: a filled question again; ``hit_semantic``: labelled paraphrases of filled
  questions that the verifier accepts (a first pass finds them; a hit is not kept, so each
  hits again).
A response whose ``x-contextforge-cache`` is not what its kind expects is left out and counted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PATH = "/v1/chat/completions"
WARM = 50  # request pairs before anything is measured
MEASURED = ("miss_on", "miss_no_scope_on", "miss_k8_on", "hit_semantic")
PARTS = ("gate", "lookup_encode", "search_and_verify", "search", "stored_vectors", "verifier",
         "keep")


async def asgi_post(app, path: str, body: bytes) -> tuple[int, dict[str, str], float]:
    """POST ``body`` to ``app`` as one ASGI call: (status, headers, seconds)."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
             "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    delivered = False
    out: dict = {}

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}

    t0 = time.perf_counter()
    await app(scope, receive, send)
    return out["status"], out["headers"], time.perf_counter() - t0


def body(text: str, **extra) -> bytes:
    return json.dumps({"model": "auto", "temperature": 0,
                       "messages": [{"role": "user", "content": text}], **extra}).encode()


class Timings:
    """Time spent in the cache-on gateway's cache calls, per request (wrapped in place)."""

    def __init__(self, gw):
        self.now: dict[str, float] = defaultdict(float)
        cache = gw.cache
        for obj, name, label in ((cache, "admits", "gate"), (cache, "find", "search_and_verify"),
                                 (cache.semantic, "search", "search"),
                                 (cache.semantic, "vectors", "stored_vectors"),
                                 (cache.verifier, "score", "verifier"),
                                 (cache, "keep", "keep"), (gw, "text_vector", "lookup_encode")):
            self._wrap(obj, name, label)

    def _wrap(self, obj, name: str, label: str) -> None:
        inner = getattr(obj, name)
        if asyncio.iscoroutinefunction(inner):
            async def timed(*a, **k):
                t0 = time.perf_counter()
                try:
                    return await inner(*a, **k)
                finally:
                    self.now[label] += time.perf_counter() - t0
        else:
            def timed(*a, **k):
                t0 = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    self.now[label] += time.perf_counter() - t0
        object.__setattr__(obj, name, timed)

    def take(self) -> dict[str, float]:
        got, self.now = dict(self.now), defaultdict(float)
        return got


class Run:
    """Samples by kind (seconds), unexpected cache outcomes, and the on-app's breakdowns."""

    def __init__(self, on, off, timings: Timings):
        self.on, self.off, self.timings = on, off, timings
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.parts: dict[str, list[dict[str, float]]] = defaultdict(list)
        self.unexpected: dict[str, int] = defaultdict(int)
        self.gate_passed: dict[str, list[bool]] = defaultdict(list)  # per on-app miss
        self.after_response: list[float] = []  # seconds of work left behind, per request

    async def settle(self) -> None:
        """Await what the cache-on app's last request left behind (untimed for it)."""
        gw = self.on.state.gateway
        if gw._tasks:
            self.timings.take()
            t0 = time.perf_counter()
            await gw.drain()
            self.after_response.append(time.perf_counter() - t0)
            self.timings.take()

    def _gate(self) -> tuple[int, int]:
        cache = self.on.state.gateway.cache
        return tuple(cache.gate_counts) if cache.gate is not None else (0, 0)

    async def one(self, app, kind: str, raw: bytes, expect: str | None) -> str:
        self.timings.take()
        status, headers, seconds = await asgi_post(app, PATH, raw)
        if status != 200:
            raise RuntimeError(f"{kind}: HTTP {status}")
        got = headers.get("x-contextforge-cache", "")
        parts = self.timings.take()
        await self.settle()
        if expect is None or got == expect:
            self.samples[kind].append(seconds)
            if app is self.on:
                self.parts[kind].append(parts)
        else:
            self.unexpected[kind] += 1
        return got

    async def pair(self, i: int, kind: str, raw: bytes) -> None:
        """One miss on each app, the order alternating with ``i``; both kept, or neither when
        the cache-on app did not miss."""
        order = (self.on, self.off) if i % 2 == 0 else (self.off, self.on)
        got: dict[str, tuple[str, float, dict[str, float]]] = {}
        passed = False
        for app in order:
            self.timings.take()
            before = self._gate()
            status, headers, seconds = await asgi_post(app, PATH, raw)
            if status != 200:
                raise RuntimeError(f"{kind}: HTTP {status}")
            side = "on" if app is self.on else "off"
            got[side] = (headers.get("x-contextforge-cache", ""), seconds, self.timings.take())
            if app is self.on:
                passed = self._gate()[1] > before[1]
                await self.settle()
        if got["on"][0] != "miss":
            self.unexpected[f"{kind}_on"] += 1
            return
        for side in ("on", "off"):
            self.samples[f"{kind}_{side}"].append(got[side][1])
        self.parts[f"{kind}_on"].append(got["on"][2])
        if self.on.state.gateway.cache.gate is not None:
            self.gate_passed[kind].append(passed)


def prompts(n_fill: int, n_miss: int, seed: int = 0) -> dict[str, list[str]]:
    """QQP test-split questions: ``fill`` (first questions of label-1 pairs), ``para`` (their
    paraphrases) and ``miss`` (``n_miss`` other questions), no text in two lists."""
    from training.data import load_pairs

    test = load_pairs("qqp").split("test")
    rng = np.random.default_rng(seed)
    seen: set[str] = set()

    def new(text: str) -> bool:
        key = " ".join(text.lower().split())
        if not key or key in seen:
            return False
        seen.add(key)
        return True

    fill, para, miss = [], [], []
    for i in rng.permutation(len(test)):
        a, b = test.text_a[i], test.text_b[i]
        if test.labels[i] == 1 and len(fill) < n_fill and new(a):
            fill.append(a)
            if new(b):
                para.append(b)
        elif len(miss) < n_miss:
            miss += [t for t in (a, b) if new(t)]
    return {"fill": fill, "para": para, "miss": miss[:n_miss]}


async def measure(run: Run, texts: dict[str, list[str]], rounds: int, k8_rounds: int,
                  on_gw, tries: int = 1000) -> dict[str, int]:
    """The warm-up, the fill, then every kind interleaved round by round (so drift in the
    host's load hits all alike); returns counts of what was filled and found."""
    miss = iter(texts["miss"])
    for i in range(WARM):  # first-call allocations, lazy imports, new input shapes
        await run.pair(i, "warm", body(next(miss), seed=10**6 + i))
    for text in texts["fill"]:
        await run.one(run.on, "fill", body(text), None)
    semantic = []
    for text in texts["para"][:tries]:  # which paraphrases the verifier accepts
        if await run.one(run.on, "hit_semantic_first", body(text), None) == "hit-semantic":
            semantic.append(text)
    if not semantic:
        raise RuntimeError("no paraphrase of a filled question was a semantic hit")
    for i in range(rounds):
        await run.pair(i, "miss", body(next(miss)))
        # Its own seed: a scope of its own, where nothing is cached.
        await run.pair(i + 1, "miss_no_scope", body(next(miss), seed=i + 1))
        await run.one(run.on, "hit_exact", body(texts["fill"][i % len(texts["fill"])]),
                      "hit-exact")
        await run.one(run.on, "hit_semantic", body(semantic[i % len(semantic)]),
                      "hit-semantic")
    on_gw.cache.candidates = 8  # the verifier checks the 8 nearest of the scope
    for i in range(k8_rounds):
        await run.pair(i, "miss_k8", body(next(miss)))
        await run.one(run.on, "hit_semantic_k8", body(semantic[i % len(semantic)]),
                      "hit-semantic")
    on_gw.cache.candidates = 1
    return {"fill": len(texts["fill"]), "paraphrases_tried": len(texts["para"][:tries]),
            "paraphrases_hit": len(semantic), "entries_at_end": len(on_gw.cache.exact)}


def configs(tmp: Path, path: Path | None = None):
    """The shipped config (or the one at ``path``) with the traffic log in ``tmp``: cache off,
    and cache on."""
    import msgspec

    from router.config import CacheConfig, load_config

    base = load_config(path) if path else load_config()
    out = []
    # The config's own cache settings (a gate, an index), on; never its snapshot file.
    on = msgspec.structs.replace(base.cache, enabled=True, snapshot_path="")
    for name, cache in (("off", CacheConfig()), ("on", on)):
        traffic = msgspec.structs.replace(base.traffic,
                                          dsn=f"sqlite:///{tmp / f'traffic-{name}.sqlite3'}")
        out.append(msgspec.structs.replace(base, traffic=traffic, cache=cache))
    return out


def p50_ms(xs: list[float]) -> float | None:
    return round(float(np.percentile(np.array(xs) * 1e3, 50)), 3) if xs else None


def summary(run: Run, counts: dict[str, int]) -> dict:
    s = run.samples
    out = {
        "hit_exact_e2e_p50_ms": p50_ms(s["hit_exact"]),
        "hit_semantic_e2e_p50_ms": p50_ms(s["hit_semantic"]),
        "miss_cache_on_e2e_p50_ms": p50_ms(s["miss_on"]),
        "miss_e2e_p50_ms": p50_ms(s["miss_off"]),
        "miss_cache_on_no_scope_e2e_p50_ms": p50_ms(s["miss_no_scope_on"]),
        "miss_no_scope_off_e2e_p50_ms": p50_ms(s["miss_no_scope_off"]),
        "miss_cache_on_k8_e2e_p50_ms": p50_ms(s["miss_k8_on"]),
        "miss_k8_off_e2e_p50_ms": p50_ms(s["miss_k8_off"]),
        "hit_semantic_k8_e2e_p50_ms": p50_ms(s["hit_semantic_k8"]),
    }
    out["hit_e2e_p50_ms"] = out["hit_semantic_e2e_p50_ms"]
    # The mean too: a gate makes the misses two populations (stopped, and sent on to the
    # transformer), and the p50 shows only the larger one.
    for key, kind in (("miss_cache_on_e2e_mean_ms", "miss_on"), ("miss_e2e_mean_ms", "miss_off")):
        out[key] = round(float(np.mean(s[kind])) * 1e3, 3) if s[kind] else None
    for key, on, off in (("miss_on_off_ratio", "miss_cache_on_e2e_p50_ms", "miss_e2e_p50_ms"),
                         ("miss_on_off_ratio_no_scope", "miss_cache_on_no_scope_e2e_p50_ms",
                          "miss_no_scope_off_e2e_p50_ms"),
                         ("miss_on_off_ratio_k8", "miss_cache_on_k8_e2e_p50_ms",
                          "miss_k8_off_e2e_p50_ms")):
        out[key] = round(out[on] / out[off], 3) if out[on] and out[off] else None
    for kind in ("miss", "miss_no_scope", "miss_k8"):  # each prompt timed on both apps
        on, off = np.array(s[f"{kind}_on"]), np.array(s[f"{kind}_off"])
        out[f"{kind}_added_paired_p50_ms"] = (
            round(float(np.median(on - off)) * 1e3, 3) if len(on) else None)
    for kind, passed in run.gate_passed.items():  # the gate's verdict on each measured miss
        flags = np.array(passed)
        on = np.array(s[f"{kind}_on"])
        out[f"{kind}_gate_passed_share"] = round(float(flags.mean()), 4) if len(flags) else None
        for name, mask in (("passed", flags), ("stopped", ~flags)):
            out[f"{kind}_on_gate_{name}_e2e_p50_ms"] = p50_ms(list(on[mask])) if len(on) else None
    out["after_response_mean_ms"] = (round(float(np.mean(run.after_response)) * 1e3, 3)
                                     if run.after_response else None)
    out["after_response_count"] = len(run.after_response)
    out["samples"] = {k: len(v) for k, v in s.items()}
    out["unexpected_cache_outcome"] = dict(run.unexpected)
    out["cache_on_parts_p50_ms"] = {
        kind: {label: p50_ms([p.get(label, 0.0) for p in parts])
               for label in PARTS}
        for kind, parts in run.parts.items() if kind in MEASURED}
    out["cache_on_parts_mean_ms"] = {
        kind: {label: round(float(np.mean([p.get(label, 0.0) for p in parts])) * 1e3, 3)
               for label in PARTS}
        for kind, parts in run.parts.items() if kind in MEASURED}
    return {**out, **counts}


async def end_to_end(tmp: Path, fill: int = 2000, rounds: int = 400,
                     k8_rounds: int = 200, config: Path | None = None) -> dict:
    """Every end-to-end figure, from one pair of gateways (on ``config``'s settings when
    given)."""
    from router.engine import RoutingEngine
    from service.app import create_app

    off_cfg, on_cfg = configs(tmp, config)
    engine = await asyncio.to_thread(RoutingEngine.from_config, off_cfg)
    texts = prompts(fill, WARM + 2 * rounds + k8_rounds)
    on, off = create_app(on_cfg, engine=engine), create_app(off_cfg, engine=engine)
    async with on.lifespan(), off.lifespan():
        on_gw = on.state.gateway
        assert on_gw.cache is not None and off.state.gateway.cache is None
        run = Run(on, off, Timings(on_gw))
        counts = await measure(run, texts, rounds, k8_rounds, on_gw)
        gate = on_gw.cache.gate
        counts["routing_encoder"] = engine.encoder.id
        counts["gate_threshold"] = gate.threshold if gate is not None else None
    return summary(run, counts)
