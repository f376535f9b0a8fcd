"""Attacks on how the middleware reads a request (issue 9, items 5, 6, 8, 10): each one tries
to make the policy decide on something other than what the app will read, or to crash or hang
the service, and must fail."""

# No `from __future__ import annotations`: FastAPI must resolve the local `Item` model.

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import regoguard
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from regoguard import RegoGuardMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

# Admins may not use this service: a policy that only grants what it positively checked
# cannot be fooled by a field it does not see, so the attacks below target deny rules.
POLICY = """package authz

default allow := false

allow if {
	not input.body.role == "admin"
	not input.headers["x-role"] == "admin"
}
"""


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory) -> regoguard.Authorizer:
    d: Path = tmp_path_factory.mktemp("secreq")
    (d / "authz.rego").write_text(POLICY)
    return regoguard.Authorizer(d, cache=regoguard.CacheConfig(max_entries=1000))


async def starlette_json(request: Request) -> JSONResponse:
    # A plain Starlette handler parses the body whatever its Content-Type.
    return JSONResponse({"seen": await request.json(), "role": request.headers.get("x-role")})


def starlette_client(authz: regoguard.Authorizer) -> TestClient:
    app = Starlette(routes=[Route("/{p:path}", starlette_json, methods=["POST", "GET"])])
    return TestClient(
        RegoGuardMiddleware(app, authorizer=authz, include_body=True, include_headers=["x-role"])
    )


ADMIN = b'{"role": "admin"}'


@pytest.mark.parametrize(
    "content_types",
    [
        ["application/json", "text/plain"],  # the middleware used the last, the app the first
        ["text/plain", "application/json"],
        ["text/plain"],  # request.json() parses it anyway
        [],  # FastAPI with strict_content_type=False parses it too
        ["application/x-www-form-urlencoded"],
    ],
)
def test_a_json_body_is_seen_whatever_its_content_type(
    authz: regoguard.Authorizer, content_types: list[str]
) -> None:
    client = starlette_client(authz)
    headers = [("content-type", ct) for ct in content_types]
    r = client.post("/x", content=ADMIN, headers=headers)
    assert r.status_code == 403, (content_types, r.text)
    # The same body as a user is granted, and reaches the handler parsed.
    r = client.post("/x", content=b'{"role": "user"}', headers=headers)
    assert (r.status_code, r.json()["seen"]) == (200, {"role": "user"})


def test_fastapi_body_models_get_what_the_policy_saw(authz: regoguard.Authorizer) -> None:
    class Item(BaseModel):
        role: str

    app = FastAPI()
    app.add_middleware(RegoGuardMiddleware, authorizer=authz, include_body=True)

    @app.post("/items")
    async def create(item: Item) -> dict[str, Any]:
        return {"role": item.role}

    client = TestClient(app)
    dup = [("content-type", "application/json"), ("content-type", "text/plain")]
    # FastAPI parses the body by the first Content-Type: the policy saw the same admin.
    assert client.post("/items", content=ADMIN, headers=dup).status_code == 403
    r = client.post("/items", content=b'{"role": "user"}', headers=dup)
    assert (r.status_code, r.json()) == (200, {"role": "user"})


def test_the_policy_sees_both_the_parsed_and_the_raw_body() -> None:
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": []}
    doc = regoguard.build_input(scope, raw_body=b'{"a": [1, 2]}')
    assert doc["body"] == {"a": [1, 2]}
    assert doc["raw_body"] == {"size": 13, "text": '{"a": [1, 2]}'}
    # A body that is not JSON has no `body`, only its text (invalid UTF-8 replaced).
    doc = regoguard.build_input(scope, raw_body=b"hello \xff")
    assert "body" not in doc and doc["raw_body"] == {"size": 7, "text": "hello \ufffd"}
    # A JSON object that looks like the text form stays a body: no ambiguity.
    doc = regoguard.build_input(scope, raw_body=b'{"text": "hi", "size": 2}')
    assert doc["body"] == {"text": "hi", "size": 2} and doc["raw_body"]["size"] == 25


def test_repeated_headers_give_the_first_value_as_the_app_reads_it(
    authz: regoguard.Authorizer,
) -> None:
    client = starlette_client(authz)
    body = b'{"role": "user"}'
    # Joined, the policy saw "admin, user" (not "admin") while the app read "admin".
    r = client.post("/x", content=body, headers=[("x-role", "admin"), ("x-role", "user")])
    assert r.status_code == 403, r.text
    r = client.post("/x", content=body, headers=[("x-role", "user"), ("x-role", "admin")])
    assert (r.status_code, r.json()["role"]) == (200, "user")  # what the app reads: the first
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"",
        "headers": [(b"x-role", b"user"), (b"x-other", b"1"), (b"x-role", b"admin")],
    }
    doc = regoguard.build_input(scope, include_headers=["X-Role"])
    assert doc["headers"] == {"x-role": "user"}
    assert doc["header_values"] == {"x-role": ["user", "admin"]}


