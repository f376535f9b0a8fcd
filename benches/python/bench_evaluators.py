#!/usr/bin/env python3
"""Miss-path cost per evaluator on the realistic policy (tests/policies/good/realistic).

Usage:
    python benches/python/bench_evaluators.py [--rounds N]

Times ``Authorizer.check`` with ``cache=None`` (every call evaluates: the miss path with its
budget timer, eval_context scope and RVM result check) on unique inputs, for
``evaluator="rvm"``, ``"interpreter"`` and ``"auto"`` (what auto picks is printed). Per round:
batches of calls (per-call mean of each batch -> p50/p99 over batches); the table shows the
median over rounds. ``gc`` is off while timing. Shared, noisy machine: compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from pathlib import Path

import regoguard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "tests" / "policies" / "good" / "realistic"


def inputs(n: int) -> list[dict[str, object]]:
    out = []
    for i in range(n):
        segs = ["api", "v1", "projects", f"p{i % 7}"]
        out.append(
            {
                "method": "GET",
                "path": "/" + "/".join(segs),
                "path_segments": segs,
                "user": {"id": f"u{i}", "roles": ["user"]},
            }
        )
    return out


def run(
    authz: regoguard.Authorizer, docs: list[dict[str, object]], batches: int, size: int
) -> tuple[float, float]:
    per_call = []
    for b in range(batches):
        chunk = docs[b * size : (b + 1) * size]
        per_call.append(H.time_batch(authz.check, chunk) / len(chunk) / 1000)
    per_call.sort()
    return statistics.median(per_call), H.pct(per_call, 99)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    docs = inputs(args.batches * args.batch_size)
    names = ["rvm", "interpreter", "auto"]
    authz = {
        n: regoguard.Authorizer(POLICY, data=POLICY / "data.json", evaluator=n, cache=None)
        for n in names
    }
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    gc.disable()
    for _ in range(args.rounds):
        for n in names:
            run(authz[n], docs[:200], 2, 100)  # warm the thread's worker
            results[n].append(run(authz[n], docs, args.batches, args.batch_size))
    gc.enable()
    print(
        f"{'evaluator':<12} {'picks':<12} {'p50 us':>8} {'p99 us':>8}   (median of {args.rounds} rounds)"
    )
    for n in names:
        p50 = statistics.median(r[0] for r in results[n])
        p99 = statistics.median(r[1] for r in results[n])
        picks = authz[n].stats()["evaluators"]["data.authz.allow"]
        print(f"{n:<12} {picks:<12} {p50:>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
