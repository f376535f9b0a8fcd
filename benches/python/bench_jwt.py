"""``io.jwt.decode_verify`` per call from a policy, against PyJWT's ``jwt.decode`` in Python.

Same process, same tokens, same keys. Each variant runs ``--calls`` timed calls per round
(``perf_counter_ns`` around each) for ``--rounds`` rounds, interleaved; the table gives the
median over rounds of each round's p50 and p99. regoguard runs with the decision cache off
so every call evaluates the policy and verifies the token; the ``policy only`` row is the
same check with a policy that does not touch the token, so the difference is what the
builtin costs.

    .venv/bin/python benches/python/bench_jwt.py [--rounds 7] [--calls 2000]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jwt
import regoguard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as H

POLICY = """package bench

default allow := false

allow if {
\t[valid, _, payload] := io.jwt.decode_verify(input.token, input.constraints)
\tvalid
\tpayload.sub == "alice"
}
"""
BARE = """package bench

default allow := false

allow if {
\tinput.token != ""
\tinput.constraints.aud == "api"
}
"""


def authorizer(text: str, evaluator: Literal["rvm", "interpreter"]) -> regoguard.Authorizer:
    d = Path(tempfile.mkdtemp(prefix="bench-jwt-"))
    (d / "p.rego").write_text(text)
    return regoguard.Authorizer(d, entrypoint="data.bench.allow", evaluator=evaluator, cache=None)


def percentiles(f: Callable[[], Any], calls: int) -> tuple[float, float]:
    """p50 and p99 in µs of ``calls`` calls of ``f``, timed one by one."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        f()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return H.pct(times, 50) / 1000, H.pct(times, 99) / 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()

    secret = "bench-secret-0123456789abcdef0123"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    claims = {"sub": "alice", "aud": "api", "exp": int(time.time()) + 86400}
    hs = jwt.encode(claims, secret, algorithm="HS256")
    rs = jwt.encode(claims, key, algorithm="RS256")
    pub_obj = key.public_key()

    variants: dict[str, Callable[[], Any]] = {}
    for alg, token, constraints in (
        ("HS256", hs, {"secret": secret, "aud": "api"}),
        ("RS256", rs, {"cert": pub, "aud": "api"}),
    ):
        inp = {"token": token, "constraints": constraints}
        evs: tuple[Literal["rvm"], Literal["interpreter"]] = ("rvm", "interpreter")
        for ev in evs:
            a = authorizer(POLICY, ev)
            assert a.check(inp).result is True
            variants[f"{alg} regoguard decode_verify ({ev})"] = functools.partial(a.check, inp)
        b = authorizer(BARE, "rvm")
        assert b.check(inp).result is True
        variants[f"{alg} regoguard policy only (rvm)"] = functools.partial(b.check, inp)
        k: Any = secret if alg == "HS256" else pub_obj
        variants[f"{alg} PyJWT jwt.decode"] = functools.partial(
            jwt.decode, token, k, algorithms=[alg], audience="api"
        )

    results: dict[str, list[tuple[float, float]]] = {n: [] for n in variants}
    for _ in range(args.rounds):
        for name, f in variants.items():
            percentiles(f, 100)  # warm
            results[name].append(percentiles(f, args.calls))

    print(f"rounds={args.rounds} calls/round={args.calls}; median over rounds of p50 / p99 (µs)")
    print(f"{'variant':48} {'p50':>8} {'p99':>8}")
    for name, rs_ in results.items():
        p50 = statistics.median(r[0] for r in rs_)
        p99 = statistics.median(r[1] for r in rs_)
        print(f"{name:48} {p50:8.1f} {p99:8.1f}")


if __name__ == "__main__":
    main()
