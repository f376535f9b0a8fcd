#!/usr/bin/env python3
"""Resident memory per cached decision: regoguard's L1 vs cachetools + the regorus binding.

Usage:
    python benches/python/bench_memory.py [--entries 1000000] [--quick] [--json OUT]

Each variant runs in a fresh subprocess (``--child VARIANT``) so they cannot disturb each
other. A child builds its authorizer (or engine + cache), warms it with 1,000 distinct
decisions, trims the heap (``malloc_trim``), reads RSS from ``/proc/self/statm``, then
fills the cache with ``--entries`` more distinct decisions through ``check`` (inputs built
lazily, one per call, and freed right after, so they are not counted), trims again and
reads RSS. Bytes per entry = RSS growth / entries added (counted by the cache itself).

Two control children run the same loop with no cache (regoguard ``cache=None``; the bare
binding): their RSS growth is what the loop costs without caching anything (allocator
fragmentation, interned strings, ...). The "net" column subtracts it.

The caches are sized to hold every entry (max_entries = entries + warm-up + 1%) with a TTL
long enough that nothing expires during the fill, so nothing is evicted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

WARM = 1_000
TTL = 3_600.0
TARGET_BYTES = 150

VARIANTS = {
    "regoguard": "regoguard Authorizer, L1 cache",
    "regoguard_nocache": "control: regoguard Authorizer, cache=None",
    "cachetools": "regorus binding + cachetools.TTLCache keyed by json.dumps(input, sort_keys=True)",
    "binding_nocache": "control: regorus binding, no cache",
}
CONTROL_OF = {"regoguard": "regoguard_nocache", "cachetools": "binding_nocache"}


def mem_input(i: int, shapes) -> dict:
    """Distinct inputs that differ in one field, the user id."""
    m, p, _, r = shapes[i % len(shapes)]
    return C.make_input(m, p, f"user-{i:08d}", r)


def child(variant: str, n: int, policy_dir: Path | None) -> dict:
    fx = C.load_fixture(policy_dir)
    shapes = C.request_shapes(fx)
    capacity = int((n + WARM) * 1.01)
    out: dict = {"variant": variant, "label": VARIANTS[variant], "capacity": capacity}
    policies = [str(p) for p in fx.rego_files]

    if variant.startswith("regoguard"):
        import regoguard as rg

        cache = (
            rg.CacheConfig(max_entries=capacity, ttl_seconds=TTL)
            if variant == "regoguard"
            else None
        )
        authz = rg.Authorizer(
            policies=policies, entrypoint=C.ENTRYPOINT, data=str(fx.data_path), cache=cache
        )
        check = authz.check

        def count():
            found = C.entries_from_stats(authz.stats())
            return found[1] if found else None

        def stats():
            return authz.stats()

        out["regoguard_version"] = C.regoguard_version(rg)
    else:
        binding = C.load_binding()
        if binding is None:
            return {**out, "skipped": "no regorus Python binding installed"}
        engine = binding.engine(fx)
        out["binding"] = binding.label
        if variant == "cachetools":
            from cachetools import TTLCache

            ttl = TTLCache(maxsize=capacity, ttl=TTL)
            check = C.binding_ttl(engine, ttl)

            def count():
                return len(ttl)
        else:
            check = C.binding_eval(engine)

            def count():
                return None

        def stats():
            return None

    for i in range(WARM):
        check(mem_input(-1 - i, shapes))  # negative ids: never reused by the fill
    gc.collect()
    C.trim_heap()
    rss0, n0, stats0 = C.rss_bytes(), count(), stats()
    checkpoints = []
    step = max(1, n // 4)
    t0 = time.perf_counter()
    for i in range(n):
        check(mem_input(i, shapes))
        if (i + 1) % step == 0:
            checkpoints.append((i + 1, C.rss_bytes()))
    fill_s = time.perf_counter() - t0
    gc.collect()
    C.trim_heap()
    rss1, n1, stats1 = C.rss_bytes(), count(), stats()
    added = (n1 - n0) if (n1 is not None and n0 is not None) else None
    out.update(
        entries_requested=n,
        rss_before=rss0,
        rss_after=rss1,
        rss_growth=rss1 - rss0,
        entries_before=n0,
        entries_after=n1,
        entries_added=added,
        bytes_per_entry=((rss1 - rss0) / added) if added else None,
        bytes_per_call=(rss1 - rss0) / n,
        checkpoints=checkpoints,
        fill_seconds=fill_s,
        stats_before=stats0,
        stats_after=stats1,
    )
    # Marginal cost over the second half of the fill (less sensitive to one-off growth).
    if len(checkpoints) >= 4 and added:
        (c2, r2), (c4, r4) = checkpoints[1], checkpoints[3]
        out["bytes_per_entry_second_half"] = (r4 - r2) / (c4 - c2)
    return out


def run_child(variant: str, args) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        variant,
        "--entries",
        str(args.entries),
    ]
    if args.policy_dir:
        cmd += ["--policy-dir", str(args.policy_dir)]
    print(f"  running {variant} ...", file=sys.stderr, flush=True)
    load = C.OtherLoad()
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    others = load.cores()
    if p.returncode != 0:
        return {"variant": variant, "label": VARIANTS[variant], "error": p.stderr.strip()[-2000:]}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["other_processes_cores"] = others
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--entries", type=int, default=None, help="distinct cached decisions (default 1,000,000)"
    )
    ap.add_argument("--quick", action="store_true", help="100,000 entries: a smoke run")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--policy-dir", type=Path, default=None)
    ap.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.entries is None:
        args.entries = 100_000 if args.quick else 1_000_000

    if args.child:
        print(json.dumps(child(args.child, args.entries, args.policy_dir), default=str))
        return 0

    C.load_fixture(args.policy_dir)  # fail early, in the parent
    mach = C.machine()
    rev, ext = C.git_rev(), C.extension_info()
    results = {v: run_child(v, args) for v in VARIANTS}
    binding = next((r.get("binding") for r in results.values() if r.get("binding")), None)
    cmd = "python " + " ".join([str(Path(sys.argv[0]))] + (sys.argv[1:] if argv is None else argv))

    mib = lambda b: f"{b / 2**20:.1f}"
    lines = [
        (
            f"Date: {C.now_utc()} · commit: {rev or 'none yet'} · Python {mach['python']} · "
            f"{mach['cpus']} CPUs ({mach['cpu_model']}) · load avg at start {mach['loadavg_1_5_15']}, at end {[round(x, 2) for x in os.getloadavg()]}"
        ),
        f"Command: `{cmd}` · extension: {ext}",
        "CPU used by other processes during each child (cores): "
        + ", ".join(f"{v} {r.get('other_processes_cores', 0):.2f}" for v, r in results.items())
        + " (RSS is not sensitive to it; fill times are)",
        f"Comparison binding: {binding or 'not installed: cachetools variant skipped'}",
        (
            f"Entries: {args.entries:,} distinct decisions (inputs differ in user.id), after {WARM:,} warm-up entries; "
            f"each variant in its own process"
        ),
        "",
        "| variant | entries added | RSS growth MiB | bytes/entry (gross) | bytes/entry (net of control) | bytes/entry, 2nd half of fill | fill time s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for v, r in results.items():
        if "error" in r or "skipped" in r:
            lines.append(
                f"| {r['label']} | {r.get('skipped') or 'ERROR (see JSON/stderr)'} | | | | | |"
            )
            continue
        added = r["entries_added"]
        gross = r["bytes_per_entry"]
        net = None
        ctl = results.get(CONTROL_OF.get(v, ""), {})
        if added and "rss_growth" in ctl:
            net = (r["rss_growth"] - ctl["rss_growth"]) / added
            r["bytes_per_entry_net"] = net
        fmt = lambda x: "n/a" if x is None else f"{x:.1f}"
        lines.append(
            f"| {r['label']} | {added if added is not None else 'n/a (no cache)'} | {mib(r['rss_growth'])} | "
            f"{fmt(gross)} | {fmt(net)} | {fmt(r.get('bytes_per_entry_second_half'))} | {r['fill_seconds']:.1f} |"
        )
    rg = results.get("regoguard", {})
    if rg.get("bytes_per_entry") is not None:
        gross = rg["bytes_per_entry"]
        net = rg.get("bytes_per_entry_net")
        lines += [
            "",
            f"Target (core issue): ≤ {TARGET_BYTES} B per cached decision for regoguard → gross {gross:.1f} B "
            f"({'met' if gross <= TARGET_BYTES else 'NOT met'})"
            + (
                f", net of control {net:.1f} B ({'met' if net <= TARGET_BYTES else 'NOT met'})"
                if net is not None
                else ""
            ),
        ]
    ct = results.get("cachetools", {})
    if rg.get("bytes_per_entry") and ct.get("bytes_per_entry"):
        lines.append(
            f"Same-run ratio, cachetools+binding / regoguard bytes per entry (gross): "
            f"{ct['bytes_per_entry'] / rg['bytes_per_entry']:.2f}×"
        )
    if "stats_after" in rg:
        lines.append(f"regoguard stats() after the fill: {rg['stats_after']}")
    for r in results.values():
        if "error" in r:
            lines.append(
                f"ERROR in {r['variant']}: {r['error'].splitlines()[-1] if r['error'] else '?'}"
            )
    report = C.markdown_list(lines)
    print(report)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "meta": {
                        "date": C.now_utc(),
                        "command": cmd,
                        "git_rev": rev,
                        "extension": ext,
                        "machine": mach,
                        "binding": binding,
                        "entries": args.entries,
                        "warm": WARM,
                        "ttl_seconds": TTL,
                    },
                    "results": results,
                    "target_bytes": TARGET_BYTES,
                    "markdown": report,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
