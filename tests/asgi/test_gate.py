"""The middleware's native gate (src/bindings/gate.rs): an allowed L1 hit runs no Python of the
middleware, and everything else answers exactly as the Python path does.

The differential test runs one scope through a gated middleware and through a twin forced onto
the Python path (``_entry = _call``), with the same authorizer and identity: same status, same
body, same headers, same ``scope["regoguard"]`` seen by the app, for allowed, denied, failing,
excluded, websocket, lifespan and malformed scopes, identities that raise or return users, and
JWTs good and bad.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import regoguard
import uvicorn
from regoguard import JWTIdentity, RegoGuardMiddleware
from starlette.authentication import SimpleUser

POLICY = """package authz

default allow := {"allow": false, "reason": "forbidden"}

allow := "broken" if input.path == "/error"

allow := {"allow": true, "reason": json.marshal(input)} if {
	input.path != "/error"
	not startswith(input.path, "/deny")
	not input.user.id == "mallory"
	not input.user.sub == "mallory"
}
"""

SECRET = b"k" * 32
ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def token(sub: str, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600, **claims}, SECRET, "HS256")


class Run:
    """Calls an ASGI app and records what it answered and what the app saw."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def app(self) -> Callable[..., Any]:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            decision = scope.get("regoguard")
            self.seen.append(None if decision is None else (decision.allow, decision.reason))
            if scope["type"] == "lifespan":
                return
            if scope["type"] == "websocket":
                await send({"type": "websocket.accept"})
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"app"})

        return app


def answer(mw: Any, scope: Any) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def go() -> None:
        try:
            await mw(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - compared below
            sent.append(("raised", type(exc).__name__))

    asyncio.run(go())
    # Error ids are fresh per request: compare their shape.
    return [json.loads(ID.sub(b"ID", json.dumps(m, default=repr).encode())) for m in sent]


def twins(authz: regoguard.Authorizer, **kwargs: Any) -> tuple[Any, Any, Run, Run]:
    a, b = Run(), Run()
    gated = RegoGuardMiddleware(a.app(), authorizer=authz, **kwargs)
    python = RegoGuardMiddleware(b.app(), authorizer=authz, **kwargs)
    python._entry = python._call
    assert type(gated._entry).__name__ == "_Gate"
    return gated, python, a, b


def http(path: str = "/ok", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"x")],
        **extra,
    }


SCOPES: list[Any] = [
    http(),
    http("/deny"),
    http("/error"),
    http("/health"),
    http("/static/app.js"),
    http("/ok", query_string=b"a=1&a=2"),
    http("/ok", headers=[(b"x-tenant", b"acme")]),
    {"type": "websocket", "path": "/ok", "headers": [], "query_string": b""},
    {"type": "websocket", "path": "/deny", "headers": [], "query_string": b""},
    {"type": "lifespan"},
    {"type": "http"},  # no method, no path: 400
    {"type": b"http", "path": "/ok"},  # not a str type
    {"path": "/ok"},  # no type
    http("/\ud800"),  # a lone surrogate: not UTF-8
    http(7),  # type: ignore[arg-type]
    http("/ok", headers="nope"),
    http("/ok", query_string="text"),
    http("/ok", user=SimpleUser("alice")),
    http("/ok", user=SimpleUser("mallory")),
]


@pytest.mark.parametrize("index", range(len(SCOPES)))
def test_the_gate_answers_as_the_python_path(
    authorizer: Callable[..., regoguard.Authorizer], index: int
) -> None:
    authz = authorizer(POLICY)
    gated, python, a, b = twins(
        authz, exclude_paths=["/health", "/static/*"], include_headers=["x-tenant"]
    )
    for _ in range(2):  # a miss, then a hit
        assert answer(gated, dict(SCOPES[index])) == answer(python, dict(SCOPES[index]))
    assert a.seen == b.seen


