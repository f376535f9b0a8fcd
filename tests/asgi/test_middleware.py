"""RegoGuardMiddleware, Starlette style: every status, defaults, exclusions, body replay,
websockets, lifespan, and bad requests that must neither crash nor grant."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import regoguard
from regoguard import RegoGuardMiddleware
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

POLICY = """package authz

default allow := {"allow": false, "reason": "forbidden"}

allow := {"allow": false, "status": 401, "reason": "login required", "headers": {"WWW-Authenticate": "Bearer"}} if {
	input.path == "/private"
	input.user == null
} else := "broken" if {
	input.path == "/error"
} else := {"allow": true, "reason": "ok"} if {
	ok
}

ok if input.path == "/open"

ok if {
	input.path == "/private"
	input.user.id == "alice"
}

ok if {
	input.path == "/tenant"
	input.headers["x-tenant"] == "acme"
}

ok if input.query.tag == ["a", "b"]

ok if input.body.amount < 100

ok if input.raw_body.text == "hello"

ok if {
	input.websocket
	input.path == "/ws-open"
}
"""


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> regoguard.Authorizer:
    d: Path = tmp_path_factory.mktemp("mw")
    (d / "authz.rego").write_text(POLICY)
    return regoguard.Authorizer(d)


async def echo(request: Request) -> JSONResponse:
    decision = request.scope.get("regoguard")
    body = await request.body()
    return JSONResponse(
        {
            "reason": decision.reason if decision is not None else None,
            "source": decision.source if decision is not None else None,
            "has_decision": "regoguard" in request.scope,
            "body": body.decode(),
        }
    )


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


ROUTES = [
    Route("/{path:path}", echo, methods=["GET", "POST", "PUT", "DELETE"]),
    WebSocketRoute("/ws-open", ws_endpoint),
    WebSocketRoute("/ws-closed", ws_endpoint),
]


@pytest.fixture
def client_for(authz: regoguard.Authorizer) -> Callable[..., TestClient]:
    def make(*, middleware: list[Middleware] | None = None, **kwargs: Any) -> TestClient:
        kwargs.setdefault("authorizer", authz)
        stack = [*(middleware or []), Middleware(RegoGuardMiddleware, **kwargs)]
        return TestClient(Starlette(routes=ROUTES, middleware=stack))

    return make


def test_allow_puts_the_decision_in_scope(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    r = client.get("/open")
    assert r.status_code == 200
    assert r.json()["reason"] == "ok" and r.json()["source"] == "engine"
    assert client.get("/open").json()["source"] == "l1"


def test_deny_is_403_json(client_for: Callable[..., TestClient]) -> None:
    r = client_for().get("/closed")
    assert (r.status_code, r.json()) == (403, {"detail": "forbidden"})
    assert r.headers["content-type"] == "application/json"


def test_policy_401_with_www_authenticate(client_for: Callable[..., TestClient]) -> None:
    r = client_for().get("/private")
    assert (r.status_code, r.json()) == (401, {"detail": "login required"})
    assert r.headers["www-authenticate"] == "Bearer"


class Backend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = conn.headers.get("x-user")
        return (AuthCredentials(["read"]), SimpleUser(name)) if name else None


def test_identity_from_starlette_authentication(client_for: Callable[..., TestClient]) -> None:
    client = client_for(middleware=[Middleware(AuthenticationMiddleware, backend=Backend())])
    assert client.get("/private", headers={"x-user": "alice"}).status_code == 200
    assert client.get("/private", headers={"x-user": "bob"}).status_code == 403
    assert client.get("/private").status_code == 401


def test_custom_identity(client_for: Callable[..., TestClient]) -> None:
    client = client_for(identity=lambda scope: {"id": "alice"})
    assert client.get("/private").status_code == 200


def test_evaluation_error_is_500_without_policy_detail(
    client_for: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="regoguard"):
        r = client_for().get("/error")
    assert r.status_code == 500
    assert "broken" not in r.text and "data.authz" not in r.text
    error_id = r.json()["detail"].split("error ")[1].rstrip(")")
    assert any(
        error_id in rec.getMessage() and "data.authz.allow" in rec.getMessage()
        for rec in caplog.records
    )


def test_on_error_and_on_deny_hooks(client_for: Callable[..., TestClient]) -> None:
    def on_error(scope: Any, exc: BaseException) -> Any:
        assert isinstance(exc, regoguard.EvaluationError)
        return PlainTextResponse("custom error", status_code=503)

    def on_deny(scope: Any, decision: regoguard.Decision) -> Any:
        return (
            PlainTextResponse(f"no: {decision.reason}", status_code=404)
            if scope["path"] == "/hide"
            else None
        )

    client = client_for(on_error=on_error, on_deny=on_deny)
    assert (client.get("/error").status_code, client.get("/error").text) == (503, "custom error")
    assert (client.get("/hide").status_code, client.get("/hide").text) == (404, "no: forbidden")
    assert client.get("/other").status_code == 403


def test_fail_open_is_explicit_logged_and_counted(
    authz: regoguard.Authorizer, caplog: pytest.LogCaptureFixture
) -> None:
    mw = RegoGuardMiddleware(Starlette(routes=ROUTES), authorizer=authz, fail_open=True)
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        r = TestClient(mw).get("/error")
    assert r.status_code == 200 and r.json()["has_decision"] is True and r.json()["reason"] is None
    assert mw.failed_open == 1
    assert any("fail_open" in rec.getMessage() for rec in caplog.records)


def test_exclude_paths_exact_and_prefix(client_for: Callable[..., TestClient]) -> None:
    client = client_for(exclude_paths=["/health", "/static/*"])
    for path in ("/health", "/static/app.js", "/static/"):
        r = client.get(path)
        assert r.status_code == 200 and r.json()["has_decision"] is False, path
    assert client.get("/healthz").status_code == 403
    assert client.get("/health/x").status_code == 403


def test_lifespan_and_other_scopes_pass_through(authz: regoguard.Authorizer) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(RegoGuardMiddleware, authorizer=authz)],
    )
    with TestClient(app) as client:
        assert client.get("/open").status_code == 200
    assert events == ["startup", "shutdown"]


def test_websocket_handshakes_are_authorized(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    with client.websocket_connect("/ws-open") as ws:
        assert ws.receive_text() == "hello"
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws-closed"):
        pass
    assert info.value.code == 1008


def test_headers_are_allow_listed(client_for: Callable[..., TestClient]) -> None:
    client = client_for(include_headers=["X-Tenant"])
    assert client.get("/tenant", headers={"x-tenant": "acme"}).status_code == 200
    assert client.get("/tenant", headers={"x-tenant": "other"}).status_code == 403
    # Not allow-listed: invisible to the policy.
    assert client_for().get("/tenant", headers={"x-tenant": "acme"}).status_code == 403


def test_query_keeps_multiple_values(client_for: Callable[..., TestClient]) -> None:
    client = client_for()
    assert client.get("/q?tag=a&tag=b").status_code == 200
    assert client.get("/q?tag=b&tag=a").status_code == 403
    assert client.get("/q?tag=a").status_code == 403


def test_body_is_read_once_checked_and_replayed(client_for: Callable[..., TestClient]) -> None:
    client = client_for(include_body=True, max_body_bytes=64)
    r = client.post("/pay", json={"amount": 5})
    assert r.status_code == 200 and json.loads(r.json()["body"]) == {"amount": 5}
    assert client.post("/pay", json={"amount": 500}).status_code == 403
    assert (
        client.post(
            "/pay", content=b'{"amount": ', headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    assert (
        client.post(
            "/pay", content=b"NaN", headers={"content-type": "application/json"}
        ).status_code
        == 400
    )
    r = client.post("/note", content=b"hello", headers={"content-type": "text/plain"})
    assert r.status_code == 200 and r.json()["body"] == "hello"
    assert client.post("/pay", json={"amount": 5, "pad": "x" * 100}).status_code == 413


def test_body_over_limit_without_content_length_is_413(authz: regoguard.Authorizer) -> None:
    received: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    chunks = [b"x" * 40, b"x" * 40, b"x" * 40]

    async def receive() -> dict[str, Any]:
        received.append(1)
        return {
            "type": "http.request",
            "body": chunks[len(received) - 1],
            "more_body": len(received) < 3,
        }

    mw = RegoGuardMiddleware(app, authorizer=authz, include_body=True, max_body_bytes=64)
    sent = asyncio.run(_call(mw, _scope("/pay", method="POST"), receive))
    assert sent[0]["status"] == 413
    assert len(received) == 2, "stops reading at the limit"


def test_body_is_ignored_by_default(client_for: Callable[..., TestClient]) -> None:
    # Without include_body the policy never sees input.body, so the body rule cannot fire.
    r = client_for().post("/pay", json={"amount": 5})
    assert r.status_code == 403


def _scope(path: str, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "headers": [],
    }
    scope.update(extra)
    return scope


async def _call(app: Any, scope: dict[str, Any], receive: Any = None) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def default_receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive or default_receive, send)
    return sent


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("scope", "status"),
    [
        # A path that is not valid Unicode (a lone surrogate) has no JSON form: 400, not a crash.
        (_scope("/\udcff"), 400),
        # Header values are latin-1: any byte decodes, the request is simply decided.
        (_scope("/tenant", headers=[(b"x-tenant", b"\xff\xfe")]), 403),
        # A repeated header: the first value decides, as the app's request.headers.get() reads.
        (_scope("/tenant", headers=[(b"x-tenant", b"acme"), (b"x-tenant", b"evil")]), 200),
        (_scope("/tenant", headers=[(b"x-tenant", b"evil"), (b"x-tenant", b"acme")]), 403),
        # A raw upper-case name (no ASGI server sends one) is invisible to Starlette's lookup,
        # so the policy does not see it either.
        (_scope("/tenant", headers=[(b"X-Tenant", b"acme")]), 403),
        (_scope("/tenant", headers=[(b"x-tenant", b"acme")]), 200),
        # A 200 kB query string is decided like any other.
        (_scope("/q", query_string=b"tag=a&" + b"x=1&" * 50_000 + b"tag=b"), 200),
        # Percent-escapes that are not UTF-8 become U+FFFD, as in Starlette.
        (_scope("/q", query_string=b"tag=%ff"), 403),
        # A malformed scope (no method) is a bad request, never a grant.
        ({k: v for k, v in _scope("/open").items() if k != "method"}, 400),
        (_scope("/open", query_string="tag=a"), 400),
    ],
)
def test_bad_requests_never_crash_or_grant(
    authz: regoguard.Authorizer, scope: dict[str, Any], status: int
) -> None:
    mw = RegoGuardMiddleware(ok_app, authorizer=authz, include_headers=["x-tenant"])
    sent = asyncio.run(_call(mw, scope))
    assert sent[0]["status"] == status


def test_constructor_defaults(authz: regoguard.Authorizer) -> None:
    mw = RegoGuardMiddleware(ok_app, authorizer=authz)
    assert mw.include_headers == () and mw.include_body is False and mw.max_body_bytes == 65536
    assert mw.fail_open is False and mw.failed_open == 0
    assert mw.identity is regoguard.default_identity
    assert mw.on_deny is None and mw.on_error is None and mw.input_builder is None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"authorizer": object()}, TypeError),
        ({"max_body_bytes": -1}, regoguard.ConfigError),
        ({"max_body_bytes": "1"}, regoguard.ConfigError),
        ({"exclude_paths": ["health"]}, regoguard.ConfigError),
        ({"exclude_paths": "/health"}, regoguard.ConfigError),
        ({"include_headers": "x-tenant"}, regoguard.ConfigError),
        ({"on_deny": 3}, TypeError),
    ],
)
def test_constructor_validation(
    authz: regoguard.Authorizer, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    kwargs.setdefault("authorizer", authz)
    with pytest.raises(error):
        RegoGuardMiddleware(ok_app, **kwargs)


def test_input_builder_replaces_the_document(client_for: Callable[..., TestClient]) -> None:
    client = client_for(input_builder=lambda scope, user, body: {"path": "/open"})
    assert client.get("/anything").status_code == 200


def test_build_input_documents_what_the_policy_sees() -> None:
    scope = _scope(
        "/api/v1/projects/42",
        query_string=b"tag=a&tag=b&q=x+y",
        headers=[(b"x-tenant", b"acme"), (b"cookie", b"secret"), (b"x-tenant", b"b")],
    )
    assert regoguard.build_input(
        scope, include_headers=["X-Tenant"], identity=lambda s: {"id": "u1"}
    ) == {
        "header_values": {"x-tenant": ["acme", "b"]},
        "headers": {"x-tenant": "acme"},
        "method": "GET",
        "path": "/api/v1/projects/42",
        "path_segments": ["api", "v1", "projects", "42"],
        "query": {"q": ["x y"], "tag": ["a", "b"]},
        "user": {"id": "u1"},
    }
    assert regoguard.build_input({**scope, "type": "websocket"}, body={"a": 1})["websocket"] is True
