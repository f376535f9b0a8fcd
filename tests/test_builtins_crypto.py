"""io.jwt.* and crypto.* against the OPA Go engine, on both evaluators, cached and not.

Keys and tokens are made here with ``cryptography`` and PyJWT; every expression is evaluated
by OPA (the oracle, strict builtin errors mapped to undefined) and by regoguard. The invalid
token cases (bad signature, ``alg: none``, expired, not yet valid, wrong issuer/audience,
malformed segments, wrong key type, oversized input) are the attack tests: none may verify.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
import regoguard
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import CertificateBuilder, Name, NameAttribute, random_serial_number
from cryptography.x509.oid import NameOID

from tests import opa_oracle
from tests._builtins_util import EVALUATORS, assert_matches_opa, same

NOW = int(time.time())
FUTURE = NOW + 3600
PAST = NOW - 3600
SECRET = "s3cret-key-material-of-64-bytes-for-hs512-0123456789abcdef012345"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_public(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _jwk_alg(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ES256"
    return "EdDSA"


def jwk_private(key: Any, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(
        pyjwt.algorithms.get_default_algorithms()[_jwk_alg(key)].to_jwk(key)
    )
    d.update(extra)
    return d


def jwk_public(key: Any, **extra: Any) -> dict[str, Any]:
    return jwk_private(key.public_key(), **extra)


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256 = ec.generate_private_key(ec.SECP256R1())
P384 = ec.generate_private_key(ec.SECP384R1())
P521 = ec.generate_private_key(ec.SECP521R1())
ED = ed25519.Ed25519PrivateKey.generate()


def certificate(key: Any) -> str:
    name = Name([NameAttribute(NameOID.COMMON_NAME, "regoguard test")])
    cert = (
        CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2100, 1, 1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


RSA_CERT = certificate(RSA)
CLAIMS = {"sub": "alice", "iss": "https://idp.example", "aud": "api", "exp": FUTURE}


def tok(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256", **headers: Any) -> str:
    return pyjwt.encode(claims, key, algorithm=alg, headers=headers or None)


def raw(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(sig)}"


def _payload_not_json() -> str:
    h = b64(b'{"alg":"HS256"}')
    p = b64(b"not json")
    s = hmac.new(SECRET.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(s)}"


HS = tok(CLAIMS)
RS = tok(CLAIMS, RSA, "RS256", kid="k1")
JWKS = json.dumps({"keys": [jwk_public(RSA_OTHER, kid="k0"), jwk_public(RSA, kid="k1")]})

# decode_verify(input.t, input.c): (token, constraints). Expected values all come from OPA.
DV: list[tuple[str, dict[str, Any]]] = [
    ("valid HS256", {"t": HS, "c": {"secret": SECRET, "aud": "api"}}),
    ("HS384", {"t": tok(CLAIMS, alg="HS384"), "c": {"secret": SECRET, "aud": "api"}}),
    ("HS512", {"t": tok(CLAIMS, alg="HS512"), "c": {"secret": SECRET, "aud": "api"}}),
    (
        "bad signature",
        {
            "t": HS[:-3] + ("AAA" if not HS.endswith("AAA") else "BBB"),
            "c": {"secret": SECRET, "aud": "api"},
        },
    ),
    (
        "wrong secret",
        {"t": HS, "c": {"secret": "other-other-other-other-other-other", "aud": "api"}},
    ),
    ("alg none", {"t": raw({"alg": "none"}, CLAIMS), "c": {"secret": SECRET, "aud": "api"}}),
    (
        "alg none with a MAC",
        {"t": raw({"alg": "none"}, CLAIMS, b"x" * 32), "c": {"secret": SECRET}},
    ),
    ("no alg", {"t": raw({"typ": "JWT"}, CLAIMS), "c": {"secret": SECRET}}),
    ("expired", {"t": tok({**CLAIMS, "exp": PAST}), "c": {"secret": SECRET, "aud": "api"}}),
    ("not yet valid", {"t": tok({**CLAIMS, "nbf": FUTURE}), "c": {"secret": SECRET, "aud": "api"}}),
    (
        "time constraint",
        {
            "t": tok({**CLAIMS, "exp": 2000, "nbf": 1000}),
            "c": {"secret": SECRET, "aud": "api", "time": 1500 * 10**9},
        },
    ),
    (
        "time after exp",
        {
            "t": tok({**CLAIMS, "exp": 2000}),
            "c": {"secret": SECRET, "aud": "api", "time": 2000 * 10**9},
        },
    ),
    (
        "exp not a number",
        {"t": tok({**CLAIMS, "exp": "soon"}), "c": {"secret": SECRET, "aud": "api"}},
    ),
    ("issuer ok", {"t": HS, "c": {"secret": SECRET, "aud": "api", "iss": "https://idp.example"}}),
    (
        "wrong issuer",
        {"t": HS, "c": {"secret": SECRET, "aud": "api", "iss": "https://evil.example"}},
    ),
    ("wrong audience", {"t": HS, "c": {"secret": SECRET, "aud": "other"}}),
    ("aud without constraint", {"t": HS, "c": {"secret": SECRET}}),
    (
        "aud list",
        {"t": tok({**CLAIMS, "aud": ["x", "api"]}), "c": {"secret": SECRET, "aud": "api"}},
    ),
    ("aud constraint, no claim", {"t": tok({"sub": "a"}), "c": {"secret": SECRET, "aud": "api"}}),
    ("alg constraint mismatch", {"t": HS, "c": {"secret": SECRET, "aud": "api", "alg": "HS512"}}),
    ("alg constraint ok", {"t": HS, "c": {"secret": SECRET, "aud": "api", "alg": "HS256"}}),
    ("two segments", {"t": ".".join(HS.split(".")[:2]), "c": {"secret": SECRET}}),
    ("four segments", {"t": HS + ".x", "c": {"secret": SECRET}}),
    ("header not base64", {"t": "%%%." + HS.split(".", 1)[1], "c": {"secret": SECRET}}),
    ("payload not JSON", {"t": _payload_not_json(), "c": {"secret": SECRET}}),
    ("no key", {"t": HS, "c": {}}),
    ("secret and cert", {"t": HS, "c": {"secret": SECRET, "cert": pem_public(RSA)}}),
    ("unknown constraint", {"t": HS, "c": {"secret": SECRET, "foo": 1}}),
    ("RS256 PEM public key", {"t": RS, "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("RS256 certificate", {"t": RS, "c": {"cert": RSA_CERT, "aud": "api"}}),
    ("RS256 JWKS by kid", {"t": RS, "c": {"cert": JWKS, "aud": "api"}}),
    ("RS256 other key", {"t": RS, "c": {"cert": pem_public(RSA_OTHER), "aud": "api"}}),
    ("RS384", {"t": tok(CLAIMS, RSA, "RS384"), "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("RS512", {"t": tok(CLAIMS, RSA, "RS512"), "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("PS256", {"t": tok(CLAIMS, RSA, "PS256"), "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("PS384", {"t": tok(CLAIMS, RSA, "PS384"), "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("PS512", {"t": tok(CLAIMS, RSA, "PS512"), "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("ES256", {"t": tok(CLAIMS, P256, "ES256"), "c": {"cert": pem_public(P256), "aud": "api"}}),
    ("ES384", {"t": tok(CLAIMS, P384, "ES384"), "c": {"cert": pem_public(P384), "aud": "api"}}),
    ("ES512", {"t": tok(CLAIMS, P521, "ES512"), "c": {"cert": pem_public(P521), "aud": "api"}}),
    (
        "ES512 JWK",
        {
            "t": tok(CLAIMS, P521, "ES512"),
            "c": {"cert": json.dumps(jwk_public(P521)), "aud": "api"},
        },
    ),
    (
        "ES512 tampered",
        {"t": tok(CLAIMS, P521, "ES512")[:-4] + "AAAA", "c": {"cert": pem_public(P521)}},
    ),
    (
        "wrong key type: ES512 token, P-256 cert",
        {"t": tok(CLAIMS, P521, "ES512"), "c": {"cert": pem_public(P256), "aud": "api"}},
    ),
    (
        "ES256 JWK",
        {
            "t": tok(CLAIMS, P256, "ES256"),
            "c": {"cert": json.dumps(jwk_public(P256)), "aud": "api"},
        },
    ),
    ("EdDSA", {"t": tok(CLAIMS, ED, "EdDSA"), "c": {"cert": pem_public(ED), "aud": "api"}}),
    ("wrong key type: HS token, RSA cert", {"t": HS, "c": {"cert": pem_public(RSA), "aud": "api"}}),
    ("wrong key type: RS token, secret", {"t": RS, "c": {"secret": SECRET, "aud": "api"}}),
    (
        "wrong key type: ES token, RSA cert",
        {"t": tok(CLAIMS, P256, "ES256"), "c": {"cert": pem_public(RSA), "aud": "api"}},
    ),
    (
        "alg confusion: HS256 signed with the RSA PEM",
        {"t": raw({"alg": "HS256"}, CLAIMS), "c": {"cert": pem_public(RSA), "aud": "api"}},
    ),
    ("garbage cert", {"t": RS, "c": {"cert": "not a key", "aud": "api"}}),
    ("oversized token", {"t": HS + "A" * 70000, "c": {"secret": SECRET}}),
    ("token not a string", {"t": 7, "c": {"secret": SECRET}}),
]


OTHER: list[tuple[str, dict[str, Any]]] = [
    ("io.jwt.decode(input.t)", {"t": HS}),
    ("io.jwt.decode(input.t)", {"t": RS}),
    ("io.jwt.decode(input.t)", {"t": "a.b"}),
    ("io.jwt.decode(input.t)", {"t": _payload_not_json()}),
    ("io.jwt.verify_hs256(input.t, input.k)", {"t": HS, "k": SECRET}),
    (
        "io.jwt.verify_hs256(input.t, input.k)",
        {"t": HS, "k": "nope-nope-nope-nope-nope-nope-nope-nope"},
    ),
    ("io.jwt.verify_hs512(input.t, input.k)", {"t": HS, "k": SECRET}),
    ("io.jwt.verify_rs256(input.t, input.k)", {"t": RS, "k": pem_public(RSA)}),
    ("io.jwt.verify_rs256(input.t, input.k)", {"t": RS, "k": RSA_CERT}),
    ("io.jwt.verify_rs256(input.t, input.k)", {"t": RS, "k": JWKS}),
    ("io.jwt.verify_rs256(input.t, input.k)", {"t": RS, "k": pem_public(RSA_OTHER)}),
    ("io.jwt.verify_rs256(input.t, input.k)", {"t": RS, "k": pem_public(P256)}),
    ("io.jwt.verify_rs256(input.t, input.k)", {"t": RS, "k": "junk"}),
    (
        "io.jwt.verify_rs384(input.t, input.k)",
        {"t": tok(CLAIMS, RSA, "RS384"), "k": pem_public(RSA)},
    ),
    (
        "io.jwt.verify_rs512(input.t, input.k)",
        {"t": tok(CLAIMS, RSA, "RS512"), "k": pem_public(RSA)},
    ),
    (
        "io.jwt.verify_ps256(input.t, input.k)",
        {"t": tok(CLAIMS, RSA, "PS256"), "k": pem_public(RSA)},
    ),
    (
        "io.jwt.verify_ps384(input.t, input.k)",
        {"t": tok(CLAIMS, RSA, "PS384"), "k": pem_public(RSA)},
    ),
    (
        "io.jwt.verify_ps512(input.t, input.k)",
        {"t": tok(CLAIMS, RSA, "PS512"), "k": pem_public(RSA)},
    ),
    (
        "io.jwt.verify_es256(input.t, input.k)",
        {"t": tok(CLAIMS, P256, "ES256"), "k": pem_public(P256)},
    ),
    (
        "io.jwt.verify_es384(input.t, input.k)",
        {"t": tok(CLAIMS, P384, "ES384"), "k": pem_public(P384)},
    ),
    (
        "io.jwt.verify_es384(input.t, input.k)",
        {"t": tok(CLAIMS, P256, "ES256"), "k": pem_public(P256)},
    ),
    (
        "io.jwt.verify_es512(input.t, input.k)",
        {"t": tok(CLAIMS, P521, "ES512"), "k": pem_public(P521)},
    ),
    (
        "io.jwt.verify_es512(input.t, input.k)",
        {"t": tok(CLAIMS, P521, "ES512"), "k": json.dumps(jwk_public(P521))},
    ),
    (
        "io.jwt.verify_es512(input.t, input.k)",
        {"t": tok(CLAIMS, P521, "ES512")[:-4] + "AAAA", "k": pem_public(P521)},
    ),
    (
        "io.jwt.verify_es512(input.t, input.k)",
        {"t": tok(CLAIMS, P521, "ES512"), "k": pem_public(P384)},
    ),
    (
        "io.jwt.verify_es512(input.t, input.k)",
        {"t": tok(CLAIMS, P384, "ES384"), "k": pem_public(P384)},
    ),
    ("io.jwt.verify_eddsa(input.t, input.k)", {"t": tok(CLAIMS, ED, "EdDSA"), "k": pem_public(ED)}),
    (
        "io.jwt.verify_eddsa(input.t, input.k)",
        {"t": tok(CLAIMS, ED, "EdDSA"), "k": json.dumps(jwk_public(ED))},
    ),
    # Deterministic signatures compare exactly (HMAC, RSA PKCS#1 v1.5).
    (
        'io.jwt.encode_sign({"alg": "HS256", "typ": "JWT"}, {"sub": "a", "n": 1, "h": "<&>"}, input.k)',
        {"k": {"kty": "oct", "k": b64(SECRET.encode())}},
    ),
    (
        'io.jwt.encode_sign_raw(`{"alg":"HS256"}`, `{"sub":"a"}`, input.k)',
        {"k": json.dumps({"kty": "oct", "k": b64(SECRET.encode())})},
    ),
    ('io.jwt.encode_sign({"alg": "RS256"}, {"sub": "a"}, input.k)', {"k": jwk_private(RSA)}),
    (
        'io.jwt.encode_sign({"alg": "none"}, {"sub": "a"}, input.k)',
        {"k": {"kty": "oct", "k": "a2V5"}},
    ),
    # Randomized signatures: what one signs, the other's verifier accepts.
    (
        'io.jwt.verify_es256(io.jwt.encode_sign({"alg": "ES256"}, {"sub": "a"}, input.k), input.p)',
        {"k": jwk_private(P256), "p": pem_public(P256)},
    ),
    (
        'io.jwt.verify_es512(io.jwt.encode_sign({"alg": "ES512"}, {"sub": "a"}, input.k), input.p)',
        {"k": jwk_private(P521), "p": pem_public(P521)},
    ),
    (
        'io.jwt.decode_verify(io.jwt.encode_sign({"alg": "ES512"}, {"sub": "a"}, input.k), input.c)',
        {"k": jwk_private(P521), "c": {"cert": pem_public(P521)}},
    ),
    (
        'io.jwt.encode_sign({"alg": "ES512"}, {"sub": "a"}, input.k)',
        {"k": jwk_private(P521, x=jwk_private(P384)["x"])},
    ),
    (
        'io.jwt.verify_ps256(io.jwt.encode_sign({"alg": "PS256"}, {"sub": "a"}, input.k), input.p)',
        {"k": jwk_private(RSA), "p": pem_public(RSA)},
    ),
    (
        'io.jwt.verify_eddsa(io.jwt.encode_sign({"alg": "EdDSA"}, {"sub": "a"}, input.k), input.p)',
        {"k": jwk_private(ED), "p": pem_public(ED)},
    ),
    ("crypto.md5(input.a)", {"a": "hello"}),
    ("crypto.sha1(input.a)", {"a": "hello"}),
    ("crypto.sha256(input.a)", {"a": ""}),
    ("crypto.sha256(input.a)", {"a": 5}),
    ("crypto.hmac.md5(input.a, input.b)", {"a": "msg", "b": "key"}),
    ("crypto.hmac.sha1(input.a, input.b)", {"a": "msg", "b": "key"}),
    ("crypto.hmac.sha256(input.a, input.b)", {"a": "msg", "b": "key"}),
    ("crypto.hmac.sha512(input.a, input.b)", {"a": "msg", "b": ""}),
    ("crypto.hmac.equal(input.a, input.b)", {"a": "abc", "b": "abc"}),
    ("crypto.hmac.equal(input.a, input.b)", {"a": "abc", "b": "abd"}),
    ("crypto.hmac.equal(input.a, input.b)", {"a": "abc", "b": 1}),
]

# The shape of OPA's HTTP-API tutorial: allow only on a verified token of alice's.
VERIFIED_ALICE = (
    "package t\n\ndefault allow := false\n\nallow if {\n"
    '\t[valid, _, payload] := io.jwt.decode_verify(input.t, input.c)\n\tvalid\n\tpayload.sub == "alice"\n}\n'
)

CASES = [
    pytest.param("io.jwt.decode_verify(input.t, input.c)", c, id=f"decode_verify: {n}")
    for n, c in DV
] + [pytest.param(e, i, id=f"{e.split('(')[0]}#{k}") for k, (e, i) in enumerate(OTHER)]


@pytest.mark.parametrize(("expr", "inp"), CASES)
def test_matches_opa_on_both_evaluators_cached_and_not(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], expr: str, inp: Any
) -> None:
    assert_matches_opa(opa, authorizer, expr, inp)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n, _ in DV
        if n
        not in {
            "valid HS256",
            "HS384",
            "HS512",
            "time constraint",
            "issuer ok",
            "aud list",
            "alg constraint ok",
        }
        and not n.startswith(("RS", "PS", "ES", "EdDSA"))
    ],
)
def test_an_invalid_token_never_grants(
    authorizer: Callable[..., regoguard.Authorizer], name: str
) -> None:
    """The shape of OPA's HTTP-API tutorial: allow only on a verified token. No invalid case
    may allow, on either evaluator; each is denied (false) or undefined, never an error 500."""
    inp = dict(DV)[name]
    for evaluator in EVALUATORS:
        authz = authorizer(VERIFIED_ALICE, entrypoint="data.t.allow", evaluator=evaluator)
        assert authz.check(inp).result is False, f"{evaluator}: {name} granted"


def test_valid_rs256_grants_on_both_evaluators(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    for evaluator in EVALUATORS:
        authz = authorizer(VERIFIED_ALICE, entrypoint="data.t.allow", evaluator=evaluator)
        assert authz.check({"t": RS, "c": {"cert": JWKS, "aud": "api"}}).result is True


def test_opa_oracle_undefined_is_our_undefined_marker() -> None:
    assert same(opa_oracle.UNDEFINED, opa_oracle.UNDEFINED)
