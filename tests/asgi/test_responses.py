"""The middleware and ``Authorize`` answer every refusal and failure alike: one mapping
(``regoguard._responses``) gives both the status, the ``{"detail": ...}`` body and the headers."""

# No `from __future__ import annotations`: FastAPI must resolve the local `Depends(guard)`.

import re
from pathlib import Path
from typing import Annotated, Any

import pytest
import regoguard
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from regoguard import Authorize, Decision, RegoGuardMiddleware

POLICY = """package p

default allow := false

allow := true if input.path == "/x/allow"

allow := {"allow": false, "reason": "not yours"} if input.path == "/x/deny"

allow := {"allow": false, "status": 401, "reason": "who?", "headers": {"WWW-Authenticate": "Bearer"}} if {
	input.path == "/x/login"
}

allow := {"allow": false, "reason": "undefined"} if input.path == "/x/undefined-reason"

allow := "broken" if input.path == "/x/broken"
"""


def identity(scope: Any) -> Any:
    headers = dict(scope["headers"])
    if headers.get(b"x-user") == b"no-json":
        return {"id": {1, 2}}  # a set: no JSON form -> 400
    if headers.get(b"x-user") == b"expired":
        raise HTTPException(401, "token expired", headers={"WWW-Authenticate": 'Bearer error="x"'})
    if headers.get(b"x-user") == b"crash":
        raise RuntimeError("identity broke")
    return {"id": "alice"}


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, TestClient]:
    d: Path = tmp_path_factory.mktemp("responses")
    (d / "p.rego").write_text(POLICY)
    authz = regoguard.Authorizer(d, entrypoint="data.p.allow")

    guarded = FastAPI()
    guarded.add_middleware(RegoGuardMiddleware, authorizer=authz, identity=identity)

    @guarded.get("/x/{case}")
    async def plain(case: str) -> dict[str, str]:
        return {"case": case}

    dependent = FastAPI()
    guard = Authorize(authz, identity=identity)

    @dependent.get("/x/{case}")
    async def checked(case: str, decision: Annotated[Decision, Depends(guard)]) -> dict[str, str]:
        return {"case": case}

    return (
        TestClient(guarded, raise_server_exceptions=False),
        TestClient(dependent, raise_server_exceptions=False),
    )


@pytest.mark.parametrize(
    ("path", "user", "status"),
    [
        ("/x/allow", "alice", 200),
        ("/x/deny", "alice", 403),
        ("/x/login", "alice", 401),
        ("/x/undefined-reason", "alice", 403),
        ("/x/nothing", "alice", 403),
        ("/x/broken", "alice", 500),
        ("/x/allow", "no-json", 400),
        ("/x/allow", "expired", 401),
        ("/x/allow", "crash", 500),
    ],
)
def test_middleware_and_authorize_answer_alike(
    clients: tuple[TestClient, TestClient], path: str, user: str, status: int
) -> None:
    answers = [c.get(path, headers={"x-user": user}) for c in clients]
    for r in answers:
        assert r.status_code == status, (r.status_code, r.text)
    m, a = answers
    strip = re.compile(r"\(error [0-9a-f-]{32,36}\)")
    body = [{k: strip.sub("(error ID)", str(v)) for k, v in r.json().items()} for r in answers]
    assert body[0] == body[1]
    assert m.headers.get("www-authenticate") == a.headers.get("www-authenticate")
    if status >= 400:
        assert m.headers["content-type"] == a.headers["content-type"] == "application/json"
