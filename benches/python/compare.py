#!/usr/bin/env python3
"""regoguard against what services do today: one command, same machine, same run.

    .venv/bin/python benches/python/compare.py            # full: 5 rounds, ~7 minutes
    .venv/bin/python benches/python/compare.py --quick    # smoke run, under 2 minutes

One seeded workload for every variant: 2,000 users (every 100th an admin), 200 projects,
Zipf (s = 1.1) over users and over projects, each user a member of 1-3 projects; 55% project
GETs (90% of them of the user's own projects), public pages, health, project lists, writes
and admin pages (see ``compare_apps.MIX``): about two thirds allowed. The policy is
tests/policies/good/realistic/authz.rego; its data document is generated from the same seed
for the 2,000 users (written to benches/results/tmp/compare_data.json).

Variants (``compare_apps.VARIANTS``): 1 bare Starlette app; 2 a no-op pure ASGI middleware;
3 a middleware evaluating with the regorus Python binding per request (PyPI
gordon-to-regorus, see benches/README.md); 4 the same behind cachetools.TTLCache(10000, 60);
5 a middleware POSTing the input with httpx.AsyncClient to a stand-in PDP (OPA's REST shape,
served by uvicorn, evaluating with the regorus binding: **not OPA**); 6 RegoGuardMiddleware
(cache 10,000 entries); 7 RegoGuardMiddleware with cache=None.

Levels:
  in-process  every variant's ASGI app called directly (bench_asgi.py's way), the same
              stream segment per round, interleaved in chunks of 500 in a shuffled order;
              each request timed alone. Added = p50(variant) - p50(bare) in the round.
              The regoguard hit path: the requests RegoGuardMiddleware allowed from L1
              (``Decision.source``) against the bare app on the same requests.
  uvicorn     each variant under uvicorn (1 worker, 127.0.0.1), driven by wrk with a Lua
              script that sends the seeded requests in order: a throughput run (-c 16)
              for req/s and a latency run (-c 1) for p50/p99, per round and variant, in a
              shuffled order. Only 127.0.0.1; every run bounded in time.
Hit rates: the key stream of 1,000,000 requests (200,000 in --quick) replayed through
regoguard's Authorizer.check (CacheConfig(10000, 60)) and a cachetools.TTLCache(10000, 60)
keyed by json.dumps(input, sort_keys=True).
Memory: bench_memory.py run as a child (1,000,000 entries; 100,000 in --quick).

Writes benches/results/compare.md, compare.json and compare_*.png (--out to change).
Medians over rounds, with min-max; ratios within a round. The box is a shared 2-core
machine: read the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C
import bench_asgi as A
import compare_apps as W
from harness import ZIPF_S, free_port, pct

HOST = "127.0.0.1"
RESULTS = C.REPO / "benches" / "results"
TARGETS = {
    "hit_added_us": 1.5,  # regoguard hit path, in-process, p50 over bare
    "rps_vs_bare": 0.95,  # uvicorn req/s of regoguard / bare
    "rps_vs_pdp": 10.0,  # uvicorn req/s of regoguard / stand-in PDP
    "bytes_per_decision": 150.0,
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="short rounds: under 2 minutes")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--segment", type=int, help="in-process: requests per variant and round")
    ap.add_argument("--seconds", type=int, help="uvicorn: seconds per wrk run (whole)")
    ap.add_argument("--connections", type=int, default=16, help="wrk -c of the throughput run")
    ap.add_argument("--replay", type=int, help="requests in the hit-rate replay")
    ap.add_argument("--memory", choices=["full", "quick", "skip"], help="bench_memory.py mode")
    ap.add_argument("--skip-uvicorn", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for .md/.json/.png")
    ap.add_argument(
        "--from-json", type=Path, help="measure nothing: re-render the report and plots of a run"
    )
    args = ap.parse_args(argv)
    preset = (
        {"rounds": 2, "segment": 3000, "seconds": 1, "replay": 200_000, "memory": "quick"}
        if args.quick
        else {"rounds": 5, "segment": 20_000, "seconds": 4.0, "replay": 1_000_000, "memory": "full"}
    )
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


# --------------------------------------------------------------------------- servers


@contextmanager
def uvicorn(factory: str, env: dict[str, str], logdir: Path):
    """One uvicorn worker on 127.0.0.1 serving ``compare_apps:<factory>``; yields its URL."""
    import httpx

    port = free_port()
    logf = open(logdir / f"{factory}-{env.get('COMPARE_VARIANT', 'server')}.log", "wb")  # noqa: SIM115
    cmd = [
        *(sys.executable, "-m", "uvicorn", f"compare_apps:{factory}", "--factory"),
        *("--app-dir", str(HERE), "--host", HOST, "--port", str(port), "--workers", "1"),
        *("--no-access-log", "--log-level", "warning"),
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=logf, stderr=subprocess.STDOUT)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"uvicorn {factory} {env} exited; see {logf.name}")
                try:
                    client.get("/health", timeout=1.0, headers={"authorization": "Bearer u100"})
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"uvicorn {factory} not up after 60 s") from None
                    time.sleep(0.1)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        logf.close()


# --------------------------------------------------------------------------- in-process


async def in_process(args, data, stream, pdp_url) -> dict[str, Any]:
    """Per round and variant: p50/p99 of requests timed one by one, on the same segment."""
    apps = {k: W.build(k, data, pdp_url) for k in W.VARIANTS}
    seg = args.segment
    pdp_every = 10  # the PDP variant times every 10th request of the segment (it is ~100x slower)
    warm = stream[: min(len(stream), 20_000)]
    # Validate: the guards agree on every status of the first 2,000 requests.
    statuses: dict[str, list[int]] = {}
    for k, app in apps.items():
        statuses[k] = [(await A.response_of(app, W.make_scope(*r)))[0] for r in stream[:2000]]
    problems = [
        f"{k}: {sum(a != b for a, b in zip(s, statuses['binding']))} statuses differ from variant 3"
        for k, s in statuses.items()
        if k not in ("bare", "noop") and s != statuses["binding"]
    ]
    allow_rate = statuses["binding"].count(200) / len(statuses["binding"])
    for k, app in apps.items():  # warm every cache and code path alike
        for r in warm[:: pdp_every if k == "pdp" else 1]:
            await app(W.make_scope(*r), A.receive, A.send)
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in apps}
    hit_added: list[float] = []
    hit_share: list[float] = []
    t0 = time.time()
    for rnd in range(args.rounds):
        rng = random.Random(rnd)
        base = len(warm) + rnd * seg
        part = stream[base : base + seg]
        lat: dict[str, list[int]] = {k: [0] * len(part) for k in apps}
        l1_allow: list[int] = []
        gc.collect()
        gc.disable()
        load = C.OtherLoad()
        try:
            for c in range(0, len(part), 500):
                order = list(apps)
                rng.shuffle(order)
                for k in order:
                    app, out = apps[k], lat[k]
                    step = pdp_every if k == "pdp" else 1
                    for i in range(c, min(c + 500, len(part))):
                        if i % step:
                            continue
                        scope = W.make_scope(*part[i])
                        t = time.perf_counter_ns()
                        await app(scope, A.receive, A.send)
                        out[i] = time.perf_counter_ns() - t
                        if k == "regoguard":
                            d = scope.get("regoguard")
                            if d is not None and d.allow and d.source == "l1":
                                l1_allow.append(i)
        finally:
            gc.enable()
        for k in apps:
            xs = sorted(x for i, x in enumerate(lat[k]) if k != "pdp" or i % pdp_every == 0)
            rounds[k].append({"p50_ns": pct(xs, 50), "p99_ns": pct(xs, 99)})
        rg = sorted(lat["regoguard"][i] for i in l1_allow)
        bare = sorted(lat["bare"][i] for i in l1_allow)
        hit_added.append((pct(rg, 50) - pct(bare, 50)) / 1000)
        hit_share.append(len(l1_allow) / len(part))
        log(
            f"  in-process round {rnd + 1}/{args.rounds} ({time.time() - t0:.0f} s, "
            f"other processes {load.cores():.2f} cores)"
        )
    out: dict[str, Any] = {"variants": {}, "allow_rate": allow_rate, "problems": problems}
    for k, rs in rounds.items():
        bare = rounds["bare"]
        out["variants"][k] = {
            "p50_us": summary([r["p50_ns"] / 1000 for r in rs]),
            "p99_us": summary([r["p99_ns"] / 1000 for r in rs]),
            "added_p50_us": summary([(r["p50_ns"] - b["p50_ns"]) / 1000 for r, b in zip(rs, bare)]),
            "added_p99_us": summary([(r["p99_ns"] - b["p99_ns"]) / 1000 for r, b in zip(rs, bare)]),
            "x_bare_p50": summary([r["p50_ns"] / b["p50_ns"] for r, b in zip(rs, bare)]),
        }
    out["regoguard_hit_path"] = {
        "added_p50_us": summary(hit_added),
        "share_of_requests": summary(hit_share),
    }
    return out


# --------------------------------------------------------------------------- uvicorn + wrk

LUA = """
local reqs = {%s}
local i = 0
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, '
    .. '"errors_connect": %%d, "errors_read": %%d, "errors_write": %%d, '
    .. '"errors_status": %%d, "errors_timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
