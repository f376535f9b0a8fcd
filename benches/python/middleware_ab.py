#!/usr/bin/env python3
"""RegoGuardMiddleware at a git revision (before) against the working tree's (after), in one
run, so a change to the middleware's Python shows what it costs per request.

    .venv/bin/python benches/python/middleware_ab.py --rev HEAD            # callgrind
    .venv/bin/python benches/python/middleware_ab.py --rev HEAD --time [bench_asgi options]

The revision's ``python/regoguard/middleware.py`` is loaded from git as a module of its own
beside the installed package (the rest of the package, and the extension, are the working
tree's: only the middleware's own code differs).

Default (callgrind): instructions per request on L1 hits, allowed and denied, each path in its
own ``valgrind --tool=callgrind`` process; (path run - base run) / N, as ``guard.py`` does, so
start-up and warm-up cancel out. Deterministic to a fraction of a percent, unlike wall time
on the shared 2-core box.

``--time``: ``bench_asgi.py`` with a ``[BEFORE: <rev>]`` variant beside every RegoGuardMiddleware
variant, interleaved in the same rounds (the other options go to bench_asgi).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C
import bench_asgi as A

# L1-hit shapes of the realistic policy: allowed (the app runs) and denied (403).
SHAPES = {
    "allowed": [
        ("GET", "/health", "", "u-outsider", ("user",)),
        ("GET", "/api/v1/projects/40", "", "u27", ("user",)),
    ],
    "denied": [
        ("GET", "/admin/users", "", "u-outsider", ("user",)),
        ("GET", "/api/v1/projects/40", "", "u-outsider", ("user",)),
    ],
}
WARM = 1000


def middleware_at(rev: str) -> types.ModuleType:
    """``python/regoguard/middleware.py`` as it is at ``rev``, as a module."""
    src = subprocess.run(
        ["git", "-C", str(C.REPO), "show", f"{rev}:python/regoguard/middleware.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"middleware_at_{rev}")
    exec(compile(src, f"middleware@{rev}.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module


def child(rev: str, which: str, kind: str, n: int) -> None:
    """The measured program: identical in every run except for the ``n`` requests."""
    import regoguard as rg

    old = middleware_at(rev)
    fx = C.load_fixture()
    authz = rg.Authorizer(
        policies=[str(p) for p in fx.rego_files], entrypoint=C.ENTRYPOINT, data=str(fx.data_path)
    )
    bare = A.build_app()
    apps = {
        "before": old.RegoGuardMiddleware(bare, authorizer=authz, identity=A.identity),
        "after": rg.RegoGuardMiddleware(bare, authorizer=authz, identity=A.identity),
    }
    shapes = SHAPES[kind]
    scopes = [A.make_scope(shapes[i % len(shapes)]) for i in range(WARM + n)]

    async def run() -> None:
        for app in apps.values():  # warm both in every run, the base run included
            for s in scopes[:WARM]:
                await app(dict(s), A.receive, A.send)
        app = apps.get(which)
        if app is not None:
            for s in scopes[WARM:]:
                await app(s, A.receive, A.send)

    asyncio.run(run())


def instructions(rev: str, which: str, kind: str, n: int, tmp: Path) -> int:
    out = tmp / f"callgrind.{which}.{kind}"
    subprocess.run(
        [
            *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
            *(sys.executable, __file__, "--child", which, kind, str(n), "--rev", rev),
        ],
        env=dict(os.environ, PYTHONHASHSEED="0"),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    text = out.read_text()
    m = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if m is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(m.group(1))


def callgrind(rev: str, n: int) -> None:
    print(f"instructions per request, L1 hits, middleware at {rev} vs the working tree (n={n})")
    print("| requests | before | after | change |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for kind in SHAPES:
            base = instructions(rev, "none", kind, n, Path(d))
            before, after = (
                (instructions(rev, w, kind, n, Path(d)) - base) / n for w in ("before", "after")
            )
            print(
                f"| {kind} | {before:,.0f} | {after:,.0f} | {after - before:+,.0f} "
                f"({(after - before) / before:+.1%}) |",
                flush=True,
            )


def timed(rev: str, argv: list[str]) -> int:
    old = middleware_at(rev)
    original = A.build_variants

    def build_variants(args: Any, fx: Any, rg: Any, binding: Any, bare: Any, sets: Any) -> Any:
        variants, ctx = original(args, fx, rg, binding, bare, sets)
        extra = []
        for v in variants:
            if v.key in ("rg_hit", "rg_miss", "d_rg_hit", "d_rg_miss"):
                scen = "hit" if v.key.endswith("hit") else "miss"
                app = old.RegoGuardMiddleware(
                    bare, authorizer=ctx["authorizers"][scen], identity=A.identity
                )
                label = f"{v.label} [BEFORE: {rev}]"
                extra.append(
                    A.asgi_variant(
                        v.key + "_before", label, v.group, app, v.requests, v.ref, v.expect
                    )
                )
        return variants + extra, ctx

    A.build_variants = build_variants
    return A.main(argv)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the git revision of the 'before' middleware")
    ap.add_argument("--n", type=int, default=5000, help="requests per callgrind run")
    ap.add_argument("--time", action="store_true", help="wall time through bench_asgi instead")
    ap.add_argument("--child", nargs=3, metavar=("WHICH", "KIND", "N"), help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.child:
        which, kind, n = args.child
        child(args.rev, which, kind, int(n))
        return 0
    if args.time:
        return timed(args.rev, rest)
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    callgrind(args.rev, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
