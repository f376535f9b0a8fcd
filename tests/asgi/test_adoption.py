"""The fixes a real FastAPI app needed (issue 14): full route templates with included routers
and mounts, async identity/input callables, WARNING-level causes, exclude_paths patterns,
package entrypoints, the Rego v0 hint, the client-facing 403 detail, and the fastapi-opa
preset."""

# No `from __future__ import annotations`: FastAPI must resolve the local `Depends(guard)`.

import functools
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import regoguard
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from regoguard import Authorize, Decision, RegoGuardMiddleware
from regoguard import _logging as rg_logging
from regoguard.presets import fastapi_opa, fastapi_opa_input

ROUTES = """package routes

default allow := false

allow if input.route in {
	"/api/v1/items/{item_id}",
	"/api/v1/admin/users/{user_id}/items/{item_id}",
	"/v2/items/{item_id}",
	"/sub/things/{thing}",
}
"""


def header_user(scope: Any) -> dict[str, str] | None:
    for k, v in scope.get("headers", ()):
        if k == b"x-user":
            return {"id": v.decode()}
    return None


@pytest.fixture
def routes_authz(authorizer: Callable[..., regoguard.Authorizer]) -> regoguard.Authorizer:
    return authorizer(ROUTES, entrypoint="data.routes.allow")


# -- Authorize: the full route template -----------------------------------------------------


def routed_app(authz: regoguard.Authorizer) -> FastAPI:
    guard = Authorize(authz)
    items = APIRouter(prefix="/items")

    @items.get("/{item_id}")
    def item(item_id: int, decision: Annotated[Decision, Depends(guard)]) -> dict[str, Any]:
        return {"item": item_id, "source": decision.source}

    users = APIRouter(prefix="/users/{user_id}")
    users.include_router(items)
    admin = APIRouter()
    admin.include_router(users, prefix="/admin")
    api = APIRouter()
    api.include_router(items)
    api.include_router(admin)
    app = FastAPI()
    app.include_router(api, prefix="/api/v1")
    app.include_router(items, prefix="/v2")
    sub = FastAPI()

    @sub.get("/things/{thing}")
    def thing(thing: str, decision: Annotated[Decision, Depends(guard)]) -> dict[str, Any]:
        return {"thing": thing}

    @sub.get("/other")
    def other(decision: Annotated[Decision, Depends(guard)]) -> dict[str, Any]:
        return {}

    app.mount("/sub", sub)
    return app


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/items/3",  # include_router(prefix=...) around a router with its own prefix
        "/api/v1/admin/users/7/items/3",  # nested routers, prefixes with parameters
        "/v2/items/3",  # the same router included twice under another prefix
        "/sub/things/a",  # a mounted FastAPI app
    ],
)
def test_authorize_sees_the_full_route_template(
    routes_authz: regoguard.Authorizer, path: str
) -> None:
    client = TestClient(routed_app(routes_authz))
    r = client.get(path)
    assert r.status_code == 200, r.text


def test_the_router_relative_template_is_not_what_the_policy_sees(
    routes_authz: regoguard.Authorizer,
) -> None:
    seen: list[str] = []
    app = FastAPI()
    router = APIRouter()

    def spy(request: Any) -> dict[str, Any]:
        from regoguard.dependencies import route_template

        seen.append(route_template(request.scope))
        return {"route": seen[-1]}

    @router.get("/items/{item_id}")
    def item(
        item_id: int, d: Annotated[Decision, Depends(Authorize(routes_authz, input=spy))]
    ) -> dict[str, Any]:
        return {}

    app.include_router(router, prefix="/api/v1")
    assert TestClient(app).get("/api/v1/items/1").status_code == 200
    assert seen == ["/api/v1/items/{item_id}"]
    # A route the policy does not list (the mount's other route) is still denied.
    assert TestClient(routed_app(routes_authz)).get("/sub/other").status_code == 403


# -- async identity and input ---------------------------------------------------------------

WHO = """package authz

default allow := false

allow if input.user.id == "alice"
"""