"""


def lua_script(stream, path: Path) -> None:
    def lua_str(b: bytes) -> str:
        return (
            '"' + b.decode().replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n") + '"'
        )

    path.write_text(LUA % ",\n".join(lua_str(W.raw_request(*r)) for r in stream))


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s"]
    p = subprocess.run(
        [*cmd, "-s", str(script), url],
        check=False,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    )
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            return r
    raise RuntimeError(f"wrk gave no result: {p.stdout}\n{p.stderr}")


def under_uvicorn(args, data_path: Path, stream, pdp_url, tmp: Path) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        log("wrk not found (apt-get install -y wrk): uvicorn level skipped")
        return {"skipped": "wrk not installed"}
    script = tmp / "compare.lua"
    lua_script(stream[:50_000], script)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in W.VARIANTS}
    with ExitStack() as stack:
        urls = {}
        for k in W.VARIANTS:
            env = {"COMPARE_VARIANT": k, "COMPARE_DATA": str(data_path)}
            if pdp_url:
                env["COMPARE_PDP_URL"] = pdp_url
            urls[k], _ = stack.enter_context(uvicorn("from_env", env, tmp))
        for k, url in urls.items():  # warm-up: a short run each, untimed
            wrk(url, script, args.connections, 1)
        t0 = time.time()
        for rnd in range(args.rounds):
            order = list(W.VARIANTS)
            random.Random(100 + rnd).shuffle(order)
            load = C.OtherLoad()
            for k in order:
                thr = wrk(urls[k], script, args.connections, args.seconds)
                lat = wrk(urls[k], script, 1, args.seconds)
                runs[k].append({"throughput": thr, "latency": lat})
            log(
                f"  uvicorn round {rnd + 1}/{args.rounds} ({time.time() - t0:.0f} s, other "
                f"processes, the servers and wrk included: {load.cores():.2f} cores)"
            )
    out: dict[str, Any] = {"variants": {}, "connections": args.connections}
    bare = runs["bare"]
    for k, rs in runs.items():
        out["variants"][k] = {
            "rps": summary([r["throughput"]["rps"] for r in rs]),
            "x_bare_rps": summary(
                [r["throughput"]["rps"] / b["throughput"]["rps"] for r, b in zip(rs, bare)]
            ),
            "p50_us": summary([r["latency"]["p50_us"] for r in rs]),
            "p99_us": summary([r["latency"]["p99_us"] for r in rs]),
            "added_p50_us": summary(
                [r["latency"]["p50_us"] - b["latency"]["p50_us"] for r, b in zip(rs, bare)]
            ),
            "loaded_p50_us": summary([r["throughput"]["p50_us"] for r in rs]),
            "socket_errors": sum(
                r[w][e]
                for r in rs
                for w in ("throughput", "latency")
                for e in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
            ),
            "runs": rs,
        }
    rg, pdp = runs["regoguard"], runs["pdp"]
    out["regoguard_vs_pdp_rps"] = summary(
        [a["throughput"]["rps"] / b["throughput"]["rps"] for a, b in zip(rg, pdp)]
    )
    return out


# --------------------------------------------------------------------------- hit rates


def hit_rates(args, data) -> dict[str, Any]:
    """The same key stream through regoguard's L1 and a cachetools.TTLCache of equal size."""
    from cachetools import TTLCache

    stream = W.workload(args.replay, data, seed=W.SEED + 7)
    inputs = (A.python_input(W.make_scope(*r), W.identity(W.make_scope(*r))) for r in stream)
    authz = W.authorizer(data, cache=True)
    ttl: TTLCache = TTLCache(W.CAPACITY, W.TTL)
    dumps = json.dumps
    distinct: set[str] = set()
    ttl_hits = 0
    t0 = time.time()
    s0 = C.numeric_stats(authz.stats())
    for inp in inputs:
        authz.check(inp)
        key = dumps(inp, sort_keys=True)
        distinct.add(key)
        if key in ttl:
            ttl_hits += 1
        else:
            ttl[key] = True
    s1 = C.numeric_stats(authz.stats())
    hits = s1.get("l1_hits", 0) - s0.get("l1_hits", 0)
    misses = s1.get("l1_misses", 0) - s0.get("l1_misses", 0)
    log(f"  hit-rate replay of {len(stream):,} requests: {time.time() - t0:.0f} s")
    return {
        "requests": len(stream),
        "distinct_keys": len(distinct),
        "capacity": W.CAPACITY,
        "regoguard": {"hits": hits, "misses": misses, "hit_rate": hits / (hits + misses)},
        "cachetools": {"hits": ttl_hits, "hit_rate": ttl_hits / len(stream)},
    }


