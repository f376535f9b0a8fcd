#!/usr/bin/env python3
"""In-process ASGI benchmark: what RegoGuardMiddleware adds to a Starlette request.

Usage:
    python benches/python/bench_asgi.py [--quick] [--json OUT] [--no-denied]

No server, no network: every variant is an ASGI app called as ``await app(scope, receive,
send)`` in a tight loop inside one event loop, with minimal ``receive``/``send`` coroutines.
Scopes are prebuilt outside the timed region, one fresh dict per request (fresh ``path``
string, fresh user dict), as a server would hand them over. The app behind every variant is
the same Starlette app: five ``Route``s, each an ``async`` endpoint returning
``PlainTextResponse("ok")``.

Variants (all in one process, interleaved batch by batch in a shuffled order):
  bare           the Starlette app alone
  noop           behind a no-op pure ASGI middleware (the floor of any extra layer)
  regoguard      RegoGuardMiddleware, L1 hit (a small set of scopes repeated, cache warmed)
                 and L1 miss (a new user id per request: every request evaluates; cache on)
  regorus        a pure ASGI middleware doing what users do today: build the input dict in
                 Python from the scope and evaluate it with the regorus Python binding
  regorus+TTL    the same behind cachetools.TTLCache(maxsize=10_000, ttl=60) keyed by
                 json.dumps(input, sort_keys=True), hit and miss
The primary table uses allowed requests only, so the app body runs in every variant; the
second table (skip with --no-denied) times denied requests, which the guards answer 403
without calling the app. "Added" is the paired difference with the bare app on the same
requests, batch by batch, in the same round. A last group splits the L1-hit overhead between
Rust and the middleware's Python: the middleware with its ``authz._check_scope`` call replaced
by a stub returning a fixed Decision, and ``_check_scope`` alone in a plain loop.

Timing: ``time.perf_counter_ns`` around batches (per-request mean of each batch -> p50/p99
over batches), then requests timed one by one (-> per-request p50/p99; each includes two
timer calls, in every variant). ``gc`` is disabled while timing. Medians over rounds. The
machine is a shared 2-core box: read the added and relative columns, not absolute times
across runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from harness import pct

# Added µs per request over the bare app, p50 (the ASGI issue). Reported, never asserted.
TARGETS_ADDED_US = {"rg_hit": 1.5, "rg_miss": 6.0}

# Where the (already authenticated) user sits in the scope, as an auth layer in front would
# leave it; every guard reads it through the same identity callable.
USER_KEY = "bench.user"

_HEADERS = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"python-httpx/0.28.1"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MTcifQ.c2lnbmF0dXJl"),
    (b"x-request-id", b"4bf92f3577b34da6a3ce929d0e0e4736"),
]
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def identity(scope: dict[str, Any]) -> Any:
    """``identity=`` for every guard: the user dict ``{"id", "roles"}`` put in the scope."""
    return scope[USER_KEY]


async def receive() -> dict[str, Any]:
    return _REQUEST


async def send(message: dict[str, Any]) -> None:
    return None


# --------------------------------------------------------------------------- the apps


def build_app():
    """The bare app: realistic routes, each answering a small ``PlainTextResponse``."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request):
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/health", ok, methods=["GET"]),
            Route("/api/v1/projects", ok, methods=["GET", "POST"]),
            Route("/api/v1/projects/{id}", ok, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/public/{path:path}", ok, methods=["GET"]),
            Route("/admin/users", ok, methods=["GET"]),
        ]
    )


