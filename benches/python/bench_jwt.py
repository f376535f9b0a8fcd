"""``io.jwt.decode_verify`` per call from a policy, against PyJWT's ``jwt.decode`` in Python;
``crypto.x509.parse_and_verify_certificates`` against ``cryptography``'s chain verifier.

Same process, same tokens, same keys. Each variant runs ``--calls`` timed calls per round
(``perf_counter_ns`` around each) for ``--rounds`` rounds, interleaved; the table gives the
median over rounds of each round's p50 and p99. regoguard runs with the decision cache off
so every call evaluates the policy and verifies the token; the ``policy only`` row is the
same check with a policy that does not touch the token, so the difference is what the
builtin costs.

    .venv/bin/python benches/python/bench_jwt.py [--rounds 7] [--calls 2000] [--algs HS256,RS256]

``--algs`` picks from HS256, RS256, PS256, ES256, ES512 and EdDSA (default: all) and ``x509``
(a root and a leaf, verified per call; on by default, ``--algs`` without it leaves it out).
"""

from __future__ import annotations

import argparse
import datetime
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

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
X509 = """package bench

default allow := false

allow if {
\t[valid, certs] := crypto.x509.parse_and_verify_certificates(input.chain)
\tvalid
\tcerts[0].Subject.CommonName == "leaf.example"
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


ALGS = ("HS256", "RS256", "PS256", "ES256", "ES512", "EdDSA", "x509")


def signing_key(alg: str) -> tuple[Any, Any, str]:
    """(PyJWT's signing key, PyJWT's verifying key, the PEM public key OPA's ``cert`` takes)."""
    key: Any
    if alg in ("RS256", "PS256"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "ES512":
        key = ec.generate_private_key(ec.SECP521R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    pub = key.public_key()
    pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return key, pub, pem


def chain() -> tuple[str, Callable[[], Any]]:
    """A PEM root + leaf (root first, as OPA takes it; the verified chain comes back leaf first;
    EC P-256), and cryptography's
    verification of the same chain (the leaf as a server certificate for leaf.example)."""
    now = datetime.datetime.now(datetime.UTC)

    def cert(
        subject: str, key: Any, issuer: str, signer: Any, *, ca: bool, san: bool
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        if san:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        return b.sign(signer, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    root = cert("root.example", root_key, "root.example", root_key, ca=True, san=False)
    leaf = cert("leaf.example", leaf_key, "root.example", root_key, ca=False, san=True)
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in (root, leaf))
    verifier = (
        PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName("leaf.example"))
    )
    return pem, functools.partial(verifier.verify, leaf, [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--algs", default=",".join(ALGS), help=f"comma-separated, of {ALGS}")
    args = ap.parse_args()
    algs = [a for a in args.algs.split(",") if a]
    if unknown := set(algs) - set(ALGS):
        ap.error(f"unknown --algs {sorted(unknown)}; choose from {ALGS}")

    secret = "bench-secret-0123456789abcdef0123"
    claims = {"sub": "alice", "aud": "api", "exp": int(time.time()) + 86400}
    evs: tuple[Literal["rvm"], Literal["interpreter"]] = ("rvm", "interpreter")
    variants: dict[str, Callable[[], Any]] = {}
    for alg in algs:
        if alg == "x509":
            pem, theirs = chain()
            inp: dict[str, Any] = {"chain": pem}
            for ev in evs:
                a = authorizer(X509, ev)
                assert a.check(inp).result is True, a.check(inp)
                variants[f"x509 regoguard parse_and_verify ({ev})"] = functools.partial(
                    a.check, inp
                )
            theirs()
            variants["x509 cryptography verify"] = theirs
            continue
        if alg == "HS256":
            token = jwt.encode(claims, secret, algorithm=alg)
            constraints: dict[str, Any] = {"secret": secret, "aud": "api"}
            verifying: Any = secret
        else:
            key, verifying, pub = signing_key(alg)
            token = jwt.encode(claims, key, algorithm=alg)
            constraints = {"cert": pub, "aud": "api"}
        inp = {"token": token, "constraints": constraints}
        for ev in evs:
            a = authorizer(POLICY, ev)
            assert a.check(inp).result is True, (alg, ev)
            variants[f"{alg} regoguard decode_verify ({ev})"] = functools.partial(a.check, inp)
        b = authorizer(BARE, "rvm")
        assert b.check(inp).result is True
        variants[f"{alg} regoguard policy only (rvm)"] = functools.partial(b.check, inp)
        variants[f"{alg} PyJWT jwt.decode"] = functools.partial(
            jwt.decode, token, verifying, algorithms=[alg], audience="api"
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
