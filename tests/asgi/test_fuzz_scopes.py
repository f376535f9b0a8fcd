"""Hypothesis fuzz of RegoGuardMiddleware with random ASGI scopes (issue 16).

Random methods, paths (unicode, %-encodings, lone surrogates, huge), query strings (raw
bytes, escapes, huge), headers (duplicates, bytes above 0x7f, huge), bodies, content types
and missing scope keys, against:

- a denying policy: never a 2xx;
- an echo policy (the decision's reason is the input it saw): never an exception out of the
  middleware; 400/413 for bad input and 500 only for the policy's own evaluation error; the
  cached middleware answers exactly as an uncached twin on the same scope, on a miss and on
  the hit that follows; and an allowed request's input is what Starlette shows the app
  (method, path, query_params, headers).

Bounded so it runs in seconds; ``REGOGUARD_FUZZ_EXAMPLES`` (``make fuzz-asgi``) raises the count.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regoguard
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from regoguard import RegoGuardMiddleware
from starlette.datastructures import Headers, QueryParams

EXAMPLES = int(os.environ.get("REGOGUARD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ECHO = """package authz

default ok := false

ok if not startswith(input.path, "/deny")

allow := "broken" if input.headers["x-break"] == "1"

allow := {"allow": ok, "reason": json.marshal(input)} if not input.headers["x-break"] == "1"
"""

DENY = """package authz

default allow := false

allow if count(input.path) < 0

allow if {
	input.query.x[0] == "a"
	input.query.x[0] != "a"
}

allow if input.method == input.headers["x-never"]
"""

INCLUDE = ["x-tenant", "x-break", "accept", "content-type", "x-never"]
MAX_BODY = 4096
ERROR_ID = re.compile(rb"\(error [0-9a-f-]{36}\)")


def authorizers(tmp: Path, policy: str) -> tuple[regoguard.Authorizer, regoguard.Authorizer]:
    tmp.mkdir()
    (tmp / "authz.rego").write_text(policy)
    cached = regoguard.Authorizer(tmp, cache=regoguard.CacheConfig(max_entries=10_000))
    return cached, regoguard.Authorizer(tmp, cache=None)


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> tuple[regoguard.Authorizer, ...]:
    return authorizers(tmp_path_factory.mktemp("fuzz") / "echo", ECHO)


@pytest.fixture(scope="module")
def deny(tmp_path_factory: pytest.TempPathFactory) -> tuple[regoguard.Authorizer, ...]:
    return authorizers(tmp_path_factory.mktemp("fuzz") / "deny", DENY)


def seen_by_app(scope: dict[str, Any]) -> dict[str, Any]:
    """What the app reads, as Starlette shows it."""
    query = QueryParams(scope.get("query_string", b""))
    headers = Headers(raw=list(scope.get("headers", [])))
    return {
        "method": scope["method"] if scope["type"] == "http" else "GET",
        "path": scope["path"],
        "query": {k: query.getlist(k) for k in query},
        "headers": {n: headers[n] for n in INCLUDE if n in headers},
        "header_values": {n: headers.getlist(n) for n in INCLUDE if n in headers},
    }


def middleware(authz: regoguard.Authorizer, include_body: bool) -> RegoGuardMiddleware:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        decision = scope["regoguard"]
        view = seen_by_app(scope)
        body = json.dumps({"reason": decision.reason, "view": view}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return RegoGuardMiddleware(
        app,
        authorizer=authz,
        include_headers=INCLUDE,
        include_body=include_body,
        max_body_bytes=MAX_BODY,
    )


def call(mw: RegoGuardMiddleware, scope: dict[str, Any], chunks: list[bytes]) -> tuple[int, bytes]:
    """The status and body `mw` answers `scope` with (any exception fails the test)."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw(dict(scope), receive, send))
    if scope["type"] == "websocket":
        closed = [m for m in sent if m["type"] == "websocket.close"]
        return (403, b"") if closed else (200, b"".join(m.get("body", b"") for m in sent))
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    # A 500 names its failed decision's id, new for every request: compare it as a shape.
    body = ERROR_ID.sub(b"(error ID)", b"".join(m.get("body", b"") for m in sent[1:]))
    return start[0]["status"], body