def test_a_policy_can_deny_on_any_value_of_a_repeated_header(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text(
        'package authz\nallow if not "admin" in input.header_values["x-role"]\n'
    )
    strict = regoguard.Authorizer(tmp_path)
    client = TestClient(
        RegoGuardMiddleware(
            Starlette(routes=[Route("/", starlette_json)]),
            authorizer=strict,
            include_headers=["x-role"],
        )
    )
    assert client.get("/", headers=[("x-role", "user"), ("x-role", "admin")]).status_code == 403


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 60_000, "application/json"),  # RecursionError in json.loads: was a 500
        (b"[" * 30_000 + b"]" * 30_000, "text/plain"),
        (b'{"a":' * 200 + b"1" + b"}" * 200, "application/json"),  # past MAX_INPUT_DEPTH
        (b'{"role": NaN}', "application/json"),
        (b'{"role": Infinity}', "text/plain"),
        (b'{"n": 1e400}', "application/json"),  # a float json.loads makes infinite
        (b'{"n": ' + b"9" * 5000 + b"}", "application/json"),  # over Python's int limit
        (b'{"role": "\xff"}', "application/json"),  # invalid UTF-8
        (b'{"role": "admin"', "application/json"),  # malformed
        (b"\xfe\xff" + '{"role": "admin"}'.encode("utf-16-be"), "application/json"),
    ],
)
def test_hostile_bodies_are_400_never_500_nor_granted(
    authz: regoguard.Authorizer, body: bytes, content_type: str
) -> None:
    client = starlette_client(authz)
    r = client.post("/x", content=body, headers={"content-type": content_type})
    assert r.status_code in (400, 403), (body[:40], r.status_code, r.text)
    if r.status_code == 400:
        assert "Traceback" not in r.text


def test_utf16_json_is_parsed_as_the_app_parses_it(authz: regoguard.Authorizer) -> None:
    # json.loads detects UTF-16/32, and so does request.json(): the policy sees the admin.
    body = '{"role": "admin"}'.encode("utf-16-le")
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": []}
    assert regoguard.build_input(scope, raw_body=body)["body"] == {"role": "admin"}
    r = starlette_client(authz).post("/x", content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 403


def test_big_ints_and_duplicate_keys_match_json_loads(authz: regoguard.Authorizer) -> None:
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": []}
    big = b'{"n": ' + b"9" * 300 + b"}"
    assert regoguard.build_input(scope, raw_body=big)["body"] == json.loads(big)
    # Duplicate keys: the last wins, in the policy as in json.loads and request.json().
    dup = b'{"role": "admin", "role": "user"}'
    assert regoguard.build_input(scope, raw_body=dup)["body"] == {"role": "user"}
    client = starlette_client(authz)
    assert client.post("/x", content=b'{"role": "user", "role": "admin"}').status_code == 403
    r = client.post("/x", content=dup)
    assert (r.status_code, r.json()["seen"]) == (200, {"role": "user"})


def test_query_strings_and_headers_cannot_nest() -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": b"a[b][c]=1&a=2&" + b"%5B" * 1000 + b"=x",
        "headers": [(b"x-n", b"[" * 10_000)],
    }
    doc = regoguard.build_input(scope, include_headers=["x-n"])
    assert doc["query"]["a[b][c]"] == ["1"] and doc["query"]["a"] == ["2"]
    assert doc["headers"]["x-n"] == "[" * 10_000


EXIT_WHILE_DECIDING = textwrap.dedent(
    """
    import logging, os, sys, threading, time
    import regoguard
    policies = sys.argv[1]
    logging.basicConfig(stream=open(os.devnull, "w"), level=logging.INFO)
    authz = regoguard.Authorizer(
        policies, cache=None, decision_log=regoguard.DecisionLogConfig(max_queue=100_000)
    )
    def decide(t):
        i = 0
        while True:
            authz.check({"t": t, "i": i})
            i += 1
    for t in range(4):
        threading.Thread(target=decide, args=(t,), daemon=True).start()
    time.sleep(0.3)
    print("exiting", flush=True)
    """
)


