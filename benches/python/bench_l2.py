"""Where Redis pays: an L2 hit against an engine evaluation and a 1 ms decorated function, and
how long an invalidation takes to reach another process.

    .venv/bin/python benches/python/bench_l2.py [--n 2000] [--rounds 3] [--url redis://...]

Starts its own redis-server on a free loopback port unless ``--url`` is given (the server
must then be disposable: keys are written under a fresh prefix). Prints a Markdown table of
p50/p99 per variant (median over rounds) and the propagation delay.

Variants, each on inputs never seen before by the reading instance, so every call takes the
path named:

- ``engine``: ``Authorizer.check`` with ``cache=None`` on the realistic policy: one evaluation.
- ``l2 hit, decision (check_async)``: an Authorizer with ``decisions="always"`` reading a
  decision another instance wrote; awaited through the async bridge.
- ``l2 hit, sync decorated``: a sync ``@cached_authorization(redis=...)`` function reading a
  result another instance wrote (GIL released while waiting).
- ``l2 hit, async decorated``: the same for an ``async def``.
- ``1 ms function, sync/async``: the decorated function's body when it misses everywhere.
- ``propagation``: ``invalidate()`` in this process until the other process's L1 entry is
  gone (the other process busy-polls ``cache_info()``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import harness as H
import regoguard
from _common import DEFAULT_POLICY_DIR, load_fixture, request_shapes, unique_inputs

KEY = b"bench-signing-key-0123456789"


def timed(fn: Callable[[Any], Any], items: list[Any]) -> list[float]:
    """Microseconds of each call."""
    ns: list[int] = []
    H.time_singles(fn, items, ns)
    return [t / 1000 for t in ns]


async def atimed(fn: Callable[[Any], Any], items: list[Any]) -> list[float]:
    """Microseconds of each awaited call."""
    ns: list[int] = []
    await H.atime_singles(fn, items, ns)
    return [t / 1000 for t in ns]


def wait_writes(cfg: regoguard.RedisConfig, n: int) -> None:
    deadline = time.monotonic() + 30
    while cfg.stats()["writes"] < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {cfg.stats()['writes']} of {n} writes reached Redis")
        time.sleep(0.01)


def one_round(url: str, n: int, rnd: int) -> dict[str, list[float]]:
    fx = load_fixture()
    shapes = request_shapes(fx)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    results: dict[str, list[float]] = {}

    def cfg(**kw: Any) -> regoguard.RedisConfig:
        return regoguard.RedisConfig(url, key_prefix=prefix, signing_key=KEY, **kw)

    # engine
    inputs = unique_inputs(shapes, f"e{rnd}", 0, n)
    engine = regoguard.Authorizer(fx.policy_dir, data=fx.data_path, cache=None)
    engine.check(inputs[0])
    results["engine evaluation (check, cache=None)"] = timed(engine.check, inputs)

    # decisions through L2, read with check_async by another instance
    inputs = unique_inputs(shapes, f"d{rnd}", 0, n)
    w_cfg = cfg(decisions="always")
    writer = regoguard.Authorizer(fx.policy_dir, data=fx.data_path, redis=w_cfg)
    for x in inputs:
        writer.check(x)
    wait_writes(w_cfg, n)
    r_cfg = cfg(decisions="always")
    reader = regoguard.Authorizer(fx.policy_dir, data=fx.data_path, redis=r_cfg)

    async def decisions() -> list[float]:
        return await atimed(reader.check_async, inputs)

    results["L2 hit, decision (check_async)"] = asyncio.run(decisions())
    assert r_cfg.stats()["hits"] == n, r_cfg.stats()

    # decorated functions: a 1 ms body
    def make(c: regoguard.RedisConfig | None, is_async: bool) -> Any:
        if is_async:

            async def can_async(user_id: str, project_id: int) -> bool:
                await asyncio.sleep(0.001)
                return True

            fn: Any = can_async
        else:

            def can_sync(user_id: str, project_id: int) -> bool:
                time.sleep(0.001)
                return True

            fn = can_sync
        fn.__qualname__ = f"bench_{'async' if is_async else 'sync'}_{rnd}"
        return regoguard.cached_authorization(redis=c, max_entries=n * 2)(fn) if c else fn

    args = [(f"u{i}", i) for i in range(n)]
    for is_async in (False, True):
        kind = "async" if is_async else "sync"
        w_cfg = cfg()
        w = make(w_cfg, is_async)
        if is_async:

            async def fill(w: Any = w) -> None:
                for a in args:
                    await w(*a)

            asyncio.run(fill())
        else:
            for a in args:
                w(*a)
        wait_writes(w_cfg, n)
        r_cfg = cfg()
        r = make(r_cfg, is_async)
        bare = make(None, is_async)
        if is_async:

            async def run(r: Any = r, bare: Any = bare) -> tuple[list[float], list[float]]:
                hits = await atimed(lambda xs: r(*xs), args)
                body = await atimed(lambda xs: bare(*xs), args[: max(50, n // 10)])
                return hits, body

            hits, body = asyncio.run(run())
        else:
            hits = timed(lambda a, r=r: r(*a), args)
            body = timed(lambda a, bare=bare: bare(*a), args[: max(50, n // 10)])
        assert r_cfg.stats()["hits"] == n, r_cfg.stats()
        results[f"L2 hit, {kind} decorated function"] = hits
        results[f"1 ms {kind} function (uncached call)"] = body
    return results


CHILD = """
import sys, time
import regoguard

