#!/usr/bin/env python3
"""In-process ASGI benchmark: what the identity step plus RegoGuardMiddleware add to a bare
Starlette request, with the bearer token verified in Rust (``JWTIdentity``) or in Python
(PyJWT, the usual way).

Usage:
    python benches/python/bench_identity.py [--rounds N] [--batches N] [--batch N] [--json OUT]
    python benches/python/bench_identity.py --instructions   # callgrind counts per request

Variants, all in one process, interleaved batch by batch in a shuffled order each round:
  bare          the Starlette app alone (one Route, ``PlainTextResponse("ok")``)
  rg            RegoGuardMiddleware with the default identity (no Starlette user: None), L1 hit
  rg+jwt        RegoGuardMiddleware(identity=JWTIdentity(keys=RS256 public key)):
                token cache hit + L1 hit (a few users' tokens repeated)
  rg+pyjwt      RegoGuardMiddleware(identity=PyJWT ``jwt.decode`` of the same RS256 tokens in
                Python, returning the claims): L1 hit, the verification in Python every time
Requests carry the same headers in every variant (the token included). Each batch times
``--batch`` requests (``time.perf_counter_ns`` around the batch, per-request mean); "added"
is the variant's p50 over batches minus bare's, per round; the figure is the median over
rounds. ``gc`` is disabled while timing. Shared 2-core box: read the added column, not the
absolute times across runs.

``--instructions``: each variant runs ``--calls`` requests in its own
``valgrind --tool=callgrind`` process, after the same setup as an empty base run (the key and
tokens come from one file, so setup is identical); instructions per request = (run - base) /
calls, and "added" subtracts bare's. Deterministic where wall-clock times on a loaded box
are not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

POLICY = """package authz

default allow := false

