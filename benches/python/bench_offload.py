#!/usr/bin/env python3
"""What sending an L1 miss to a worker thread costs, against evaluating it on the event loop.

Usage:
    python benches/python/bench_offload.py [--quick]

One asyncio loop, the realistic-sized policy below, ``cache=None`` so every call is a miss.
Per request, timed one by one (``time.perf_counter_ns``, gc off), p50 per round, medians over
rounds:
  inline   ``authz._check_scope(scope, spec, user)``: the miss evaluated on the loop thread
  offload  the same call with a spec that defers every miss (``offload_after_seconds=0``),
           then ``await anyio.to_thread.run_sync(pending.evaluate)``: what the middleware does
           for an entrypoint measured slow
  hop      ``await anyio.to_thread.run_sync(noop)``: the thread hop alone
The hop is what a deferred miss pays on top of its evaluation; the middleware's default
threshold (``offload_after_seconds``) is set so that it is a small part of a miss that pays it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path

import anyio.to_thread
import regoguard
from regoguard._regoguard import PendingDecision, RequestSpec

POLICY = """package authz
default allow := false
allow if {
	input.method == "GET"
	some role in input.user.roles
	role in {"admin", "viewer", "editor"}
	startswith(input.path, "/api/")
}
"""


def scope_for(i: int) -> dict[str, object]:
    return {
        "type": "http",
        "method": "GET",
        "path": f"/api/v1/projects/{i}",
        "query_string": b"",
        "headers": [],
    }


async def one_round(authz: regoguard.Authorizer, n: int) -> dict[str, float]:
    inline, offload = RequestSpec(), RequestSpec(offload_after_seconds=0.0)
    user = {"id": "u1", "roles": ["viewer"]}
    times: dict[str, list[int]] = {"inline": [], "offload": [], "hop": []}
    scopes = [scope_for(i) for i in range(n)]

    def noop() -> None:
        return None

    await anyio.to_thread.run_sync(noop)  # the pool's first thread
    gc.disable()
    try:
        for s in scopes:
            t = time.perf_counter_ns()
            authz._check_scope(s, inline, user)
            times["inline"].append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            pending = authz._check_scope(s, offload, user)
            assert isinstance(pending, PendingDecision)
            await anyio.to_thread.run_sync(pending.evaluate)
            times["offload"].append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            await anyio.to_thread.run_sync(noop)
            times["hop"].append(time.perf_counter_ns() - t)
    finally:
        gc.enable()
    return {k: statistics.median(v) / 1000 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, n = (3, 500) if args.quick else (5, 3000)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "authz.rego").write_text(POLICY)
        authz = regoguard.Authorizer(d, cache=None)
        results = [asyncio.run(one_round(authz, n)) for _ in range(rounds)]
    print(f"{rounds} rounds x {n} misses; per-request p50 in µs (median over rounds, min-max)")
    for k in ("inline", "offload", "hop"):
        v = [r[k] for r in results]
        print(f"  {k:8s} {statistics.median(v):8.1f}   ({min(v):.1f}-{max(v):.1f})")
    extra = statistics.median([r["offload"] - r["inline"] for r in results])
    print(f"  a deferred miss costs +{extra:.1f} µs over an inline one")


if __name__ == "__main__":
    main()