IDENTITIES: list[Callable[[Any], Any]] = [
    lambda s: {"id": "alice"},
    lambda s: {"id": "mallory"},
    lambda s: {"id": {1, 2}},  # no JSON form: 400
    lambda s: 1 / 0,  # raises: 500
]


@pytest.mark.parametrize("index", range(len(IDENTITIES)))
def test_identities_answer_as_on_the_python_path(
    authorizer: Callable[..., regoguard.Authorizer], index: int
) -> None:
    gated, python, a, b = twins(authorizer(POLICY), identity=IDENTITIES[index])
    for _ in range(2):
        assert answer(gated, http()) == answer(python, http())
    assert a.seen == b.seen


@pytest.mark.parametrize(
    "header",
    [
        None,
        f"Bearer {token('alice')}",
        f"Bearer {token('mallory')}",
        f"Bearer {token('alice', exp=int(time.time()) - 600)}",  # expired: 401
        f"Bearer {jwt.encode({'sub': 'alice'}, b'x' * 32, 'HS256')}",  # bad signature: 401
        "Bearer a.b.c",
        "Basic YWxpY2U6cHc=",
    ],
)
def test_jwt_identity_answers_as_on_the_python_path(
    authorizer: Callable[..., regoguard.Authorizer], header: str | None
) -> None:
    identity = JWTIdentity(keys=[SECRET], algorithms=["HS256"])
    gated, python, a, b = twins(authorizer(POLICY), identity=identity)
    headers = [] if header is None else [(b"authorization", header.encode())]
    for _ in range(2):
        assert answer(gated, http(headers=headers)) == answer(python, http(headers=headers))
    assert a.seen == b.seen


def test_an_allowed_hit_hands_back_the_apps_own_coroutine(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    run = Run()
    app = run.app()
    mw = RegoGuardMiddleware(app, authorizer=authorizer(POLICY))
    answer(mw, http())  # the miss
    scope = http()
    coro = mw(scope, None, None)
    try:
        assert coro.cr_code is app.__code__  # no coroutine of the middleware around it
        assert scope["regoguard"].allow
    finally:
        coro.close()
    denied = mw(http("/deny"), None, None)
    try:
        assert denied.cr_code is not app.__code__
    finally:
        denied.close()


def test_servers_still_see_an_asgi3_app(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    mw = RegoGuardMiddleware(Run().app(), authorizer=authorizer(POLICY))
    assert asyncio.iscoroutinefunction(mw.__call__)
    config = uvicorn.Config(mw, lifespan="off")
    config.load()
    assert config.interface == "asgi3"


def test_the_gate_is_only_for_the_plain_path(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    authz = authorizer(POLICY)

    async def async_identity(scope: Any) -> None:
        return None

    for kwargs in (
        {"include_body": True},
        {"input_builder": lambda scope, user, body: {"path": scope["path"]}},
        {"identity": async_identity},
        {"shadow": authz},
    ):
        mw = RegoGuardMiddleware(Run().app(), authorizer=authz, **kwargs)
        assert mw._entry == mw._call, kwargs


def test_an_app_error_reaches_the_server_unchanged(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise LookupError("from the app")

    mw = RegoGuardMiddleware(app, authorizer=authorizer(POLICY))
    for _ in range(2):
        with pytest.raises(LookupError, match="from the app"):
            asyncio.run(mw(http(), None, None))  # type: ignore[arg-type]


def test_left_out_headers_and_query_reach_the_policy_empty(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    """The request bytes leave out empty headers and query; the policy still sees them."""
    run = Run()
    mw = RegoGuardMiddleware(run.app(), authorizer=authorizer(POLICY))
    for _ in range(2):
        answer(mw, http())
    seen = [json.loads(reason) for _, reason in run.seen]
    assert seen[0] == seen[1]
    assert {k: seen[0][k] for k in ("headers", "header_values", "query")} == {
        "headers": {},
        "header_values": {},
        "query": {},
    }
    assert seen[0]["path_segments"] == ["ok"]