allow if input.path == "/ok"
"""


def build_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/ok", ok)])


_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> dict[str, Any]:
    return _REQUEST


async def send(message: Any) -> None:
    return None


def setup(material: Path) -> tuple[dict[str, Any], Callable[[int], dict[str, Any]], Any]:
    """The variants, a scope factory and the JWTIdentity, from the key and tokens in
    ``material`` (written once by the parent, so every child run is set up identically)."""
    import jwt
    import regoguard

    doc = json.loads(material.read_text())
    pem, tokens = doc["public_pem"], doc["tokens"]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "authz.rego").write_text(POLICY)
    authz = regoguard.Authorizer(tmp)

    def pyjwt_identity(scope: Any) -> Any:
        for name, value in scope["headers"]:
            if name == b"authorization":
                raw = value.decode("latin-1")
                if raw[:7].lower() == "bearer ":
                    claims = jwt.decode(
                        raw[7:],
                        pem,
                        algorithms=["RS256"],
                        audience="api",
                        issuer="https://idp.example",
                    )
                    return {"sub": claims["sub"], "roles": claims["roles"]}
        return None

    jwt_identity = regoguard.JWTIdentity(
        keys=pem, issuer="https://idp.example", audience="api", claims=["sub", "roles"]
    )
    app = build_app()
    variants: dict[str, Any] = {
        "bare": app,
        "rg": regoguard.RegoGuardMiddleware(app, authorizer=authz, offload_after_seconds=None),
        "rg+jwt": regoguard.RegoGuardMiddleware(
            app, authorizer=authz, identity=jwt_identity, offload_after_seconds=None
        ),
        "rg+pyjwt": regoguard.RegoGuardMiddleware(
            app, authorizer=authz, identity=pyjwt_identity, offload_after_seconds=None
        ),
    }

    def scope_for(i: int) -> dict[str, Any]:
        t = tokens[i % len(tokens)]
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/ok",
            "raw_path": b"/ok",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"api.example.com"),
                (b"user-agent", b"python-httpx/0.28.1"),
                (b"accept", b"application/json"),
                (b"authorization", f"Bearer {t}".encode()),
                (b"x-request-id", b"4bf92f3577b34da6a3ce929d0e0e4736"),
            ],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }

    return variants, scope_for, jwt_identity


def make_material(path: Path) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    now = int(time.time())
    claims = {"iss": "https://idp.example", "aud": "api", "roles": ["reader"], "tenant": "acme"}
    tokens = [
        jwt.encode(
            {"sub": f"user{i}", "exp": now + 36000, "iat": now, **claims},
            key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        for i in range(8)
    ]
    path.write_text(json.dumps({"public_pem": pem, "tokens": tokens}))


async def batch(app: Callable[..., Any], scopes: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter_ns()
    for s in scopes:
        await app(s, receive, send)
    return (time.perf_counter_ns() - t0) / len(scopes) / 1000.0


def timed(args: argparse.Namespace, material: Path) -> dict[str, Any]:
    variants, scope_for, jwt_identity = setup(material)

    async def run() -> dict[str, Any]:
        # Warm: every token verified, every decision cached.
        for app_ in variants.values():
            await batch(app_, [scope_for(i) for i in range(64)])
        per_round: dict[str, list[float]] = {k: [] for k in variants}
        rng = random.Random(7)
        for _ in range(args.rounds):
            samples: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(args.batches):
                order = list(variants)
                rng.shuffle(order)
                for k in order:
                    scopes = [scope_for(i) for i in range(args.batch)]
                    gc.disable()
                    try:
                        samples[k].append(await batch(variants[k], scopes))
                    finally:
                        gc.enable()
            for k in variants:
                per_round[k].append(statistics.median(samples[k]))
        res: dict[str, Any] = {}
        for k in variants:
            added = [v - b for v, b in zip(per_round[k], per_round["bare"], strict=True)]
            res[k] = {
                "p50_us": statistics.median(per_round[k]),
                "added_p50_us": statistics.median(added),
            }
        return res

    res = asyncio.run(run())
    print(f"{'variant':<10} {'p50 µs':>8} {'added p50 µs':>13}")
    for k, v in res.items():
        print(f"{k:<10} {v['p50_us']:>8.2f} {v['added_p50_us']:>13.2f}")
    print(f"JWTIdentity: {jwt_identity.stats()['hits']} token cache hits")
    return res


def child(variant: str, calls: int, material: Path) -> None:
    variants, scope_for, _ = setup(material)
    scopes = [scope_for(i) for i in range(calls)]

    async def run() -> None:
        for app_ in variants.values():  # the same warm-up in every run, base included
            await batch(app_, [scope_for(i) for i in range(64)])
        if variant != "base":
            await batch(variants[variant], scopes)

    asyncio.run(run())


def instructions(args: argparse.Namespace, material: Path) -> dict[str, Any]:
    def ir(variant: str) -> int:
        out = material.parent / f"callgrind.{variant}.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-instr=no",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            variant,
            "--calls",
            str(args.calls),
            "--material",
            str(material),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=1800)
        for line in out.read_text().splitlines():
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
        raise RuntimeError(f"no totals in {out}")

    base = ir("base")
    per = {v: (ir(v) - base) / args.calls for v in ("bare", "rg", "rg+jwt", "rg+pyjwt")}
    res = {v: {"instructions": n, "added": n - per["bare"]} for v, n in per.items()}
    print(f"{'variant':<10} {'instr/request':>14} {'added':>10}")
    for k, v in res.items():
        print(f"{k:<10} {v['instructions']:>14,.0f} {v['added']:>10,.0f}")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--instructions", action="store_true", help="callgrind counts instead")
    ap.add_argument("--calls", type=int, default=2000, help="requests per callgrind run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--material", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.calls, args.material)
        return 0
    with tempfile.TemporaryDirectory() as t:
        material = Path(t) / "material.json"
        make_material(material)
        res = instructions(args, material) if args.instructions else timed(args, material)
    jwt_added = res["rg+jwt"]["added" if args.instructions else "added_p50_us"]
    py_added = res["rg+pyjwt"]["added" if args.instructions else "added_p50_us"]
    if jwt_added > 0:
        print(f"PyJWT identity + regoguard adds {py_added / jwt_added:.0f}x what JWTIdentity adds")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
