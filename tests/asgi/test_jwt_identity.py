"""JWTIdentity: bearer tokens verified in Rust become input.user; every way a token can be
wrong is refused with 401; keys come from a real JWKS server on 127.0.0.1.

Tokens are made with PyJWT and ``cryptography``; no timed assertion on speed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import regoguard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

POLICY = """package authz

default allow := false

allow if input.path == "/public"

allow if {
	input.user.sub == "alice"
	input.token.alg == "RS256"
}
"""

ISSUER = "https://idp.example"
AUDIENCE = "api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    def __init__(self) -> None:
        self.k1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.k2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    @staticmethod
    def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, use="sig", alg="RS256")
        return jwk

    @staticmethod
    def pem(key: rsa.RSAPrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def token(key: rsa.RSAPrivateKey, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "roles": ["admin"],
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


class JWKSServer:
    """A JWK set served over HTTP on 127.0.0.1; ``status`` 500 plays an IdP that is down."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.status = 200
        self.cache_control = "max-age=600"
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = json.dumps(server.doc).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", server.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def jwks_server(keys: Keys) -> Iterator[JWKSServer]:
    server = JWKSServer({"keys": [Keys.jwk(keys.k1, "k1")]})
    yield server
    server.close()


def app_for(authz: regoguard.Authorizer, identity: regoguard.JWTIdentity) -> TestClient:
    async def whoami(request: Request) -> JSONResponse:
        decision = request.scope["regoguard"]
        return JSONResponse({"source": decision.source})

    app = Starlette(routes=[Route("/me", whoami), Route("/public", whoami)])
    app.add_middleware(regoguard.RegoGuardMiddleware, authorizer=authz, identity=identity)
    return TestClient(app)


@pytest.fixture
def authz(policy_dir: Any) -> regoguard.Authorizer:
    path: Path = policy_dir(POLICY)
    return regoguard.Authorizer(path)


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def identity_for(k: Keys, **kwargs: Any) -> regoguard.JWTIdentity:
    kwargs.setdefault("keys", [Keys.jwk(k.k1, "k1")])
    return regoguard.JWTIdentity(issuer=ISSUER, audience=AUDIENCE, **kwargs)


def test_a_valid_token_is_the_user_and_its_verification_is_cached(
    authz: regoguard.Authorizer, keys: Keys
) -> None:
    ident = identity_for(keys, claims=["sub", "roles"])
    client = app_for(authz, ident)
    t = token(keys.k1)
    first = client.get("/me", headers=bearer(t))
    assert first.status_code == 200, first.text
    assert first.json()["source"] == "engine"
    second = client.get("/me", headers=bearer(t))
    assert second.json()["source"] == "l1"
    stats = ident.stats()
    assert stats["hits"] >= 1 and stats["entries"] == 1
    # What the policy saw: the chosen claims and the token's metadata, nothing else.
    headers = [(b"authorization", f"Bearer {t}".encode())]
    verified = ident({"headers": headers})
    assert isinstance(verified, regoguard.VerifiedToken)
    assert verified.user == {"sub": "alice", "roles": ["admin"]}
    assert verified.claims["aud"] == AUDIENCE
    scope = {"type": "http", "method": "GET", "path": "/me", "headers": headers}
    doc = regoguard.build_input(scope, identity=ident)
    assert doc["user"] == {"sub": "alice", "roles": ["admin"]}
    assert doc["token"] == {"alg": "RS256", "kid": "k1", "exp": verified.exp}
    # Another user's token is another input.
    bob = client.get("/me", headers=bearer(token(keys.k1, sub="bob")))
    assert bob.status_code == 403