class NoopMiddleware:
    """A pure ASGI middleware that does nothing: the cost of one more layer."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def python_input(scope, user) -> dict[str, Any]:
    """The document RegoGuardMiddleware builds in Rust (no include_headers), built in Python."""
    path = scope["path"]
    qs = scope.get("query_string", b"")
    return {
        "header_values": {},
        "headers": {},
        "method": scope["method"],
        "path": path,
        "path_segments": [s for s in path.split("/") if s],
        "query": parse_qs(qs.decode("latin-1"), keep_blank_values=True) if qs else {},
        "user": user,
    }


async def _deny(send, result) -> None:
    body = json.dumps({"detail": result.get("reason") or "Forbidden"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RegorusMiddleware:
    """What users write today: input dict in Python, the regorus binding per request."""

    def __init__(self, app, engine, identity) -> None:
        self.app = app
        self.identity = identity
        self.set_input = engine.set_input
        self.eval_rule = engine.eval_rule

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.set_input(python_input(scope, self.identity(scope)))
        result = self.eval_rule(C.ENTRYPOINT)
        if result["allow"]:
            await self.app(scope, receive, send)
        else:
            await _deny(send, result)


class RegorusTTLMiddleware(RegorusMiddleware):
    """The same behind a cachetools cache keyed by the JSON of the input."""

    def __init__(self, app, engine, identity, cache) -> None:
        super().__init__(app, engine, identity)
        self.cache = cache

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        inp = python_input(scope, self.identity(scope))
        key = json.dumps(inp, sort_keys=True)
        try:
            result = self.cache[key]
        except KeyError:
            self.set_input(inp)
            result = self.eval_rule(C.ENTRYPOINT)
            self.cache[key] = result
        if result["allow"]:
            await self.app(scope, receive, send)
        else:
            await _deny(send, result)


# --------------------------------------------------------------------------- requests

# (method, path, query string, user id, roles)
Shape = tuple[str, str, str, str, tuple[str, ...]]


def candidate_shapes(fx) -> list[Shape]:
    """The decision bench's 16 shapes plus two with a query string or another route."""
    shapes: list[Shape] = [(m, p, "", u, tuple(r)) for m, p, u, r in C.request_shapes(fx)]
    shapes += [
        ("GET", "/public/assets/app.js", "v=3&lang=en", "u-outsider", ("user",)),
        ("GET", "/api/v1/projects", "page=2", "u-admin", ("admin",)),
    ]
    return shapes


def make_scope(shape: Shape, user_id: str | None = None) -> dict[str, Any]:
    """A scope as a server hands it over; ``path`` and the user dict are fresh objects."""
    method, path, query, uid, roles = shape
    fresh_path = path[:1] + path[1:]  # a new str: its hash is not cached, as in a server
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("10.0.0.2", 8000),
        "client": ("10.0.0.9", 51234),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": fresh_path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": _HEADERS,
        USER_KEY: {"id": uid if user_id is None else user_id, "roles": list(roles)},
    }


class RequestSet:
    """Hands out batches of scopes: a fixed set repeated (hit) or a new user id each (miss)."""

    _counter = 0  # shared by every miss set: no user id is ever reused in a run

    def __init__(self, name: str, shapes: list[Shape], unique: bool) -> None:
        self.name, self.shapes, self.unique = name, shapes, unique

    def batch(self, n: int) -> list[dict[str, Any]]:
        k = len(self.shapes)
        if not self.unique:
            return [make_scope(self.shapes[i % k]) for i in range(n)]
        start = RequestSet._counter
        RequestSet._counter += n
        return [make_scope(self.shapes[i % k], f"u-miss-{start + i}") for i in range(n)]


# --------------------------------------------------------------------------- timing
# ASGI twins of harness.time_batch/time_singles: the app is awaited as ``app(scope, receive,
# send)`` directly, so no wrapper call sits inside the timed region.


async def time_batch(app, scopes, pc=time.perf_counter_ns) -> int:
    t0 = pc()
    for s in scopes:
        await app(s, receive, send)
    return pc() - t0


async def time_singles(app, scopes, out: list[int], pc=time.perf_counter_ns) -> None:
    append = out.append
    for s in scopes:
        t0 = pc()
        await app(s, receive, send)
        t1 = pc()
        append(t1 - t0)


