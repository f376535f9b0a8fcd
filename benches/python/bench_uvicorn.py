#!/usr/bin/env python3
"""uvicorn req/s of a Starlette app behind RegoGuardMiddleware against the bare app, under
both of uvicorn's stacks: h11 on asyncio and httptools on uvloop.

Usage:
    python benches/python/bench_uvicorn.py [--rounds 5] [--seconds 3] [--connections 8]

Needs ``wrk`` (``apt-get install wrk``) and, for the second stack, ``uvloop`` and
``httptools``. Every variant is one uvicorn worker on 127.0.0.1 serving this file's
``factory`` (``BENCH_VARIANT`` picks it), all started once and driven by ``wrk -t1`` in turn,
round by round, so every round compares the variants under the same machine load. With two
or more CPUs, uvicorn runs on the last and wrk on the first (``--no-pin`` to let them
float), so the two do not trade places between runs:

  bare     the Starlette app alone (one Route, ``PlainTextResponse("ok")``)
  rg       RegoGuardMiddleware with the default identity (no Starlette user), L1 hit
  rg+jwt   RegoGuardMiddleware(identity=JWTIdentity): an RS256 bearer token on every
           request (token cache hit + L1 hit)

Every request carries the same Authorization header in every variant. The figure is the
median over rounds of each round's req/s ratio to bare. Reported, never asserted; on the
shared 2-core box wrk and uvicorn compete for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

POLICY = """package authz

default allow := false

allow if input.path == "/ok"
"""


def factory() -> Any:
    """The app uvicorn serves: ``BENCH_VARIANT`` of bare, rg, rg+jwt."""
    import regoguard
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app: Any = Starlette(routes=[Route("/ok", ok)])
    variant = os.environ["BENCH_VARIANT"]
    if variant == "bare":
        return app
    authz = regoguard.Authorizer(os.environ["BENCH_POLICY_DIR"])
    if variant == "rg":
        return regoguard.RegoGuardMiddleware(app, authorizer=authz, offload_after_seconds=None)
    identity = regoguard.JWTIdentity(
        keys=Path(os.environ["BENCH_PEM"]).read_text(),
        issuer="https://idp.example",
        audience="api",
        claims=["sub", "roles"],
    )
    return regoguard.RegoGuardMiddleware(
        app, authorizer=authz, identity=identity, offload_after_seconds=None
    )


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that keeps the child on one CPU (``None``: anywhere)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def material(tmp: Path) -> str:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp / "key.pem").write_bytes(pem)
    (tmp / "authz.rego").write_text(POLICY)
    now = int(time.time())
    claims = {"sub": "u1", "iss": "https://idp.example", "aud": "api", "roles": ["reader"]}
    return jwt.encode({**claims, "exp": now + 36000}, key, algorithm="RS256")


def serve(stack: ExitStack, variant: str, loop: str, http: str, tmp: Path, cpu: int | None) -> str:
    port = free_port()
    env = {
        **os.environ,
        "BENCH_VARIANT": variant,
        "BENCH_POLICY_DIR": str(tmp),
        "BENCH_PEM": str(tmp / "key.pem"),
    }
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench_uvicorn:factory",
        "--factory",
        "--app-dir",
        str(Path(__file__).resolve().parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
        "--http",
        http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, preexec_fn=pinned(cpu))  # noqa: PLW1509
    stack.callback(proc.wait, 10)
    stack.callback(proc.terminate)
    url = f"http://127.0.0.1:{port}/ok"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn {variant} ({loop}/{http}) did not start") from None
            time.sleep(0.2)


def wrk(url: str, token: str, connections: int, seconds: int, cpu: int | None = None) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, seconds)}s",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
        preexec_fn=pinned(cpu),
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out:
        raise RuntimeError(f"wrk: unexpected output\n{out}")
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-pin", action="store_true", help="let uvicorn and wrk share the CPUs")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (None, None) if args.no_pin or len(cpus) < 2 else (cpus[-1], cpus[0])
    stacks = [("asyncio", "h11"), ("uvloop", "httptools")]
    variants = ["bare", "rg", "rg+jwt"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        token = material(tmp)
        for loop, http in stacks:
            with ExitStack() as stack:
                urls = {v: serve(stack, v, loop, http, tmp, server_cpu) for v in variants}
                for url in urls.values():  # warm: token verified, decision cached
                    wrk(url, token, args.connections, 1, client_cpu)
                rps: dict[str, list[float]] = {v: [] for v in variants}
                for r in range(args.rounds):
                    for v in variants[r % 3 :] + variants[: r % 3]:  # rotated each round
                        rps[v].append(
                            wrk(urls[v], token, args.connections, args.seconds, client_cpu)
                        )
                name = f"{http}+{loop}"
                results[name] = {
                    v: {
                        "rps_median": statistics.median(rps[v]),
                        "vs_bare_median": statistics.median(
                            x / b for x, b in zip(rps[v], rps["bare"], strict=True)
                        ),
                    }
                    for v in variants
                }
    print(f"{'stack':<18} {'variant':<8} {'req/s':>9} {'× bare':>7}")
    for name, res in results.items():
        for v, r in res.items():
            print(f"{name:<18} {v:<8} {r['rps_median']:>9.0f} {r['vs_bare_median']:>7.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