def test_async_identity_is_awaited_once_by_the_middleware(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    calls: list[str] = []

    async def identity(scope: Any) -> dict[str, str] | None:
        calls.append(scope["path"])
        return header_user(scope)

    app = FastAPI()

    @app.get("/x")
    def x() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(RegoGuardMiddleware, authorizer=authorizer(WHO), identity=identity)
    client = TestClient(app)
    assert client.get("/x", headers={"x-user": "alice"}).status_code == 200
    assert client.get("/x", headers={"x-user": "bob"}).status_code == 403
    assert client.get("/x", headers={"x-user": "alice"}).status_code == 200  # an L1 hit
    assert calls == ["/x", "/x", "/x"]


class AsyncCallable:
    async def __call__(self, scope: Any) -> Any:
        return header_user(scope)


async def _async_identity(scope: Any, *, suffix: str = "") -> Any:
    return header_user(scope)


@pytest.mark.parametrize(
    ("identity", "is_sync"),
    [
        (header_user, True),
        (lambda scope: None, True),
        (_async_identity, False),
        (AsyncCallable(), False),
        (functools.partial(_async_identity, suffix="x"), False),
    ],
)
def test_only_an_async_identity_makes_the_request_path_await(
    authorizer: Callable[..., regoguard.Authorizer], identity: Any, is_sync: bool
) -> None:
    mw = RegoGuardMiddleware(lambda s, r, se: None, authorizer=authorizer(WHO), identity=identity)  # type: ignore[arg-type, return-value]
    assert mw._sync_identity is is_sync


def test_async_input_builder_in_the_middleware(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    async def build(scope: Any, user: Any, body: Any) -> dict[str, Any]:
        return {"user": {"id": "alice" if scope["path"] == "/ok" else "eve"}}

    app = FastAPI()

    @app.get("/{p}")
    def any_(p: str) -> dict[str, str]:
        return {}

    app.add_middleware(RegoGuardMiddleware, authorizer=authorizer(WHO), input_builder=build)
    client = TestClient(app)
    assert client.get("/ok").status_code == 200
    assert client.get("/no").status_code == 403


def test_async_identity_and_input_in_authorize(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    authz = authorizer(WHO)
    calls = []

    async def identity(scope: Any) -> Any:
        calls.append("identity")
        return header_user(scope)

    async def build(request: Any) -> dict[str, Any]:
        calls.append("input")
        return {"user": {"id": request.headers.get("x-user")}}

    app = FastAPI()

    @app.get("/a")
    def a(d: Annotated[Decision, Depends(Authorize(authz, identity=identity))]) -> dict[str, Any]:
        return {"allow": d.allow}

    @app.get("/b")
    def b(d: Annotated[Decision, Depends(Authorize(authz, input=build))]) -> dict[str, Any]:
        return {"allow": d.allow}

    client = TestClient(app)
    assert client.get("/a", headers={"x-user": "alice"}).json() == {"allow": True}
    assert client.get("/a", headers={"x-user": "bob"}).status_code == 403
    assert client.get("/b", headers={"x-user": "alice"}).json() == {"allow": True}
    assert client.get("/b", headers={"x-user": "bob"}).status_code == 403
    assert calls == ["identity", "identity", "input", "input"]


def test_a_sync_identity_returning_a_coroutine_is_a_400_never_a_grant(
    authorizer: Callable[..., regoguard.Authorizer], caplog: pytest.LogCaptureFixture
) -> None:
    async def real(scope: Any) -> Any:
        return {"id": "alice"}

    app = FastAPI()

    @app.get("/x")
    def x() -> dict[str, str]:
        return {}

    # A lambda hides that it returns a coroutine; regoguard cannot know before calling it.
    app.add_middleware(RegoGuardMiddleware, authorizer=authorizer(WHO), identity=lambda s: real(s))
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        r = TestClient(app).get("/x")
    assert r.status_code == 400
    assert "declare it `async def`" in caplog.text
    # The coroutine was closed: no "never awaited" RuntimeWarning (warnings are errors here).


# -- causes at WARNING, rate-limited --------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> rg_logging.RateLimitedLog:
    log = rg_logging.RateLimitedLog(logging.getLogger("regoguard"), interval=60.0)
    monkeypatch.setattr(rg_logging.warnings, "_next", {})
    monkeypatch.setattr(rg_logging.warnings, "_suppressed", {})
    monkeypatch.setattr(rg_logging.warnings, "interval", 60.0)
    return log


def plain_app(authz: regoguard.Authorizer, **kwargs: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/x")
    def x() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(RegoGuardMiddleware, authorizer=authz, **kwargs)
    return app


def test_an_identity_that_raises_is_logged_as_identity_failed_once_per_interval(
    authorizer: Callable[..., regoguard.Authorizer],
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: Any,
) -> None:
    def identity(scope: Any) -> Any:
        raise KeyError("sub")

    client = TestClient(plain_app(authorizer(WHO), identity=identity, fail_open=True))
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        first = client.get("/x")
        second = client.get("/x")
    # fail_open never applies to identity: nobody is let through because identity broke.
    assert first.status_code == second.status_code == 500
    assert "authorization failed (error " in first.json()["detail"]
    records = [r for r in caplog.records if r.name == "regoguard"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "identity failed" in message and "evaluation failed" not in message
    assert "KeyError" in message and "'/x'" in message
    # After the interval the next one is logged, with the count of those suppressed.
    rg_logging.warnings._next.clear()
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        client.get("/x")
    assert "1 more like this" in caplog.records[-1].getMessage()


def test_an_identity_raising_http_exception_answers_with_it(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    def identity(scope: Any) -> Any:
        raise HTTPException(401, "token expired", headers={"WWW-Authenticate": "Bearer"})

    r = TestClient(plain_app(authorizer(WHO), identity=identity)).get("/x")
    assert r.status_code == 401
    assert r.json() == {"detail": "token expired"}
    assert r.headers["www-authenticate"] == "Bearer"


def test_an_identity_raising_a_non_error_http_exception_is_not_an_answer(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    def identity(scope: Any) -> Any:
        raise HTTPException(200, "fine, come in")

    r = TestClient(plain_app(authorizer(WHO), identity=identity)).get("/x")
    assert r.status_code == 500
    assert r.json()["detail"].startswith("authorization failed")


def test_a_uuid_from_identity_is_a_400_explained_at_warning(
    authorizer: Callable[..., regoguard.Authorizer],
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: Any,
) -> None:
    client = TestClient(plain_app(authorizer(WHO), identity=lambda s: {"id": uuid.uuid4()}))
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        r = client.get("/x")
        client.get("/x")
    assert r.status_code == 400
    records = [r for r in caplog.records if r.name == "regoguard"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "input.user.id" in records[0].getMessage()
    assert "str(uuid)" in records[0].getMessage()


def test_authorize_logs_identity_failures_as_identity_failed(
    authorizer: Callable[..., regoguard.Authorizer],
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: Any,
) -> None:
    def identity(scope: Any) -> Any:
        raise RuntimeError("db down")

    app = FastAPI()

    @app.get("/a")
    def a(
        d: Annotated[Decision, Depends(Authorize(authorizer(WHO), identity=identity))],
    ) -> dict[str, Any]:
        return {}

    with caplog.at_level(logging.WARNING, logger="regoguard"):
        r = TestClient(app).get("/a")
    assert r.status_code == 500
    assert "regoguard: identity failed" in caplog.text and "evaluation failed" not in caplog.text


def test_an_input_builder_that_raises_is_logged_as_input_builder_failed(
    authorizer: Callable[..., regoguard.Authorizer],
    caplog: pytest.LogCaptureFixture,
    fresh_warnings: Any,
) -> None:
    async def build(scope: Any, user: Any, body: Any) -> dict[str, Any]:
        raise ValueError("no tenant")

    with caplog.at_level(logging.WARNING, logger="regoguard"):
        r = TestClient(plain_app(authorizer(WHO), input_builder=build)).get("/x")
    assert r.status_code == 500
    assert "regoguard: input_builder failed" in caplog.text
    assert "evaluation failed" not in caplog.text


# -- exclude_paths ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["/api/[^/]*/test", "/docs$", "/items/{id}", "/a*b", "/(health|ready)", "/x?", "/a+", "/a\\d"],
)
def test_exclude_paths_it_cannot_honour_are_rejected(
    authorizer: Callable[..., regoguard.Authorizer], pattern: str
) -> None:
    with pytest.raises(regoguard.ConfigError, match="cannot honour"):
        RegoGuardMiddleware(
            lambda s, r, se: None, authorizer=authorizer(WHO), exclude_paths=[pattern]
        )  # type: ignore[arg-type, return-value]


def test_exact_and_prefix_exclusions_still_work(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    app = FastAPI()

    @app.get("/{p:path}")
    def any_(p: str) -> dict[str, str]:
        return {"p": p}

    app.add_middleware(
        RegoGuardMiddleware,
        authorizer=authorizer(WHO),
        exclude_paths=["/favicon.ico", "/static/*", "/health"],
    )
    client = TestClient(app)
    assert client.get("/favicon.ico").status_code == 200
    assert client.get("/static/a/b.css").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/healthz").status_code == 403  # exact means exact
    assert client.get("/api/v1/test").status_code == 403


# -- entrypoints, v0, details ------------------------------------------------------------------


def test_a_v0_policy_error_suggests_rego_v0(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    v0 = 'package authz\n\nallow {\n  input.user.id == "alice"\n}\n'
    with pytest.raises(regoguard.PolicyError, match=r"rego_v0=True"):
        authorizer(v0)
    assert authorizer(v0, rego_v0=True).check({"user": {"id": "alice"}}).allow


def test_an_undefined_decision_says_forbidden_to_the_client_only(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    undefined = 'package authz\n\nallow if input.user.id == "alice"\n'
    seen: list[Decision] = []
    app = FastAPI()

    @app.get("/x")
    def x() -> dict[str, str]:
        return {}

    authz = authorizer(undefined)

    def on_deny(scope: Any, decision: Decision) -> None:
        seen.append(decision)

    app.add_middleware(RegoGuardMiddleware, authorizer=authz, on_deny=on_deny)
    r = TestClient(app).get("/x")
    assert r.status_code == 403 and r.json() == {"detail": "Forbidden"}
    assert seen[0].reason == "undefined" and seen[0].result is None
    # A policy's own reason still reaches the client.
    reasoned = authorizer('package authz\n\nallow := {"allow": false, "reason": "undefined"}\n')
    r = TestClient(plain_app(reasoned)).get("/x")
    assert r.json() == {"detail": "undefined"}


def test_authorize_says_forbidden_for_undefined(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    authz = authorizer("package authz\n\nallow if false\n")
    app = FastAPI()

    @app.get("/a")
    def a(d: Annotated[Decision, Depends(Authorize(authz))]) -> dict[str, Any]:
        return {}

    r = TestClient(app).get("/a")
    assert r.status_code == 403 and r.json() == {"detail": "Forbidden"}


def test_input_user_is_null_without_a_user(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    policy = "package authz\n\nallow if input.user == null\n"
    client = TestClient(plain_app(authorizer(policy), identity=header_user))
    assert client.get("/x").status_code == 200
    assert client.get("/x", headers={"x-user": "alice"}).status_code == 403


# -- the fastapi-opa preset ------------------------------------------------------------------

# A policy as written for fastapi-opa (queried at /v1/data/httpapi/authz), unchanged.
FASTAPI_OPA_POLICY = """package httpapi.authz

import rego.v1

default allow := false

allow if {
	input.request_method == "GET"
	input.request_path[0] == "items"
	input.role == "reader"
}

allow if {
	"admin" in input.groups
}
"""


def test_fastapi_opa_input_is_what_fastapi_opa_sends() -> None:
    scope = {"type": "http", "method": "GET", "path": "/api/items/"}
    doc = fastapi_opa_input(scope, {"sub": "u1", "role": "reader"}, None)
    assert doc == {
        "sub": "u1",
        "role": "reader",
        "request_method": "GET",
        "request_path": ["api", "items", ""],
    }
    assert fastapi_opa_input({"method": "POST", "path": "/"}, None, None) == {
        "request_method": "POST",
        "request_path": [""],
    }


def test_a_fastapi_opa_policy_runs_unchanged(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    authz = authorizer(FASTAPI_OPA_POLICY, entrypoint="data.httpapi.authz")

    def claims(scope: Any) -> dict[str, Any] | None:
        for k, v in scope["headers"]:
            if k == b"x-claims":
                import json

                loaded: dict[str, Any] = json.loads(v)
                return loaded
        return None

    app = FastAPI()

    @app.api_route("/{p:path}", methods=["GET", "POST"])
    def any_(p: str) -> dict[str, str]:
        return {"p": p}

    app.add_middleware(RegoGuardMiddleware, authorizer=authz, **fastapi_opa(identity=claims))
    client = TestClient(app)
    reader = {"x-claims": '{"sub": "u1", "role": "reader", "groups": []}'}
    assert client.get("/items/7", headers=reader).status_code == 200
    denied = client.post("/items/7", headers=reader)
    assert denied.status_code == 401 and denied.json() == {"message": "Unauthorized"}
    assert client.get("/items/7").status_code == 401
    admin = {"x-claims": '{"sub": "u2", "groups": ["admin"]}'}
    assert client.post("/anything", headers=admin).status_code == 200


def test_the_preset_wants_a_callable_identity() -> None:
    with pytest.raises(TypeError):
        fastapi_opa(identity="claims")  # type: ignore[arg-type]


def test_package_entrypoint_without_allow_is_rejected_at_startup(
    authorizer: Callable[..., regoguard.Authorizer], tmp_path: Path
) -> None:
    with pytest.raises(regoguard.EvaluationError, match="unknown entrypoint"):
        authorizer("package httpapi.authz\n\nx := 1\n", entrypoint="data.httpapi.authz")