@dataclass
class Variant:
    key: str
    label: str
    group: str  # "allowed" | "denied" | "split"
    requests: RequestSet
    timer: Callable[[list[Any]], Awaitable[int]]  # a batch -> ns
    app: Any = None  # None for the split pieces (not ASGI apps)
    ref: str | None = None  # the bare variant on the same requests
    expect: int = 200  # the status every request of the set gets
    prep: Callable[[list[Any]], list[Any]] | None = None  # batch of scopes -> loop items
    batch_ns: list[list[float]] = field(default_factory=list)  # per round, per batch
    singles: list[dict[str, float]] = field(default_factory=list)  # per round


def asgi_variant(key, label, group, app, requests, ref, expect=200) -> Variant:
    return Variant(
        key,
        label,
        group,
        requests,
        lambda batch: time_batch(app, batch),
        app=app,
        ref=ref,
        expect=expect,
    )


def split_variants(authz, spec, requests: RequestSet, stubbed_guard, ref: str) -> list[Variant]:
    """The L1 hit taken apart: the middleware with its Rust call replaced by a stub (what is
    left is its Python), and the Rust call alone in a plain loop (minus the empty loop)."""

    def prep(scopes):
        pairs = [(s, identity(s)) for s in scopes]
        for s, u in pairs:  # every one an L1 hit before timing
            authz._check_scope(s, spec, u)
        return pairs

    def loop_check(items, pc=time.perf_counter_ns, check=authz._check_scope):
        t0 = pc()
        for s, u in items:
            check(s, spec, u)
        return pc() - t0

    def loop_empty(items, pc=time.perf_counter_ns):
        t0 = pc()
        for _s, _u in items:
            pass
        return pc() - t0

    def wrap(fn):
        async def timer(items):
            return fn(items)

        return timer

    return [
        asgi_variant(
            "x_stub",
            "RegoGuardMiddleware with `_check_scope` replaced by a stub returning a fixed Decision",
            "split",
            stubbed_guard,
            requests,
            ref,
        ),
        Variant(
            "x_check",
            "authz._check_scope(scope, spec, user), L1 hit, plain loop",
            "split",
            requests,
            wrap(loop_check),
            prep=prep,
        ),
        Variant(
            "x_empty",
            "empty loop (subtracted from the one above)",
            "split",
            requests,
            wrap(loop_empty),
            prep=prep,
        ),
    ]


# --------------------------------------------------------------------------- setup


def parse_args(argv=None):
    ap = C.bench_arg_parser(__doc__, "requests")
    ap.add_argument("--no-denied", action="store_true", help="skip the denied-request table")
    full = {"rounds": 5, "batches": 100, "batch_size": 1000, "singles": 10_000, "warmup": 3}
    quick = {"rounds": 2, "batches": 8, "batch_size": 500, "singles": 2_000, "warmup": 1}
    return C.apply_mode(ap.parse_args(argv), full, quick)


async def response_of(app, scope) -> tuple[int, bytes]:
    messages: list[dict[str, Any]] = []

    async def record(message):
        messages.append(message)

    await app(scope, receive, record)
    return messages[0]["status"], b"".join(m.get("body", b"") for m in messages[1:])


async def classify(fx, rg, authz, bare) -> dict[str, list[Shape]]:
    """Sort the candidate shapes by decision (as given, and with a user id never seen before)
    and keep those the bare app answers 200, so every variant runs the app's route."""
    sets: dict[str, list[Shape]] = {
        "allow_hit": [],
        "allow_miss": [],
        "deny_hit": [],
        "deny_miss": [],
    }
    seen_fresh: set[tuple[Any, ...]] = set()  # with a new user id, shapes differing only
    for shape in candidate_shapes(fx):  # in the user id are the same request
        status, _ = await response_of(bare, make_scope(shape))
        if status != 200:
            continue

        def decide(uid, shape=shape):
            scope = make_scope(shape, uid)
            return authz.check(rg.build_input(scope, identity=identity)).allow

        as_given = decide(None)
        fresh = {decide("u-probe-1"), decide("u-probe-2")}
        sets["allow_hit" if as_given else "deny_hit"].append(shape)
        method, path, query, _uid, roles = shape
        if len(fresh) == 1 and (method, path, query, roles) not in seen_fresh:
            seen_fresh.add((method, path, query, roles))
            sets["allow_miss" if fresh.pop() else "deny_miss"].append(shape)
    return sets