def test_exit_is_bounded_while_threads_keep_deciding(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text("package authz\nallow := true\n")
    for run in range(5):
        p = subprocess.run(
            [sys.executable, "-c", EXIT_WHILE_DECIDING, str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,  # EXIT_FLUSH_SECONDS is 2; a hang is what fails here
        )
        assert p.returncode == 0 and "exiting" in p.stdout, (run, p.returncode, p.stderr[-2000:])


SLOW = """package authz

default allow := false

allow if input.path != "/slow"

allow if {
	input.path == "/slow"
	count([x | some x in numbers.range(1, data.n); x % 7 == 0]) >= 0
}
"""


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _order_of(mw: Any) -> list[str]:
    import asyncio

    import httpx

    async def main() -> list[str]:
        order: list[str] = []
        transport = httpx.ASGITransport(app=mw)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:

            async def slow() -> None:
                r = await c.get("/slow")
                # 200, or 500 if an evaluation budget cuts the loop short: never a stall.
                assert r.status_code in (200, 500)
                order.append("slow")

            async def health() -> None:
                await asyncio.sleep(0.01)  # the slow request is in flight by now
                assert (await c.get("/health")).status_code == 200
                order.append("health")

            await asyncio.gather(slow(), health())
        return order

    return asyncio.run(main())


def test_a_slow_policy_does_not_stall_health_checks(tmp_path: Path) -> None:
    (tmp_path / "a.rego").write_text(SLOW)
    slow = regoguard.Authorizer(tmp_path, data={"n": 400_000}, cache=None)
    app = Starlette(routes=[Route("/slow", ok), Route("/health", ok)])
    # Evaluated on the event loop (offloading off), the slow miss holds /health back: the
    # attack the issue reproduced.
    inline = RegoGuardMiddleware(
        app, authorizer=slow, exclude_paths=["/health"], offload_after_seconds=None
    )
    assert _order_of(inline) == ["slow", "health"]
    # By default the first miss of a policy not measured yet, and every miss of one measured
    # slow, go to a worker thread: /health answers while the slow evaluation is in flight.
    mw = RegoGuardMiddleware(app, authorizer=slow, exclude_paths=["/health"])
    assert _order_of(mw) == ["health", "slow"]
    assert _order_of(mw) == ["health", "slow"]  # now measured slow: still offloaded


def test_fast_misses_stay_inline_and_hits_never_leave_the_call(
    authz: regoguard.Authorizer,
) -> None:
    from regoguard._regoguard import PendingDecision, RequestSpec

    spec = RequestSpec(offload_after_seconds=0.001)
    user = {"id": "u"}

    def scope(i: int) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": f"/f{i}",
            "query_string": b"",
            "headers": [],
        }

    first = authz._check_scope(scope(0), spec, user)
    assert isinstance(first, PendingDecision)  # not measured yet: to a thread
    assert first.evaluate().allow is True
    # Measured fast (microseconds): later misses are decided in the call.
    assert isinstance(authz._check_scope(scope(1), spec, user), regoguard.Decision)
    # A spec that offloads every miss still decides a hit in the call.
    always = RequestSpec(offload_after_seconds=0.0)
    assert isinstance(authz._check_scope(scope(2), always, user), PendingDecision)
    hit = authz._check_scope(scope(1), always, user)
    assert isinstance(hit, regoguard.Decision) and hit.source == "l1"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="offload_after_seconds"):
            RequestSpec(offload_after_seconds=bad)
    with pytest.raises(regoguard.ConfigError, match="offload_after_seconds"):
        RegoGuardMiddleware(Starlette(), authorizer=authz, offload_after_seconds=-1)


@pytest.mark.parametrize("name", ["x-rôle", "x role", "x-role:", "", "x\nrole"])
def test_an_include_headers_name_the_app_can_never_read_is_a_config_error(
    name: str, tmp_path: Path
) -> None:
    """Starlette looks headers up by their latin-1 token names: a name outside RFC 9110's token
    characters would hand the policy a header under a name the app never sees (found by the
    request-document fuzzer)."""
    with pytest.raises(regoguard.ConfigError, match="include_headers"):
        regoguard.build_input({"type": "http", "headers": []}, include_headers=[name])
    with pytest.raises(regoguard.ConfigError, match="include_headers"):
        (tmp_path / "a.rego").write_text("package authz\nallow := true\n")
        regoguard.RegoGuardMiddleware(
            Starlette(), authorizer=regoguard.Authorizer(tmp_path), include_headers=[name]
        )
