"""Authorize: a FastAPI dependency with the route template and path parameters."""

# No `from __future__ import annotations`: FastAPI must resolve the local `Depends(guard)`.

from pathlib import Path
from typing import Annotated, Any

import pytest
import regoguard
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from regoguard import Authorize, Decision, RegoGuardMiddleware

POLICIES = {
    "authz.rego": """package authz
default allow := false
allow if not startswith(input.path, "/admin")
""",
    "projects.rego": """package projects

default allow := {"allow": false, "reason": "not a member"}

allow := {"allow": false, "status": 401, "reason": "who are you?", "headers": {"WWW-Authenticate": "Bearer"}} if {
	input.user == null
} else := "broken" if {
	input.path_params.project_id == "666"
} else := {"allow": true, "reason": sprintf("member via %s", [input.route])} if {
	input.route == "/projects/{project_id}"
	input.user.id in data.members[input.path_params.project_id]
}
""",
}


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> regoguard.Authorizer:
    d: Path = tmp_path_factory.mktemp("dep")
    for name, text in POLICIES.items():
        (d / name).write_text(text)
    return regoguard.Authorizer(d, data={"members": {"42": ["alice"]}})


def user_header(scope: Any) -> dict[str, str] | None:
    for k, v in scope["headers"]:
        if k == b"x-user":
            return {"id": v.decode()}
    return None


def make_app(authz: regoguard.Authorizer, *, with_middleware: bool = False) -> FastAPI:
    app = FastAPI()
    guard = Authorize(authz, entrypoint="data.projects.allow", identity=user_header)

    @app.get("/projects/{project_id}")
    async def project(
        project_id: str, decision: Annotated[Decision, Depends(guard)]
    ) -> dict[str, Any]:
        return {"project": project_id, "reason": decision.reason, "source": decision.source}

    @app.get("/plain/{project_id}")
    async def plain(project_id: str) -> dict[str, Any]:
        return {"project": project_id}

    if with_middleware:
        app.add_middleware(RegoGuardMiddleware, authorizer=authz)
    return app


def test_route_template_and_path_params_reach_the_policy(authz: regoguard.Authorizer) -> None:
    client = TestClient(make_app(authz))
    r = client.get("/projects/42", headers={"x-user": "alice"})
    assert r.status_code == 200
    assert r.json() == {
        "project": "42",
        "reason": "member via /projects/{project_id}",
        "source": "engine",
    }
    assert client.get("/projects/42", headers={"x-user": "alice"}).json()["source"] == "l1"


def test_deny_raises_http_exceptions(authz: regoguard.Authorizer) -> None:
    client = TestClient(make_app(authz))
    r = client.get("/projects/42", headers={"x-user": "bob"})
    assert (r.status_code, r.json()) == (403, {"detail": "not a member"})
    r = client.get("/projects/42")
    assert (r.status_code, r.json()) == (401, {"detail": "who are you?"})
    assert r.headers["www-authenticate"] == "Bearer"


def test_evaluation_error_is_500_and_bad_input_400(authz: regoguard.Authorizer) -> None:
    client = TestClient(make_app(authz))
    r = client.get("/projects/666", headers={"x-user": "alice"})
    assert r.status_code == 500 and "broken" not in r.text
    app = FastAPI()
    guard = Authorize(
        authz, entrypoint="data.projects.allow", identity=lambda scope: {"ids": {1, 2}}
    )

    @app.get("/x")
    async def x(d: Annotated[Decision, Depends(guard)]) -> None:
        return None

    assert TestClient(app).get("/x").status_code == 400


def test_beside_the_middleware_with_its_own_entrypoint(authz: regoguard.Authorizer) -> None:
    client = TestClient(make_app(authz, with_middleware=True))
    assert client.get("/projects/42", headers={"x-user": "alice"}).status_code == 200
    assert client.get("/plain/1").status_code == 200
    assert client.get("/admin/x").status_code == 403  # the middleware's data.authz.allow


def test_openapi_schema_is_unchanged(authz: regoguard.Authorizer) -> None:
    schema = make_app(authz).openapi()
    assert (
        schema["paths"]["/projects/{project_id}"]["get"]["parameters"]
        == schema["paths"]["/plain/{project_id}"]["get"]["parameters"]
    )


def test_misspelt_entrypoint_fails_at_construction(authz: regoguard.Authorizer) -> None:
    with pytest.raises(regoguard.EvaluationError):
        Authorize(authz, entrypoint="data.projects.alow")
    with pytest.raises(TypeError):
        Authorize(object())  # type: ignore[arg-type]


def test_custom_input(authz: regoguard.Authorizer) -> None:
    app = FastAPI()
    guard = Authorize(
        authz, input=lambda request: {"path": "/admin" if "admin" in request.url.path else "/"}
    )

    @app.get("/{p}")
    async def page(p: str, d: Annotated[Decision, Depends(guard)]) -> dict[str, bool]:
        return {"allow": d.allow}

    client = TestClient(app)
    assert client.get("/home").status_code == 200
    assert client.get("/admin").status_code == 403