def describe(shape: Shape, unique: bool) -> str:
    method, path, query, uid, roles = shape
    who = "a new user id" if unique else uid
    return f"`{method} {path}{'?' + query if query else ''}` as {who} {list(roles)}"


def build_variants(args, fx, rg, binding, bare, sets) -> tuple[list[Variant], dict[str, Any]]:
    cfg = rg.CacheConfig(max_entries=args.max_entries, ttl_seconds=60.0)
    policies = [str(p) for p in fx.rego_files]
    authorizers = {
        name: rg.Authorizer(
            policies=policies, entrypoint=C.ENTRYPOINT, data=str(fx.data_path), cache=cfg
        )
        for name in ("hit", "miss")
    }
    reqs = {
        "allow_hit": RequestSet("allowed, hit set", sets["allow_hit"], unique=False),
        "allow_miss": RequestSet("allowed, new user id each", sets["allow_miss"], unique=True),
        "deny_hit": RequestSet("denied, hit set", sets["deny_hit"], unique=False),
        "deny_miss": RequestSet("denied, new user id each", sets["deny_miss"], unique=True),
    }
    guard = lambda which: rg.RegoGuardMiddleware(
        bare, authorizer=authorizers[which], identity=identity
    )
    ttl_caches: dict[str, Any] = {}
    if binding is not None:
        from cachetools import TTLCache

        ttl_caches = {w: TTLCache(maxsize=args.max_entries, ttl=60) for w in ("hit", "miss")}
        short = f"{binding.dist} {binding.version}"
    groups = [("allowed", "allow", 200)]
    if not args.no_denied:
        groups.append(("denied", "deny", 403))
    vs: list[Variant] = []
    for group, prefix, status in groups:
        p = "" if group == "allowed" else "d_"
        for scen in ("hit", "miss"):
            rs = reqs[f"{prefix}_{scen}"]
            ref = f"{p}bare_{scen}"
            vs.append(asgi_variant(ref, "bare Starlette app", group, bare, rs, None))
            if group == "allowed" and scen == "hit":
                vs.append(
                    asgi_variant(
                        "noop", "+ no-op pure ASGI middleware", group, NoopMiddleware(bare), rs, ref
                    )
                )
            cache_word = (
                "L1 hit" if scen == "hit" else "L1 miss (cache on, every request evaluates)"
            )
            vs.append(
                asgi_variant(
                    f"{p}rg_{scen}",
                    f"+ RegoGuardMiddleware, {cache_word}",
                    group,
                    guard(scen),
                    rs,
                    ref,
                    status,
                )
            )
            if binding is None:
                continue
            vs.append(
                asgi_variant(
                    f"{p}rb_{scen}",
                    f"+ Python-built input, regorus binding ({short}) per request, no cache",
                    group,
                    RegorusMiddleware(bare, binding.engine(fx), identity),
                    rs,
                    ref,
                    status,
                )
            )
            vs.append(
                asgi_variant(
                    f"{p}rbttl_{scen}",
                    f"+ same + cachetools.TTLCache({args.max_entries}, 60), {scen}",
                    group,
                    RegorusTTLMiddleware(bare, binding.engine(fx), identity, ttl_caches[scen]),
                    rs,
                    ref,
                    status,
                )
            )
    # The split pass the very RequestSpec the middleware's hot path passes, and stub the bound
    # method the middleware keeps (``self._check``) on an instance of their own.
    stubbed = guard("hit")
    allowed = authorizers["hit"].check(
        {"method": "GET", "path": "/health", "path_segments": ["health"], "user": None}
    )
    if not allowed.allow:
        sys.exit("the realistic policy no longer allows GET /health: fix the split stub")
    stubbed._check = lambda scope, spec, user: allowed
    vs += split_variants(authorizers["hit"], stubbed._spec, reqs["allow_hit"], stubbed, "bare_hit")
    return vs, {"authorizers": authorizers, "requests": reqs, "ttl_caches": ttl_caches}


