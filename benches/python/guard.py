#!/usr/bin/env python3
"""Regression guard: instructions per decision on the hit and miss paths, under callgrind.

    .venv/bin/python benches/python/guard.py            # compare with the baseline (make bench-guard)
    .venv/bin/python benches/python/guard.py --update   # write the baseline (make bench-guard-update)

Wall-clock times on the shared 2-core box move by tens of percent; instruction counts do
not. Each path runs in its own ``valgrind --tool=callgrind`` process: the same script builds
the same authorizer and the same inputs in every run, warms the L1 with the hit set, then
makes ``N`` calls of one path (or none, for the ``base`` run). Instructions per call =
(path run - base run) / N, so start-up, imports, policy compilation and input building
cancel out. ``PYTHONHASHSEED=0`` keeps CPython's dict layouts the same from run to run.

Paths (the realistic policy, inputs in the middleware's shape):
  check_hit        Authorizer.check(input), L1 hit (16 shapes repeated)
  check_miss       Authorizer.check(input), every input new (evaluation + insert; cache on)
  check_nocache    Authorizer(cache=None).check(input): evaluation only
  scope_hit        authz._check_scope(scope, spec, user): the middleware's L1-hit call

The baseline is benches/results/instructions_baseline.json; a path fails when it costs more
than ``--threshold`` (default 10%) above it. Exit status 1 on a regression.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C

BASELINE = C.REPO / "benches" / "results" / "instructions_baseline.json"
PATHS = {"check_hit": 20_000, "check_miss": 4_000, "check_nocache": 4_000, "scope_hit": 20_000}


def child(path: str, n: int) -> None:
    """The measured program: identical in every run except for the calls of ``path``."""
    import regoguard as rg
    from regoguard._regoguard import RequestSpec

    fx = C.load_fixture()
    pol = [str(p) for p in fx.rego_files]
    cfg = rg.CacheConfig(max_entries=100_000, ttl_seconds=3600.0)
    # Under callgrind an evaluation runs ~50x slower: the default 0.1 s budget would fail it.
    common = {"policies": pol, "entrypoint": C.ENTRYPOINT, "data": str(fx.data_path)}
    authz = rg.Authorizer(**common, cache=cfg, eval_timeout_seconds=60.0)
    bare = rg.Authorizer(**common, cache=None, eval_timeout_seconds=60.0)
    shapes = C.request_shapes(fx)
    hits = C.hit_inputs(fx)
    fresh = C.unique_inputs(shapes, "guard", 0, max(PATHS.values()))
    spec = RequestSpec(include_headers=[])
    scopes = [
        (
            {
                "type": "http",
                "method": m,
                "path": p,
                "query_string": b"",
                "headers": [(b"host", b"api.example.com")],
            },
            {"id": u, "roles": list(r)},
        )
        for m, p, u, r in shapes
    ]
    for inp in hits:  # warm: every run, so the base run has the same L1 and engine state
        authz.check(inp)
        bare.check(inp)
    for s, u in scopes:
        authz._check_scope(s, spec, u)
    k = len(hits)
    if path == "check_hit":
        check = authz.check
        for i in range(n):
            check(hits[i % k])
    elif path == "check_miss":
        check = authz.check
        for i in range(n):
            check(fresh[i])
    elif path == "check_nocache":
        check = bare.check
        for i in range(n):
            check(fresh[i])
    elif path == "scope_hit":
        check = authz._check_scope
        for i in range(n):
            s, u = scopes[i % k]
            check(s, spec, u)
    elif path != "base":
        raise SystemExit(f"unknown path {path}")


def callgrind(path: str, n: int, tmp: Path) -> int:
    """Total instructions (Ir) of one child run under callgrind."""
    out = tmp / f"callgrind.{path}.out"
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        "--dump-instr=no",
        "--compress-strings=no",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        path,
        "--n",
        str(n),
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
    for line in out.read_text().splitlines():
        m = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no totals in {out}")


def measure() -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        base = {n: callgrind("base", n, tmp) for n in sorted(set(PATHS.values()))}
        out = {}
        for path, n in PATHS.items():
            total = callgrind(path, n, tmp)
            out[path] = {"instructions_per_call": (total - base[n]) / n, "calls": n}
            print(
                f"  {path}: {out[path]['instructions_per_call']:,.0f} instructions/call",
                file=sys.stderr,
            )
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--update", action="store_true", help="write the baseline instead of comparing")
    ap.add_argument("--threshold", type=float, default=0.10, help="allowed growth (default 0.10)")
    ap.add_argument("--baseline", type=Path, default=BASELINE)
    ap.add_argument("--json", type=Path, help="also write this run's counts here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.n)
        return 0
    print("# callgrind: instructions per call (path run - base run) / calls", file=sys.stderr)
    got = measure()
    meta = {
        "date": C.now_utc(),
        "git_rev": C.git_rev(),
        "extension": C.extension_info(),
        "python": sys.version.split()[0],
        "valgrind": subprocess.run(
            ["valgrind", "--version"], check=False, capture_output=True, text=True
        ).stdout.strip(),
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "paths": got}, indent=1) + "\n")
    if args.update:
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        args.baseline.write_text(json.dumps({"meta": meta, "paths": got}, indent=1) + "\n")
        print(f"baseline written to {args.baseline}")
        return 0
    if not args.baseline.is_file():
        print(f"no baseline at {args.baseline}: run `make bench-guard-update`", file=sys.stderr)
        return 2
    base = json.loads(args.baseline.read_text())["paths"]
    bad = 0
    print(f"| path | baseline instr/call | now | change | limit +{args.threshold:.0%} |")
    print("|---|---:|---:|---:|---|")
    for path, r in got.items():
        b = base.get(path, {}).get("instructions_per_call")
        now = r["instructions_per_call"]
        if b is None:
            print(f"| {path} | — | {now:,.0f} | — | no baseline |")
            continue
        change = now / b - 1
        ok = change <= args.threshold
        bad += not ok
        print(
            f"| {path} | {b:,.0f} | {now:,.0f} | {change:+.2%} | {'ok' if ok else 'REGRESSION'} |"
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
