#!/usr/bin/env python3
"""Per-decision latency from Python: regoguard vs the regorus Python binding (± cachetools).

Usage:
    python benches/python/bench_decisions.py [--quick] [--json OUT]

Every variant runs in the same process, in every round, on the same inputs, in a
shuffled order per round. For each variant and round it times batches of calls with
``time.perf_counter_ns`` (per-call mean of each batch -> p50/p99 over batches) and then
single calls (-> p50/p99 of individual calls, timer overhead included: see the no-op
row). ``gc`` is disabled while timing. The table reports the median over rounds of each
statistic; ratios are taken within a round, then the median over rounds. The machine is a
shared 2-core box: compare ratios, not absolute times across runs.

Variants:
  regoguard  Authorizer.check, L1 hit       16 inputs repeated, cache warmed first
  regoguard  Authorizer.check, L1 miss      every input unique (a new user id per call)
  regoguard  Authorizer.check, cache=None   the same unique inputs: evaluation only
  binding    engine.set_input + eval_rule   the same unique inputs
  binding    + cachetools.TTLCache, hit     keyed by json.dumps(input, sort_keys=True)
  binding    + cachetools.TTLCache, miss    the same unique inputs
  baseline   a no-op Python function        loop + call overhead of this harness
"""

from __future__ import annotations

import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from harness import pct, time_batch, time_singles

TARGETS_US = {"rg_hit": 0.8, "rg_miss": 3.0}  # p50 targets from the core issue


@dataclass
class Variant:
    key: str
    label: str
    scenario: str  # "hit" | "miss"
    fn: Callable[[Any], Any]
    kind: str  # "regoguard" | "binding" | "baseline"
    authz: Any = None
    rounds: list[dict[str, float]] = field(default_factory=list)
    stats_delta: dict[str, float] | None = None
    sources: dict[str, int] | None = None


def noop(_x):
    return None


def parse_args(argv=None):
    ap = C.bench_arg_parser(__doc__, "calls")
    full = {"rounds": 5, "batches": 200, "batch_size": 1000, "singles": 20_000, "warmup": 20}
    quick = {"rounds": 2, "batches": 50, "batch_size": 500, "singles": 5_000, "warmup": 5}
    return C.apply_mode(ap.parse_args(argv), full, quick)


def build_variants(args, fx, rg, binding) -> tuple[list[Variant], list[str]]:
    notes: list[str] = []
    cfg = rg.CacheConfig(max_entries=args.max_entries, ttl_seconds=60.0)
    policies = [str(p) for p in fx.rego_files]
    mk = lambda cache: rg.Authorizer(
        policies=policies, entrypoint=C.ENTRYPOINT, data=str(fx.data_path), cache=cache
    )
    a_hit, a_miss, a_none = mk(cfg), mk(cfg), mk(None)
    cache_note = f"CacheConfig(max_entries={args.max_entries}, ttl_seconds=60)"
    vs = [
        Variant(
            "rg_hit",
            f"regoguard check, L1 hit ({cache_note})",
            "hit",
            a_hit.check,
            "regoguard",
            a_hit,
        ),
        Variant(
            "rg_miss",
            "regoguard check, L1 miss (unique inputs)",
            "miss",
            a_miss.check,
            "regoguard",
            a_miss,
        ),
        Variant(
            "rg_nocache",
            "regoguard check, cache=None (evaluation only)",
            "miss",
            a_none.check,
            "regoguard",
            a_none,
        ),
    ]
    if binding is not None:
        from cachetools import TTLCache

        e_eval, e_ttl_hit, e_ttl_miss = binding.engine(fx), binding.engine(fx), binding.engine(fx)
        ttl_hit = TTLCache(maxsize=args.max_entries, ttl=60)
        ttl_miss = TTLCache(maxsize=args.max_entries, ttl=60)
        short = f"{binding.dist} {binding.version}"
        vs += [
            Variant(
                "rb_eval",
                f"regorus binding ({short}): set_input + eval_rule",
                "miss",
                C.binding_eval(e_eval),
                "binding",
            ),
            Variant(
                "rb_ttl_hit",
                f"regorus binding ({short}) + cachetools.TTLCache({args.max_entries}, 60), hit",
                "hit",
                C.binding_ttl(e_ttl_hit, ttl_hit),
                "binding",
            ),
            Variant(
                "rb_ttl_miss",
                f"regorus binding ({short}) + cachetools.TTLCache({args.max_entries}, 60), miss",
                "miss",
                C.binding_ttl(e_ttl_miss, ttl_miss),
                "binding",
            ),
        ]
    vs.append(
        Variant(
            "noop", "baseline: no-op Python function (harness overhead)", "hit", noop, "baseline"
        )
    )
    return vs, notes