async def validate(rg, variants, binding, fx, authz_eval, sets) -> list[str]:
    """Every variant answers every request of its set as expected; the Python-built input is
    the document regoguard builds; regoguard decides as the binding does."""
    problems: list[str] = []
    eng = binding.engine(fx) if binding is not None else None
    for shapes in sets.values():
        for shape in shapes:
            for uid in (None, "u-validate"):
                scope = make_scope(shape, uid)
                doc = rg.build_input(scope, identity=identity)
                mine = python_input(scope, identity(scope))
                if doc != mine:
                    problems.append(f"input differs for {describe(shape, False)}: {doc} vs {mine}")
                if eng is None:
                    continue
                d = authz_eval.check(doc)
                eng.set_input(doc)
                want = eng.eval_rule(C.ENTRYPOINT)
                if d.result != want:
                    problems.append(
                        f"{describe(shape, False)}: regoguard {d.result!r}, binding {want!r}"
                    )
    for v in variants:
        if v.app is None:
            continue
        n = len(v.requests.shapes)
        for scope in v.requests.batch(2 * n):
            status, body = await response_of(v.app, scope)
            if status != v.expect:
                problems.append(f"{v.key}: {scope['method']} {scope['path']} got {status} {body!r}")
            elif status == 200 and body != b"ok":
                problems.append(f"{v.key}: body {body!r}")
    return problems


# --------------------------------------------------------------------------- run


def items_for(v: Variant, n: int) -> list[Any]:
    batch = v.requests.batch(n)
    return v.prep(batch) if v.prep is not None else batch


async def run_round(variants: list[Variant], args, rnd: int, authorizers) -> dict[str, Any]:
    rng = random.Random(rnd)
    bs = args.batch_size
    gc.collect()
    gc.disable()
    try:
        for v in variants:  # warm-up: fills the hit caches, settles the interpreter
            for _ in range(args.warmup):
                await v.timer(items_for(v, bs))
        before = {k: C.numeric_stats(a.stats()) for k, a in authorizers.items()}
        batches: dict[str, list[float]] = {v.key: [] for v in variants}
        for b in range(args.batches):
            order = variants[:]
            rng.shuffle(order)
            for v in order:
                items = items_for(v, bs)
                batches[v.key].append(await v.timer(items) / bs)
            if b % 10 == 9:
                gc.collect()  # outside the timed region
        asgi = [v for v in variants if v.app is not None and v.group != "split"]
        singles: dict[str, list[int]] = {v.key: [] for v in asgi}
        chunk = min(1000, args.singles)
        for c in range(math.ceil(args.singles / chunk)):
            order = asgi[:]
            rng.shuffle(order)
            for v in order:
                await time_singles(v.app, v.requests.batch(chunk), singles[v.key])
            gc.collect()
        after = {k: C.numeric_stats(a.stats()) for k, a in authorizers.items()}
    finally:
        gc.enable()
    for v in variants:
        v.batch_ns.append(batches[v.key])
        if v.key in singles:
            s = sorted(singles[v.key])
            v.singles.append({"p50_ns": pct(s, 50), "p99_ns": pct(s, 99), "p999_ns": pct(s, 99.9)})
    return {
        k: {s: after[k][s] - before[k].get(s, 0) for s in ("l1_hits", "l1_misses") if s in after[k]}
        for k in authorizers
    }


# --------------------------------------------------------------------------- report


def paired(a: list[float], b: list[float]) -> float:
    """Median over batches of a - b: the two ran back to back in the same batch cycle."""
    return statistics.median(x - y for x, y in zip(a, b))