methods = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    st.text(max_size=8),
    st.text(alphabet=st.characters(categories=["Cs", "Lo"]), min_size=1, max_size=3),
)
segments = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["%2F", "%00", "..", ".", "%C3%A9", "deny", "%", "\u00e9", "\U0001f600"]),
    st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=2),
)
paths = st.one_of(
    st.lists(segments, max_size=5).map(lambda parts: "/" + "/".join(parts)),
    st.sampled_from(["", "/deny", "/deny/x", "/" + "a/" * 5000, "/" + "\u00e9" * 20_000]),
)
query_parts = st.one_of(
    st.binary(max_size=6),
    st.sampled_from([b"x=a", b"x", b"=", b"&", b"%41", b"%C3%A9", b"%FF", b"\xc3\xa9", b"+", b"%"]),
)
queries = st.one_of(
    st.lists(query_parts, max_size=6).map(lambda parts: b"&".join(parts)),
    st.binary(max_size=40),
    st.just(b"a=" + b"b" * 100_000),
)
header_names = st.one_of(
    st.sampled_from(
        [b"x-tenant", b"X-Tenant", b"accept", b"x-break", b"content-type", b"x-never", b"cookie"]
    ),
    st.sampled_from([b"content-length"]),
    st.binary(max_size=6),
)
header_values = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"1", b"application/json", b"text/plain", b"GET", b"\xff\xfe", b""]),
    st.just(b"v" * 70_000),
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)
bodies = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b'{"a": 1}', b"[1, 2", b"null", b'"\xff"', b"1e400", b"{}" * 3000]),
    st.just(b"x" * (MAX_BODY + 1)),
).map(lambda b: [b[i : i + 1500] for i in range(0, len(b), 1500)] or [b""])
OPTIONAL = ["method", "path", "query_string", "headers"]


@st.composite
def scopes(draw: Callable[..., Any]) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": draw(st.sampled_from(["http"] * 9 + ["websocket"])),
        "method": draw(methods),
        "path": draw(paths),
        "query_string": draw(queries),
        "headers": draw(headers),
    }
    if draw(st.integers(0, 9)) == 0:
        del scope[draw(st.sampled_from(OPTIONAL))]
    return scope


def first(scope: dict[str, Any], name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", []) if k == name), None)


@FUZZ
@given(scope=scopes(), chunks=bodies, include_body=st.booleans())
def test_echo_policy_answers_as_its_uncached_twin_and_shows_what_the_app_reads(
    echo: tuple[regoguard.Authorizer, regoguard.Authorizer],
    scope: dict[str, Any],
    chunks: list[bytes],
    include_body: bool,
) -> None:
    cached, uncached = (middleware(a, include_body) for a in echo)
    expected = call(uncached, scope, chunks)
    status, body = expected
    event(f"status {status}")
    assert status in (200, 400, 403, 413, 500), expected
    if status == 500:
        assert first(scope, b"x-break") == b"1", body
    # A miss, then (for what was cacheable) a hit: both as the uncached twin answers.
    assert call(cached, scope, chunks) == expected
    assert call(cached, scope, chunks) == expected
    if status == 200 and scope["type"] == "http":
        answer = json.loads(body)
        policy = json.loads(answer["reason"])
        view = answer["view"]
        assert {k: policy[k] for k in view} == view
        assert not scope["path"].startswith("/deny")


@FUZZ
@given(scope=scopes(), chunks=bodies, include_body=st.booleans())
def test_a_denying_policy_never_answers_2xx(
    deny: tuple[regoguard.Authorizer, regoguard.Authorizer],
    scope: dict[str, Any],
    chunks: list[bytes],
    include_body: bool,
) -> None:
    for authz in deny:
        status, body = call(middleware(authz, include_body), scope, chunks)
        assert status in (400, 403, 413), (status, body)