def cross_check(fx, rg_variant: Variant, binding, shapes) -> tuple[list[str], float, float]:
    """regoguard's decision must equal the binding's result on every hit input and a unique sample."""
    problems: list[str] = []
    hits = C.hit_inputs(fx)
    uniq = C.unique_inputs(shapes, "xc", 0, 64)
    allow_hit = allow_miss = 0
    eng = binding.engine(fx) if binding else None
    for group, inputs in (("hit", hits), ("miss", uniq)):
        for inp in inputs:
            d = rg_variant.authz.check(inp)
            allow = getattr(d, "allow", None)
            if group == "hit":
                allow_hit += bool(allow)
            else:
                allow_miss += bool(allow)
            if eng is None:
                continue
            eng.set_input(inp)
            want = eng.eval_rule(C.ENTRYPOINT)
            w_allow = want.get("allow") if isinstance(want, dict) else want
            w_reason = want.get("reason") if isinstance(want, dict) else None
            got_result = getattr(d, "result", None)
            if allow != w_allow or getattr(d, "reason", None) != w_reason or got_result != want:
                problems.append(
                    f"{inp['method']} {inp['path']} user={inp['user']}: regoguard allow={allow!r} "
                    f"reason={getattr(d, 'reason', None)!r} result={got_result!r}; binding {want!r}"
                )
    return problems, allow_hit / len(hits), allow_miss / len(uniq)