def summarize(variants: list[Variant]) -> dict[str, dict[str, float]]:
    """Median over rounds of every statistic; differences and ratios taken within a round."""
    by = {v.key: v for v in variants}
    med = statistics.median
    out: dict[str, dict[str, float]] = {}
    for v in variants:
        rounds = range(len(v.batch_ns))
        srt = [sorted(x) for x in v.batch_ns]
        row = {
            "batch_p50_ns": med(pct(s, 50) for s in srt),
            "batch_p99_ns": med(pct(s, 99) for s in srt),
        }
        if v.singles:
            row["single_p50_ns"] = med(r["p50_ns"] for r in v.singles)
            row["single_p99_ns"] = med(r["p99_ns"] for r in v.singles)
            row["single_p999_ns"] = med(r["p999_ns"] for r in v.singles)
        if v.ref is not None:
            ref = by[v.ref]
            row["added_p50_ns"] = med(paired(v.batch_ns[r], ref.batch_ns[r]) for r in rounds)
            if v.singles:
                row["added_single_p50_ns"] = med(
                    v.singles[r]["p50_ns"] - ref.singles[r]["p50_ns"] for r in rounds
                )
                row["added_single_p99_ns"] = med(
                    v.singles[r]["p99_ns"] - ref.singles[r]["p99_ns"] for r in rounds
                )
            row["x_bare_p50"] = med(
                pct(sorted(v.batch_ns[r]), 50) / pct(sorted(ref.batch_ns[r]), 50) for r in rounds
            )
        out[v.key] = row
    return out


def split(variants: list[Variant]) -> dict[str, float] | None:
    """The L1-hit overhead cut into parts, each a paired median within a round, then the
    median over rounds (so the parts need not add up exactly).

    The Rust call in context is the middleware minus the same middleware with that call
    stubbed out; the same call alone in a hot loop is shown beside it (it is cheaper there:
    nothing else evicts its code and data between calls).
    """
    by = {v.key: v for v in variants}
    need = ("rg_hit", "bare_hit", "noop", "x_stub", "x_check", "x_empty")
    if any(k not in by for k in need):
        return None
    per_round = []
    for r in range(len(by["rg_hit"].batch_ns)):
        b = lambda k, r=r: by[k].batch_ns[r]
        total = paired(b("rg_hit"), b("bare_hit"))
        python = paired(b("x_stub"), b("bare_hit"))
        layer = paired(b("noop"), b("bare_hit"))
        per_round.append(
            {
                "total": total,
                "rust_in_context": paired(b("rg_hit"), b("x_stub")),
                "rust_hot_loop": paired(b("x_check"), b("x_empty")),
                "python": python,
                "python_asgi_layer": layer,
                "python_own_code": python - layer,
            }
        )
    return {k: statistics.median(p[k] for p in per_round) for k in per_round[0]}