def memory(args, tmp: Path) -> dict[str, Any]:
    if args.memory == "skip":
        return {"skipped": True}
    out = tmp / "memory.json"
    cmd = [sys.executable, str(HERE / "bench_memory.py"), "--json", str(out)]
    if args.memory == "quick":
        cmd.append("--quick")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=900)
    m = json.loads(out.read_text())
    rg = m["results"]["regoguard"]
    ct = m["results"].get("cachetools", {})
    return {
        "entries": m["meta"]["entries"],
        "command": "python benches/python/bench_memory.py"
        + (" --quick" if args.memory == "quick" else ""),
        "regoguard_bytes_per_entry": rg.get("bytes_per_entry"),
        "regoguard_bytes_per_entry_net": rg.get("bytes_per_entry_net"),
        "cachetools_bytes_per_entry": ct.get("bytes_per_entry"),
    }


# --------------------------------------------------------------------------- report


def fmt(s: dict[str, float] | None, f: str = "{:.1f}", signed: bool = False) -> str:
    if not s:
        return "—"
    g = (lambda x: ("+" if x >= 0 else "") + f.format(x)) if signed else f.format
    return f"{g(s['median'])} ({g(s['min'])}–{g(s['max'])})"


def verdicts(res: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, verdict, why) rows."""
    rows = []
    ip = res["in_process"]
    hit = ip["regoguard_hit_path"]["added_p50_us"]["median"]
    t = TARGETS["hit_added_us"]
    rows.append(
        (
            f"regoguard L1-hit path ≤ +{t} µs p50 over bare, in-process",
            f"{hit:+.2f} µs",
            "met" if hit <= t else f"NOT met (by {hit - t:.2f} µs)",
            (
                "the Rust call (~1 µs: key from the scope, BLAKE3, lookup, Decision) plus one ASGI "
                "layer and the middleware's Python (~0.5 µs), see bench_asgi.py's split; each "
                "request timed alone here (bench_asgi.py's batch means gave +1.5–2.0 µs)"
            ),
        )
    )
    uv = res.get("uvicorn", {})
    if "variants" in uv:
        x = uv["variants"]["regoguard"]["x_bare_rps"]["median"]
        t = TARGETS["rps_vs_bare"]
        noop = uv["variants"]["noop"]["x_bare_rps"]
        rows.append(
            (
                f"uvicorn req/s ≥ {t:.0%} of bare",
                f"{x:.1%}",
                "met" if x >= t else f"NOT met (by {100 * (t - x):.1f} points)",
                (
                    "a decision adds ~2–8 µs to ~120 µs of uvicorn + h11 per request, and denied "
                    "requests skip the app; on this box the no-op layer alone ranged "
                    f"{noop['min']:.0%}–{noop['max']:.0%} of bare over the rounds, so a few "
                    "points either side of the line are noise"
                ),
            )
        )
        x = uv["regoguard_vs_pdp_rps"]["median"]
        t = TARGETS["rps_vs_pdp"]
        rows.append(
            (
                f"uvicorn req/s ≥ {t:.0f}× the stand-in PDP's (not OPA)",
                f"{x:.1f}×",
                "met" if x >= t else f"NOT met (by {t - x:.1f}×)",
                (
                    "the PDP variant pays an HTTP round trip per request (client and PDP server on "
                    "the same 2 cores)"
                ),
            )
        )
    mem = res.get("memory", {})
    b = mem.get("regoguard_bytes_per_entry")
    if b is not None:
        t = TARGETS["bytes_per_decision"]
        rows.append(
            (
                f"memory ≤ {t:.0f} B per cached decision ({mem['entries']:,} entries)",
                f"{b:.1f} B (cachetools + binding: {mem.get('cachetools_bytes_per_entry') or 0:.0f} B)",
                "met" if b <= t else f"NOT met (by {b - t:.0f} B)",
                "32-byte BLAKE3 key + 16-byte value in quick_cache, outcomes shared",
            )
        )
    hr = res["hit_rates"]
    a, c = hr["regoguard"]["hit_rate"], hr["cachetools"]["hit_rate"]
    rows.append(
        (
            f"hit rate at {hr['capacity']:,} entries above cachetools.TTLCache's",
            f"{a:.2%} vs {c:.2%} ({hr['requests']:,} requests, {hr['distinct_keys']:,} distinct keys)",
            "met" if a > c else f"NOT met (by {100 * (c - a):.2f} points)",
            (
                "quick_cache's CLOCK-PRO-style eviction (frequency-aware: inputs seen once "
                "leave first) against TTLCache's LRU on a Zipf stream"
            ),
        )
    )
    return rows


def render(res: dict[str, Any]) -> str:
    m = res["meta"]
    ip, uv = res["in_process"], res.get("uvicorn", {})
    L = [
        "# regoguard against the alternatives (`benches/python/compare.py`)",
        "",
        (
            f"- Date: {m['date']} · commit: {m['git_rev']} · regoguard {m['regoguard']} · "
            f"Python {m['machine']['python']} · {m['machine']['cpus']} CPUs "
            f"({m['machine']['cpu_model']}) · load avg at start {m['machine']['loadavg_1_5_15']}, "
            f"at end {m['loadavg_end']}"
        ),
        f"- Command: `{m['command']}` · extension: {m['extension']}",
        f"- Workload: {m['workload']}",
        (
            f"- Allowed share of the stream: {ip['allow_rate']:.0%} (denied requests get a 403 "
            "from the guards without reaching the app; the bare app and the no-op layer answer "
            "200 to everything)"
        ),
        f"- Variant 3/4/5 binding: {m['binding']}",
        f"- Variant 5: {W.PDP_LABEL}.",
        (
            f"- Rounds: {m['rounds']}; every cell is the median over rounds (min–max); ratios "
            "and differences are taken within a round. Shared 2-core box: read ratios."
        ),
        "",
        (
            "| variant | uvicorn req/s | × bare req/s | uvicorn p50 µs (c=1) | uvicorn p99 µs (c=1) "
            "| uvicorn added p50 µs | in-process p50 µs | in-process p99 µs | in-process added p50 µs |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, label in W.VARIANTS.items():
        u = uv.get("variants", {}).get(k, {})
        i = ip["variants"][k]
        bare = k == "bare"
        L.append(
            f"| {label} | {fmt(u.get('rps'), '{:.0f}')} | {fmt(u.get('x_bare_rps'), '{:.2f}')} "
            f"| {fmt(u.get('p50_us'), '{:.0f}')} | {fmt(u.get('p99_us'), '{:.0f}')} "
            f"| {'—' if bare else fmt(u.get('added_p50_us'), '{:.0f}', True)} "
            f"| {fmt(i['p50_us'], '{:.2f}')} | {fmt(i['p99_us'], '{:.2f}')} "
            f"| {'—' if bare else fmt(i['added_p50_us'], '{:.2f}', True)} |"
        )
    hp = ip["regoguard_hit_path"]
    L += [
        "",
        (
            f"- RegoGuardMiddleware's L1-hit path (allowed, served from L1: "
            f"{fmt(hp['share_of_requests'], '{:.0%}')} of the stream), in-process, p50 over the "
            f"bare app on the same requests: {fmt(hp['added_p50_us'], '{:.2f}', True)} µs."
        ),
    ]
    if "variants" in uv:
        L.append(
            f"- uvicorn: 1 worker on 127.0.0.1, wrk -t1: req/s from -c{uv['connections']} runs "
            f"of {m['seconds']} s, p50/p99 from -c1 runs of {m['seconds']} s (wrk's latency, "
            f"µs resolution); socket errors in all runs: "
            + ", ".join(f"{k} {v['socket_errors']}" for k, v in uv["variants"].items())
        )
        L.append(
            f"- regoguard / stand-in PDP (not OPA) req/s, same round: "
            f"{fmt(uv['regoguard_vs_pdp_rps'], '{:.1f}')}×"
        )
    elif uv:
        L.append(f"- uvicorn level skipped: {uv.get('skipped')}")
    hr = res["hit_rates"]
    L += [
        "",
        (
            f"Hit rates, the same Zipf key stream ({hr['requests']:,} requests, "
            f"{hr['distinct_keys']:,} distinct inputs), capacity {hr['capacity']:,} each, TTL 60 s:"
        ),
        "",
        "| cache | hit rate |",
        "|---|---:|",
        f"| regoguard L1 (CacheConfig(max_entries=10000, ttl_seconds=60)) | {hr['regoguard']['hit_rate']:.2%} |",
        f"| cachetools.TTLCache(10000, 60) keyed by json.dumps(input, sort_keys=True) | {hr['cachetools']['hit_rate']:.2%} |",
    ]
    mem = res.get("memory", {})
    if mem.get("regoguard_bytes_per_entry") is not None:
        L += [
            "",
            (
                f"Memory (`{mem['command']}`, {mem['entries']:,} entries): regoguard "
                f"{mem['regoguard_bytes_per_entry']:.1f} B per cached decision; regorus binding + "
                f"TTLCache {mem.get('cachetools_bytes_per_entry') or float('nan'):.0f} B."
            ),
        ]
    L += ["", "| target | measured | verdict | why |", "|---|---|---|---|"]
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in verdicts(res)]
    if ip["problems"]:
        L += ["", "WARNING: " + "; ".join(ip["problems"])]
    return "\n".join(L) + "\n"


SHORT = {
    "bare": "1 bare Starlette",
    "noop": "2 no-op ASGI layer",
    "binding": "3 regorus binding",
    "binding_ttl": "4 binding + TTLCache",
    "pdp": "5 stand-in PDP (not OPA)",
    "regoguard": "6 regoguard",
    "regoguard_nocache": "7 regoguard, cache=None",
}


def plots(res: dict[str, Any], out: Path) -> list[str]:
    """Two small PNGs: added p50 latency per variant (both levels) and req/s (uvicorn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def color(k: str) -> str:
        if k.startswith("regoguard"):
            return "#2a8a2a"
        return "#888888" if k in ("bare", "noop") else "#c44444"

    def bars(ax, keys, vals, title, log=False, floor=0.1):
        med = [v["median"] for v in vals]
        drawn = [max(x, floor) if log else x for x in med]
        lo = [max(d - max(v["min"], floor if log else v["min"]), 0) for d, v in zip(drawn, vals)]
        hi = [max(max(v["max"], floor if log else v["max"]) - d, 0) for d, v in zip(drawn, vals)]
        ax.barh(range(len(keys)), drawn, xerr=[lo, hi], color=[color(k) for k in keys], capsize=2)
        ax.set_yticks(range(len(keys)), [SHORT[k] for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        if log:
            ax.set_xscale("log")
            ax.set_xlim(floor / 2, max(v["max"] for v in vals) * 8)
        else:
            ax.set_xlim(0, max(v["max"] for v in vals) * 1.25)
        for y, (d, v) in enumerate(zip(drawn, vals)):
            x = max(d, v["max"] if not log else max(v["max"], floor))
            txt = f"{v['median']:+,.1f}" if log else f"{v['median']:,.0f}"
            ax.text(x, y, " " + txt, va="center", fontsize=7)

    ip = res["in_process"]["variants"]
    uv = res.get("uvicorn", {}).get("variants")
    m = res["meta"]
    foot = f"median, bars min–max over {m['rounds']} rounds · {m['date']} · shared 2-core box"
    made = []
    guarded = [k for k in W.VARIANTS if k != "bare"]
    fig, axes = plt.subplots(1, 2 if uv else 1, figsize=(9.5 if uv else 5.5, 3.0), squeeze=False)
    bars(
        axes[0][0],
        guarded,
        [ip[k]["added_p50_us"] for k in guarded],
        "in-process ASGI: added p50 µs over bare",
        log=True,
    )
    if uv:
        bars(
            axes[0][1],
            guarded,
            [uv[k]["added_p50_us"] for k in guarded],
            "uvicorn + wrk -c1: added p50 µs over bare",
            log=True,
            floor=1.0,
        )
        axes[0][1].set_yticklabels([])
    fig.suptitle(
        "What each guard adds to a request (log scale; ≤ floor drawn at the floor)", fontsize=9
    )
    fig.text(0.99, 0.01, foot, ha="right", fontsize=6, color="#555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    p = out / "compare_latency.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    made.append(p.name)
    if uv:
        keys = list(W.VARIANTS)
        fig, ax = plt.subplots(figsize=(6.5, 3.0))
        bars(
            ax,
            keys,
            [uv[k]["rps"] for k in keys],
            f"uvicorn, 1 worker, wrk -c{res['uvicorn']['connections']}: requests per second",
        )
        fig.text(0.99, 0.01, foot, ha="right", fontsize=6, color="#555")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        p = out / "compare_rps.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        made.append(p.name)
    return made


# --------------------------------------------------------------------------- main


def write(res: dict[str, Any], out: Path) -> str:
    res["verdicts"] = verdicts(res)
    report = render(res)
    res["plots"] = plots(res, out)
    report += "\n" + "\n".join(f"![{p}]({p})" for p in res["plots"]) + "\n"
    res["markdown"] = report
    (out / "compare.md").write_text(report)
    (out / "compare.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        print(write(json.loads(args.from_json.read_text()), args.out))
        return 0
    import regoguard as rg

    args.out.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    data = W.make_data()
    data_path = tmp / "compare_data.json"
    data_path.write_text(json.dumps(data))
    n_stream = 20_000 + args.rounds * args.segment
    stream = W.workload(max(n_stream, 50_000), data)
    binding = C.load_binding()
    meta = {
        "date": C.now_utc(),
        "command": "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:]),
        "git_rev": C.git_rev(),
        "regoguard": C.regoguard_version(rg),
        "extension": C.extension_info(),
        "machine": C.machine(),
        "binding": binding.label if binding else "not installed",
        "pdp": W.PDP_LABEL,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "segment": args.segment,
        "workload": (
            f"{W.N_USERS:,} users (every 100th an admin), {W.N_PROJECTS} projects, Zipf s = "
            f"{ZIPF_S} over users and projects, seed {W.SEED}; mix "
            + ", ".join(f"{k} {w:.0%}" for k, w in W.MIX)
            + "; policy tests/policies/good/realistic, data generated from the seed"
        ),
    }
    t0 = time.time()
    res: dict[str, Any] = {"meta": meta, "targets": TARGETS}
    with uvicorn("pdp_from_env", {"COMPARE_DATA": str(data_path)}, tmp) as (pdp_url, _):
        log(f"# compare.py: stand-in PDP (not OPA) at {pdp_url}; in-process level")
        res["in_process"] = asyncio.run(in_process(args, data, stream, pdp_url))
        if not args.skip_uvicorn:
            log("# uvicorn level (wrk)")
            res["uvicorn"] = under_uvicorn(args, data_path, stream, pdp_url, tmp)
    log("# hit rates")
    res["hit_rates"] = hit_rates(args, data)
    if args.memory != "skip":
        log(f"# memory (bench_memory.py, {args.memory})")
    res["memory"] = memory(args, tmp)
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["seconds_total"] = round(time.time() - t0)
    print(write(res, args.out))
    log(f"written to {args.out} in {meta['seconds_total']} s")
    return 1 if res["in_process"]["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