def test_no_token_is_a_null_user_unless_required(authz: regoguard.Authorizer, keys: Keys) -> None:
    client = app_for(authz, identity_for(keys))
    assert client.get("/public").status_code == 200
    assert client.get("/me").status_code == 403
    # Another scheme is no bearer token.
    assert client.get("/me", headers={"Authorization": "Basic YTpi"}).status_code == 403
    strict = app_for(authz, identity_for(keys, required=True))
    r = strict.get("/public")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def _hs256_forged(secret: bytes, payload: dict[str, Any], alg: str = "HS256") -> str:
    header = _b64(json.dumps({"alg": alg, "kid": "k1", "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    sig = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def test_every_bad_token_is_refused_with_invalid_token(
    authz: regoguard.Authorizer, keys: Keys
) -> None:
    ident = identity_for(keys, keys=[Keys.jwk(keys.k1, "k1"), Keys.pem(keys.k1)], leeway_seconds=0)
    client = app_for(authz, ident)
    now = int(time.time())
    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600}
    none_token = (
        _b64(json.dumps({"alg": "none", "kid": "k1"}).encode())
        + "."
        + _b64(json.dumps(claims).encode())
        + "."
    )
    cases = {
        "expired": token(keys.k1, exp=now - 5),
        "not_yet_valid": token(keys.k1, nbf=now + 300),
        "issuer": token(keys.k1, iss="https://evil.example"),
        "audience": token(keys.k1, aud="other"),
        "signature": token(keys.other),  # kid k1, signed by another key
        "algorithm": none_token,
        "malformed": "not.a.token",
        "too_large": "a" * 9000,
    }
    for reason, t in cases.items():
        r = client.get("/me", headers=bearer(t))
        assert r.status_code == 401, (reason, r.text)
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"', reason
        assert r.json() == {"detail": "Invalid token"}
    # Key-type confusion: HS256 "signed" with the RSA public key as the HMAC secret.
    pem = Keys.pem(keys.k1).encode()
    forged = _hs256_forged(pem, claims)
    assert client.get("/me", headers=bearer(forged)).status_code == 401
    # Even when HS256 is accepted, a PEM key is never a secret.
    loose = app_for(
        authz, identity_for(keys, keys=Keys.pem(keys.k1), algorithms=["HS256", "RS256"])
    )
    assert loose.get("/me", headers=bearer(forged)).status_code == 401
    rejections = ident.stats()["rejections"]
    for reason in cases:
        assert rejections[reason] >= 1, reason
    assert rejections["algorithm"] >= 2
    exposition = authz.metrics_text()
    assert 'regoguard_token_rejections_total{reason="expired"}' in exposition


def test_an_oversized_authorization_header_is_refused_without_parsing(
    authz: regoguard.Authorizer, keys: Keys
) -> None:
    client = app_for(authz, identity_for(keys))
    r = client.get("/me", headers=bearer("x." * 40_000))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_hs256_with_a_secret(authz: regoguard.Authorizer) -> None:
    secret = b"s" * 32
    ident = regoguard.JWTIdentity(keys=secret, algorithms=["HS256"], audience=AUDIENCE)
    client = app_for(authz, ident)
    now = int(time.time())
    good = jwt.encode({"sub": "alice", "aud": AUDIENCE, "exp": now + 60}, secret, algorithm="HS256")
    # The policy wants RS256: verified, but denied by the policy (input.token.alg says HS256).
    assert client.get("/me", headers=bearer(good)).status_code == 403
    bad = jwt.encode({"sub": "alice", "aud": AUDIENCE}, b"t" * 32, algorithm="HS256")
    assert client.get("/me", headers=bearer(bad)).status_code == 401


def test_a_decision_that_used_a_token_is_not_served_after_its_exp(
    authz: regoguard.Authorizer, keys: Keys
) -> None:
    ident = identity_for(keys, leeway_seconds=0)
    exp = int(time.time()) + 2
    t = token(keys.k1, exp=exp)
    verified = ident({"headers": [(b"authorization", f"Bearer {t}".encode())]})
    scope = {"type": "http", "method": "GET", "path": "/me", "headers": []}
    spec = regoguard._regoguard.RequestSpec()
    assert authz._check_scope(scope, spec, verified).source == "engine"
    assert authz._check_scope(scope, spec, verified).source == "l1"
    while time.time() < exp + 0.05:
        time.sleep(0.05)
    # The cached decision ended with the token (the identity itself now refuses it, too).
    assert authz._check_scope(scope, spec, verified).source == "engine"
    client = app_for(authz, ident)
    assert client.get("/me", headers=bearer(t)).status_code == 401


def test_jwks_url_unknown_kid_refreshes_and_a_down_server_keeps_the_last_good_set(
    authz: regoguard.Authorizer, keys: Keys, jwks_server: JWKSServer
) -> None:
    ident = regoguard.JWTIdentity(
        jwks_url=jwks_server.url,
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_min_refresh_seconds=0.2,
        jwks_timeout_seconds=2,
    )
    assert ident.stats()["jwks"]["keys"] == 1  # the first fetch is done at construction
    client = app_for(authz, ident)
    assert client.get("/me", headers=bearer(token(keys.k1))).status_code == 200
    # A new signing key: the first request with its kid is refused and asks for a refresh.
    jwks_server.doc = {"keys": [Keys.jwk(keys.k1, "k1"), Keys.jwk(keys.k2, "k2")]}
    t2 = token(keys.k2, kid="k2")
    assert client.get("/me", headers=bearer(t2)).status_code == 401
    deadline = time.monotonic() + 5
    while client.get("/me", headers=bearer(t2)).status_code != 200:
        assert time.monotonic() < deadline, ident.stats()
        time.sleep(0.05)
    assert ident.stats()["rejections"]["unknown_kid"] >= 1
    # Unknown kids are rate-limited: many requests, few fetches.
    before = jwks_server.requests
    for i in range(20):
        client.get("/me", headers=bearer(token(keys.k2, kid=f"nope{i}")))
    assert jwks_server.requests - before <= 3
    # The IdP goes down: the last good set keeps verifying.
    jwks_server.status = 500
    ident_stats = ident.stats()["jwks"]
    ident2 = token(keys.k2, kid="k2", sub="alice", jti="x")
    for _ in range(3):
        client.get("/me", headers=bearer(token(keys.k1, kid="unknown")))
        time.sleep(0.25)
    assert client.get("/me", headers=bearer(ident2)).status_code == 200
    stats = ident.stats()["jwks"]
    assert stats["failed"] >= 1 and stats["keys"] == 2, (ident_stats, stats)
    assert "500" in stats["error"]


def test_a_jwks_url_that_never_answers_refuses_tokens_without_failing(
    authz: regoguard.Authorizer, keys: Keys
) -> None:
    ident = regoguard.JWTIdentity(
        jwks_url="http://127.0.0.1:9/jwks.json", jwks_timeout_seconds=0.5, audience=AUDIENCE
    )
    client = app_for(authz, ident)
    r = client.get("/me", headers=bearer(token(keys.k1)))
    assert r.status_code == 401
    assert ident.stats()["jwks"]["error"]


def test_authorize_dependency_answers_401(authz: regoguard.Authorizer, keys: Keys) -> None:
    app = FastAPI()
    guard = regoguard.Authorize(authz, identity=identity_for(keys))

    @app.get("/me")
    def me(decision: regoguard.Decision = Depends(guard)) -> dict[str, bool]:  # noqa: B008
        return {"allow": decision.allow}

    client = TestClient(app)
    assert client.get("/me", headers=bearer(token(keys.k1))).json() == {"allow": True}
    r = client.get("/me", headers=bearer(token(keys.k1, exp=int(time.time()) - 100)))
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"keys": b"s" * 32, "algorithms": ["none"]},
        {"keys": b"s" * 32, "algorithms": []},
        {"keys": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
        {"jwks_url": "file:///etc/passwd"},
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(regoguard.ConfigError):
        regoguard.JWTIdentity(**kwargs)


def test_cache_control_max_age_refreshes_and_a_removed_key_stops_verifying_at_once(
    authz: regoguard.Authorizer, keys: Keys, jwks_server: JWKSServer
) -> None:
    jwks_server.cache_control = "public, max-age=1"
    ident = regoguard.JWTIdentity(
        jwks_url=jwks_server.url,
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_min_refresh_seconds=0.1,
    )
    client = app_for(authz, ident)
    t1 = token(keys.k1)
    assert client.get("/me", headers=bearer(t1)).status_code == 200
    assert client.get("/me", headers=bearer(t1)).status_code == 200  # from the token cache
    # The IdP rotates k1 out; max-age=1 brings the new set within about a second, with no
    # unknown kid to trigger it, and the cached verification of t1 is not served any more.
    jwks_server.doc = {"keys": [Keys.jwk(keys.k2, "k2")]}
    deadline = time.monotonic() + 5
    while client.get("/me", headers=bearer(t1)).status_code != 401:
        assert time.monotonic() < deadline, ident.stats()
        time.sleep(0.1)
    assert client.get("/me", headers=bearer(token(keys.k2, kid="k2"))).status_code == 200


def test_es512_tokens_verify_with_a_p521_jwk_or_pem(policy_dir: Any) -> None:
    """ES512 (P-521) is one of the default algorithms, as in OPA: a JWK and a PEM key verify
    it, a token signed by another P-521 key does not."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP521R1())
    other = ec.generate_private_key(ec.SECP521R1())
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="p521", use="sig", alg="ES512")
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    policy = POLICY.replace('input.token.alg == "RS256"', 'input.token.alg == "ES512"')
    authz = regoguard.Authorizer(policy_dir(policy))
    assert "ES512" in regoguard.JWTIdentity(keys=[jwk]).algorithms
    for keys in ([jwk], [pem]):
        ident = regoguard.JWTIdentity(issuer=ISSUER, audience=AUDIENCE, keys=keys)
        client = app_for(authz, ident)
        good = token(key, kid="p521", alg="ES512")  # type: ignore[arg-type]
        assert client.get("/me", headers=bearer(good)).status_code == 200
        forged = token(other, kid="p521", alg="ES512")  # type: ignore[arg-type]
        assert client.get("/me", headers=bearer(forged)).status_code == 401