url, prefix, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()
cfg = regoguard.RedisConfig(url, key_prefix=prefix, signing_key=key)

def fn(i: int) -> bool:
    return True

fn.__module__, fn.__qualname__ = "bench", "propagation"
f = regoguard.cached_authorization(redis=cfg)(fn)
while not cfg.stats()["subscribed"]:
    time.sleep(0.001)
info = f.cache_info
for line in sys.stdin:
    i = int(line)
    f(i)
    print("ready", flush=True)
    while info().entries:
        pass
    print(time.perf_counter_ns(), flush=True)
"""


def propagation(url: str, n: int) -> list[float]:
    prefix = f"prop{uuid.uuid4().hex[:8]}"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), url, prefix, KEY.decode()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    cfg = regoguard.RedisConfig(url, key_prefix=prefix, signing_key=KEY)

    def fn(i: int) -> bool:
        return True

    fn.__module__, fn.__qualname__ = "bench", "propagation"
    f = regoguard.cached_authorization(redis=cfg)(fn)
    while not cfg.stats()["subscribed"]:
        time.sleep(0.001)
    out = []
    try:
        for i in range(n):
            child.stdin.write(f"{i}\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ready"
            t0 = time.perf_counter_ns()  # CLOCK_MONOTONIC: comparable across processes
            f.invalidate(i)
            t1 = int(child.stdout.readline())
            out.append((t1 - t0) / 1000)
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="calls per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--propagation", type=int, default=200, help="invalidations timed")
    p.add_argument("--url", default=None, help="a disposable Redis (default: start one)")
    args = p.parse_args()
    server = None
    url = args.url
    if url is None:
        server = H.RedisServer().start()
        url = server.url
    try:
        rounds = [one_round(url, args.n, r) for r in range(args.rounds)]
        prop = propagation(url, args.propagation)
    finally:
        if server is not None:
            server.stop()
    med = statistics.median
    print(
        f"policy: {DEFAULT_POLICY_DIR.name}, n={args.n}, rounds={args.rounds}, "
        f"python {sys.version.split()[0]}, regoguard {regoguard.__version__}\n"
    )
    print("| path | p50 | p99 |\n|---|---:|---:|")
    for name in rounds[0]:
        p50 = med([H.pct(sorted(r[name]), 50) for r in rounds])
        p99 = med([H.pct(sorted(r[name]), 99) for r in rounds])
        print(f"| {name} | {p50:.1f} µs | {p99:.1f} µs |")
    print(
        f"| invalidate() → other process's L1 dropped ({len(prop)} times) "
        f"| {H.pct(sorted(prop), 50):.1f} µs | {H.pct(sorted(prop), 99):.1f} µs |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