def measure(v: Variant, args, rnd: int, hit_batch, shapes, hit_list) -> dict[str, float]:
    bs = args.batch_size
    gc.collect()
    before = C.numeric_stats(v.authz.stats()) if v.authz is not None else None
    gc.disable()
    try:
        # Warm-up: fills the caches of hit variants, settles the interpreter for the rest.
        for w in range(args.warmup):
            batch = (
                hit_batch if v.scenario == "hit" else C.unique_inputs(shapes, f"w{rnd}", w * bs, bs)
            )
            time_batch(v.fn, batch)
        means = []
        for b in range(args.batches):
            batch = (
                hit_batch if v.scenario == "hit" else C.unique_inputs(shapes, f"r{rnd}", b * bs, bs)
            )
            means.append(time_batch(v.fn, batch) / len(batch))
        if v.scenario == "hit":
            singles_in = (hit_list * (args.singles // len(hit_list) + 1))[: args.singles]
        else:
            singles_in = C.unique_inputs(shapes, f"s{rnd}", 0, args.singles)
        singles: list[int] = []
        time_singles(v.fn, singles_in, singles)
    finally:
        gc.enable()
    if v.authz is not None and rnd == 0:
        after = C.numeric_stats(v.authz.stats())
        v.stats_delta = {
            k: after[k] - before.get(k, 0)
            for k in after
            if after[k] != before.get(k, 0) and "ratio" not in k
        }
        # Where did the decisions come from? Hit inputs must now come from L1, fresh ones from the engine.
        probe = (
            hit_list
            if v.scenario == "hit"
            else C.unique_inputs(shapes, f"p{rnd}", 0, len(hit_list))
        )
        src: dict[str, int] = {}
        for inp in probe:
            s = str(getattr(v.fn(inp), "source", "?"))
            src[s] = src.get(s, 0) + 1
        v.sources = src
    means.sort()
    singles.sort()
    return {
        "batch_p50_ns": pct(means, 50),
        "batch_p99_ns": pct(means, 99),
        "single_p50_ns": pct(singles, 50),
        "single_p99_ns": pct(singles, 99),
        "single_p999_ns": pct(singles, 99.9),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    fx = C.load_fixture(args.policy_dir)
    try:
        import regoguard as rg
    except ImportError as e:
        sys.exit(
            f"regoguard is not importable ({e}): build and install the extension first (maturin develop)"
        )
    binding, binding_note = C.binding_or_note(args.no_binding)

    shapes = C.request_shapes(fx)
    hit_list = C.hit_inputs(fx)
    hit_batch = (hit_list * (args.batch_size // len(hit_list) + 1))[: args.batch_size]
    variants, notes = build_variants(args, fx, rg, binding)
    by_key = {v.key: v for v in variants}

    problems, allow_hit, allow_miss = cross_check(fx, by_key["rg_nocache"], binding, shapes)
    if problems:
        print(
            f"WARNING: {len(problems)} decisions differ between regoguard and the binding:",
            file=sys.stderr,
        )
        for p in problems[:10]:
            print("  " + p, file=sys.stderr)

    mach = C.machine()  # load average before the timing starts
    rev, ext = C.git_rev(), C.extension_info()
    t_start = time.time()
    print(
        f"# regoguard decision benchmark: {len(variants)} variants x {args.rounds} rounds "
        f"({args.batches} batches x {args.batch_size} calls + {args.singles} single calls each)",
        file=sys.stderr,
    )
    other_load: list[float] = []  # cores used by other processes, per round
    for rnd in range(args.rounds):
        order = variants[:]
        random.Random(rnd).shuffle(order)
        load = C.OtherLoad()
        for v in order:
            v.rounds.append(measure(v, args, rnd, hit_batch, shapes, hit_list))
        other_load.append(load.cores())
        C.round_done(rnd, args.rounds, t_start, other_load[-1])

    # Medians over rounds; ratios within each round, then their median.
    def med(v: Variant, stat: str) -> float:
        return statistics.median(r[stat] for r in v.rounds)

    def ratio(num: str, den: str, stat: str = "batch_p50_ns") -> float | None:
        if num not in by_key or den not in by_key:
            return None
        return statistics.median(
            a[stat] / b[stat] for a, b in zip(by_key[num].rounds, by_key[den].rounds)
        )

    ratios = {
        "binding eval / regoguard L1 hit": ratio("rb_eval", "rg_hit"),
        "binding eval / regoguard L1 miss": ratio("rb_eval", "rg_miss"),
        "binding eval / regoguard cache=None": ratio("rb_eval", "rg_nocache"),
        "binding+TTLCache hit / regoguard L1 hit": ratio("rb_ttl_hit", "rg_hit"),
        "binding+TTLCache miss / regoguard L1 miss": ratio("rb_ttl_miss", "rg_miss"),
        "regoguard L1 miss / regoguard cache=None": ratio("rg_miss", "rg_nocache"),
    }

    meta = {
        "date": C.now_utc(),
        "command": "python "
        + " ".join([str(Path(sys.argv[0]))] + (sys.argv[1:] if argv is None else argv)),
        "git_rev": rev,
        "regoguard_version": C.regoguard_version(rg),
        "extension": ext,
        "binding": binding_note,
        "machine": mach,
        "policy": [
            str(p.relative_to(C.REPO)) if p.is_relative_to(C.REPO) else str(p)
            for p in (*fx.rego_files, fx.data_path)
        ],
        "entrypoint": C.ENTRYPOINT,
        "config": {
            k: getattr(args, k)
            for k in ("rounds", "batches", "batch_size", "singles", "warmup", "max_entries", "cpu")
        },
        "allow_fraction": {"hit_set": allow_hit, "unique_sample": allow_miss},
        "cross_check_mismatches": problems,
        "notes": notes,
        "other_processes_cores_per_round": other_load,
    }

    # ---------------------------------------------------------------- report
    us = lambda ns: f"{ns / 1000:.3f}"
    ref = by_key["rg_hit"]
    lines = []
    lines.append(
        f"Date: {meta['date']} · commit: {rev or 'none yet'} · regoguard {meta['regoguard_version']} · "
        f"Python {meta['machine']['python']} · {meta['machine']['cpus']} CPUs ({meta['machine']['cpu_model']}) · "
        f"load avg at start {meta['machine']['loadavg_1_5_15']}, at end {[round(x, 2) for x in os.getloadavg()]}"
    )
    lines.append(f"Command: `{meta['command']}` · extension: {ext}")
    busy = max(other_load)
    lines.append(
        "CPU used by other processes during the rounds (cores): "
        + ", ".join(f"{x:.2f}" for x in other_load)
        + (
            f" · WARNING: the machine was busy (up to {busy:.2f} cores): a disturbed run"
            if busy > 0.25
            else " (quiet)"
        )
    )
    lines.append(f"Comparison binding: {binding_note}")
    lines.append(
        f"Rounds: {args.rounds} (median over rounds) · {args.batches} batches x {args.batch_size} calls · "
        f"{args.singles} single calls · allow rate: hit set {allow_hit:.0%}, unique inputs {allow_miss:.0%}"
    )
    lines.append("")
    lines.append(
        "| variant | p50 µs/call (batch mean) | p99 µs/call (batch mean) | single call p50 µs | single call p99 µs | × regoguard L1 hit (p50) |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for v in variants:
        r = statistics.median(
            a["batch_p50_ns"] / b["batch_p50_ns"] for a, b in zip(v.rounds, ref.rounds)
        )
        lines.append(
            f"| {v.label} | {us(med(v, 'batch_p50_ns'))} | {us(med(v, 'batch_p99_ns'))} | "
            f"{us(med(v, 'single_p50_ns'))} | {us(med(v, 'single_p99_ns'))} | {r:.2f} |"
        )
    lines.append("")
    lines.append(
        "Single-call times include two `perf_counter_ns` calls; the no-op row shows that overhead."
    )
    lines.append("")
    lines.append("| same-run ratio (p50 batch mean, median over rounds) | value |")
    lines.append("|---|---:|")
    for k, val in ratios.items():
        if val is not None:
            lines.append(f"| {k} | {val:.2f}× |")
    lines.append("")
    lines.append("| target (core issue) | measured p50 | verdict |")
    lines.append("|---|---:|---|")
    for k, tgt in TARGETS_US.items():
        got = med(by_key[k], "batch_p50_ns") / 1000
        lines.append(
            f"| {by_key[k].label}: ≤ {tgt} µs | {got:.3f} µs | {'met' if got <= tgt else 'NOT met'} |"
        )
    lines.append("")
    for v in variants:
        if v.kind == "regoguard":
            lines.append(
                f"- {v.key}: decision sources after timing {v.sources}; stats delta over round 1: {v.stats_delta}"
            )
    lines.append(f"- regoguard stats() keys: {sorted(by_key['rg_hit'].authz.stats())}")
    if problems:
        lines.append(
            f"- WARNING: {len(problems)} decisions differ between regoguard and the binding (see JSON)"
        )
    report = C.markdown_list(lines)
    print(report)

    if args.json:
        out = {
            "meta": meta,
            "variants": {
                v.key: {
                    "label": v.label,
                    "kind": v.kind,
                    "scenario": v.scenario,
                    "median": {s: med(v, s) for s in v.rounds[0]},
                    "rounds": v.rounds,
                    "regoguard_stats_delta_round1": v.stats_delta,
                    "decision_sources": v.sources,
                }
                for v in variants
            },
            "ratios": ratios,
            "targets_us": TARGETS_US,
            "regoguard_stats_sample": by_key["rg_hit"].authz.stats(),
            "markdown": report,
        }
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        print(f"\nJSON written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