def render(meta, variants, summary, parts, sets_text, problems) -> str:
    us = lambda ns: f"{ns / 1000:.2f}"
    sus = lambda ns: f"{ns / 1000:+.2f}"
    lines = [
        (
            f"Date: {meta['date']} · commit: {meta['git_rev'] or 'none yet'} · regoguard "
            f"{meta['regoguard_version']} · Starlette {meta['starlette']} · Python "
            f"{meta['machine']['python']} · {meta['machine']['cpus']} CPUs "
            f"({meta['machine']['cpu_model']}) · load avg at start {meta['machine']['loadavg_1_5_15']}"
            f", at end {meta['loadavg_end']}"
        ),
        f"Command: `{meta['command']}` · extension: {meta['extension']}",
    ]
    load = meta["other_processes_cores_per_round"]
    busy = max(load)
    lines.append(
        "CPU used by other processes during the rounds (cores): "
        + ", ".join(f"{x:.2f}" for x in load)
        + (
            f" · WARNING: the machine was busy (up to {busy:.2f} cores): a disturbed run"
            if busy > 0.25
            else " (quiet)"
        )
    )
    c = meta["config"]
    lines.append(f"Comparison binding: {meta['binding']}")
    lines.append(
        f"Rounds: {c['rounds']} (median over rounds) · {c['batches']} batches x "
        f"{c['batch_size']} requests per variant and round, interleaved · {c['singles']} "
        "requests timed one by one per variant and round"
    )
    lines.append("")
    lines += sets_text
    head = (
        "| variant | requests | p50 µs/req (batch mean) | p99 µs/req (batch mean) | "
        "per-request p50 µs | per-request p99 µs | added p50 µs | added per-request p99 µs "
        "| × bare (p50) |"
    )
    for group, title in (
        ("allowed", "Allowed requests (every variant runs the app's endpoint):"),
        (
            "denied",
            "Denied requests (the guards answer 403 and do not call the app; bare answers 200):",
        ),
    ):
        rows = [v for v in variants if v.group == group]
        if not rows:
            continue
        lines += ["", title, "", head, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v in rows:
            s = summary[v.key]
            reqs = "new user id each" if v.requests.unique else f"{len(v.requests.shapes)} repeated"
            added = (
                (sus(s["added_p50_ns"]), sus(s["added_single_p99_ns"]), f"{s['x_bare_p50']:.2f}")
                if v.ref
                else ("—", "—", "1.00")
            )
            lines.append(
                f"| {v.label} | {reqs} | {us(s['batch_p50_ns'])} | {us(s['batch_p99_ns'])} | "
                f"{us(s['single_p50_ns'])} | {us(s['single_p99_ns'])} | {added[0]} | {added[1]} "
                f"| {added[2]} |"
            )
    lines += [
        "",
        (
            "Added p50 = median over batches of (variant − bare app) per-request means, paired "
            "batch by batch; added per-request p99 = p99 − bare p99 of requests timed one by one "
            "(each includes two `perf_counter_ns` calls, in every variant)."
        ),
        "",
        "| target (ASGI issue) | measured added p50 | verdict |",
        "|---|---:|---|",
    ]
    for k, tgt in TARGETS_ADDED_US.items():
        got = summary[k]["added_p50_ns"] / 1000
        lines.append(
            f"| RegoGuardMiddleware {'L1 hit' if k == 'rg_hit' else 'L1 miss'}: ≤ {tgt} µs over "
            f"the bare app | {got:.2f} µs | {'met' if got <= tgt else 'NOT met'} |"
        )
    if parts:
        t = parts["total"]
        share = lambda x: f"{100 * x / t:.0f}%" if t > 0 else "—"
        row = lambda text, key: f"| {text} | {us(parts[key])} | {share(parts[key])} |"
        lines += [
            "",
            (
                "Where the L1-hit overhead goes (allowed hit set; paired medians, then the median "
                "over rounds, so the parts need not add up exactly):"
            ),
            "",
            "| part | µs/request | share |",
            "|---|---:|---:|",
            row("RegoGuardMiddleware, L1 hit, added over the bare app", "total"),
            row(
                "Rust: `authz._check_scope(scope, spec, user)` in the middleware (the middleware "
                "minus the same middleware with that call stubbed)",
                "rust_in_context",
            ),
            row("· for reference, the same call alone in a hot loop", "rust_hot_loop"),
            row(
                "Python: the middleware with the call stubbed (a Python function returning a "
                "fixed Decision), over the bare app",
                "python",
            ),
            row("· one pure ASGI layer (no-op middleware over bare)", "python_asgi_layer"),
            row(
                "· `RegoGuardMiddleware.__call__`'s own code over that layer (the identity "
                "callable, the stub call, `scope['regoguard']`, `Decision.allow`, the checks)",
                "python_own_code",
            ),
        ]
    lines.append("")
    for name, d in meta["l1_stats_delta_per_round"].items():
        lines.append(f"- {name} authorizer, L1 hits/misses during each round's timing: {d}")
    if problems:
        lines.append(f"- WARNING: {len(problems)} validation problems (see stderr / JSON)")
    return "\n".join(lines)


async def amain(args) -> int:
    fx = C.load_fixture(args.policy_dir)
    try:
        import regoguard as rg
        import starlette
    except ImportError as e:
        sys.exit(
            f"not importable ({e}): install starlette and build the extension (maturin develop)"
        )
    binding, binding_note = C.binding_or_note(args.no_binding)
    bare = build_app()
    authz_eval = rg.Authorizer(
        policies=[str(p) for p in fx.rego_files],
        entrypoint=C.ENTRYPOINT,
        data=str(fx.data_path),
        cache=None,
    )
    sets = await classify(fx, rg, authz_eval, bare)
    for k, v in sets.items():
        if not v and not (k.startswith("deny") and args.no_denied):
            sys.exit(f"no candidate request falls in the {k} set with this policy and data")
    variants, ctx = build_variants(args, fx, rg, binding, bare, sets)
    problems = await validate(rg, variants, binding, fx, authz_eval, sets)
    for p in problems[:20]:
        print("WARNING: " + p, file=sys.stderr)

    sets_text = []
    for key, rs in ctx["requests"].items():
        if key.startswith("deny") and args.no_denied:
            continue
        shown = "; ".join(describe(s, rs.unique) for s in rs.shapes)
        sets_text.append(f"- {rs.name} ({len(rs.shapes)} shapes, cycled): {shown}")

    mach = C.machine()
    rev, ext = C.git_rev(), C.extension_info()
    n_asgi = sum(v.app is not None for v in variants)
    print(
        f"# regoguard in-process ASGI benchmark: {n_asgi} ASGI variants + "
        f"{len(variants) - n_asgi} split loops x {args.rounds} rounds ({args.batches} batches x "
        f"{args.batch_size} requests + {args.singles} single requests each)",
        file=sys.stderr,
    )
    t_start = time.time()
    other_load: list[float] = []
    l1_delta: dict[str, list[dict[str, float]]] = {k: [] for k in ctx["authorizers"]}
    for rnd in range(args.rounds):
        load = C.OtherLoad()
        delta = await run_round(variants, args, rnd, ctx["authorizers"])
        other_load.append(load.cores())
        for k, d in delta.items():
            l1_delta[k].append({s: int(x) for s, x in d.items()})
        C.round_done(rnd, args.rounds, t_start, other_load[-1])

    summary = summarize(variants)
    parts = split(variants)
    meta = {
        "date": C.now_utc(),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "git_rev": rev,
        "regoguard_version": C.regoguard_version(rg),
        "starlette": starlette.__version__,
        "extension": ext,
        "binding": binding_note,
        "machine": mach,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "policy": [
            str(p.relative_to(C.REPO)) if p.is_relative_to(C.REPO) else str(p)
            for p in (*fx.rego_files, fx.data_path)
        ],
        "entrypoint": C.ENTRYPOINT,
        "config": {
            k: getattr(args, k)
            for k in ("rounds", "batches", "batch_size", "singles", "warmup", "max_entries", "cpu")
        },
        "request_sets": sets_text,
        "validation_problems": problems,
        "other_processes_cores_per_round": other_load,
        "l1_stats_delta_per_round": l1_delta,
    }
    report = render(meta, variants, summary, parts, sets_text, problems)
    print(report)
    if args.json:
        out = {
            "meta": meta,
            "variants": {
                v.key: {
                    "label": v.label,
                    "group": v.group,
                    "requests": v.requests.name,
                    "ref": v.ref,
                    "median": summary[v.key],
                    "singles_per_round": v.singles,
                    "batch_p50_ns_per_round": [pct(sorted(b), 50) for b in v.batch_ns],
                }
                for v in variants
            },
            "hit_overhead_split_ns": parts,
            "targets_added_us": TARGETS_ADDED_US,
            "markdown": report,
        }
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nJSON written to {args.json}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
