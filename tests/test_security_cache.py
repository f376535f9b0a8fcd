"""Attacks on the cache keys, the decorator's key spaces, masking and the Redis URL (issue 9,
items 1, 2, 11, 12, 13), each kept as a test that tries to get through and shows it fail.

The Redis halves (L2 keys, replay of entries and messages) are in ``tests/l2/test_security_l2.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import regoguard
from regoguard import (
    ConfigError,
    DecisionLogConfig,
    EvaluationError,
    RedisConfig,
    RegoGuardMiddleware,
    cached_authorization,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

# allow unless the first path segment is "admin": path_segments is derived by the middleware,
# so a key that leaves it out must never meet a key of a document that has none.
NOT_ADMIN_AREA = """
package authz

default allow := false

admin_area if input.path_segments[0] == "admin"

allow if not admin_area
"""

#: What the middleware builds for ``GET /admin`` (no identity, no headers allowed), minus the
#: derived ``path_segments``: the bytes of its key.
ADMIN_DOC: dict[str, Any] = {
    "header_values": {},
    "headers": {},
    "method": "GET",
    "path": "/admin",
    "query": {},
    "user": None,
}


def _client(authz: regoguard.Authorizer) -> TestClient:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/{path:path}", ok)])
    return TestClient(RegoGuardMiddleware(app, authorizer=authz))


# --- 1. One key domain per input form --------------------------------------------------------


def test_middleware_document_is_the_attack_document(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    # The attack needs the two forms to write the same bytes: check that they do.
    seen = regoguard.build_input(
        {"type": "http", "method": "GET", "path": "/admin", "headers": [], "query_string": b""}
    )
    assert {k: v for k, v in seen.items() if k != "path_segments"} == ADMIN_DOC
    assert seen["path_segments"] == ["admin"]


def test_a_plain_check_never_serves_the_middleware(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    authz = authorizer(NOT_ADMIN_AREA)
    # Evaluated without path_segments: not in the admin area, allowed (OPA agrees).
    assert authz.check(ADMIN_DOC).allow
    assert authz.check(ADMIN_DOC).source == "l1"
    with _client(authz) as client:
        assert client.get("/admin").status_code == 403, (
            "the plain check's allow was served to a request"
        )
        assert client.get("/admin").status_code == 403
        assert client.get("/public").status_code == 200
    fresh = authorizer(NOT_ADMIN_AREA)
    with _client(fresh) as client:
        assert client.get("/admin").status_code == 403


def test_the_middleware_never_serves_a_plain_check(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    authz = authorizer(NOT_ADMIN_AREA)
    with _client(authz) as client:
        assert client.get("/admin").status_code == 403
        assert client.get("/admin").status_code == 403
    d = authz.check(ADMIN_DOC)
    assert d.allow and d.source == "engine", "the request's deny was served to a plain check"
    # check_many and check_async share the plain domain.
    assert [x.allow for x in authz.check_many([ADMIN_DOC])] == [True]
    stats = authz.stats()
    assert stats["evaluations"] == 2 and stats["l1_hits"] == 2


def test_plain_verdict_matches_opa(opa: Any) -> None:
    # The plain document, evaluated as given, is allowed by OPA too: the allow is right for it.
    assert opa({"a.rego": NOT_ADMIN_AREA}).eval("data.authz.allow", ADMIN_DOC) is True
    with_segments = dict(ADMIN_DOC, path_segments=["admin"])
    assert opa({"a.rego": NOT_ADMIN_AREA}).eval("data.authz.allow", with_segments) is False


# --- 2. Closures of one factory --------------------------------------------------------------


def requires(role: str, roles: dict[str, set[str]], **kwargs: Any) -> Callable[[str], bool]:
    @cached_authorization(**kwargs)
    def check(user: str) -> bool:
        return role in roles.get(user, set())

    return check


def test_closures_have_distinct_key_spaces_even_with_equal_names() -> None:
    roles = {"bob": ["viewer"]}
    is_viewer = requires("viewer", roles)  # type: ignore[arg-type]
    is_admin = requires("admin", roles)  # type: ignore[arg-type]
    assert is_viewer("bob") is True
    assert is_admin("bob") is False


def test_a_closure_cell_without_canonical_form_is_refused_when_shared() -> None:
    cfg = RedisConfig("redis://127.0.0.1:1/0", key_prefix="unused")
    lock = object()

    def make() -> Callable[[str], bool]:
        def check(user: str) -> bool:
            return lock is not None

        return check

    with pytest.raises(ConfigError, match=r"lock has no canonical form.*key=.*name="):
        cached_authorization(redis=cfg)(make())
    # The caller vouches: with name= or key= the cell is left out.
    cached_authorization(redis=cfg, name="tests.check")(make())
    cached_authorization(redis=cfg, key=lambda user: user)(make())
    # Without Redis nothing is shared between functions: allowed.
    cached_authorization(make())
    with pytest.raises(ConfigError, match="name must be"):
        cached_authorization(name="")


def test_identity_covers_defaults_partials_methods_and_objects() -> None:
    from functools import partial

    from regoguard.decorators import _identity

    def f(x: int, scope: str = "a") -> bool:
        return True

    def g(x: int, scope: str = "b") -> bool:
        return True

    g.__qualname__ = f.__qualname__
    assert _identity(f) != _identity(g)
    assert _identity(partial(f, scope="x")) != _identity(partial(f, scope="y"))

    class Checker:
        def __init__(self, role: str) -> None:
            self.role = role

        def __call__(self, user: str) -> bool:
            return True

        def method(self, user: str) -> bool:
            return True

    assert _identity(Checker("a")) != _identity(Checker("b"))
    assert _identity(Checker("a").method) != _identity(Checker("b").method)
    assert _identity(Checker("a")) == _identity(Checker("a")), (
        "stable: equal values, equal identity"
    )
    _, opaque = _identity(partial(f, object()))
    assert opaque == ["args[0]"]


# --- 11. Masked input values never appear in error text -------------------------------------

LEAKY = """
package authz

default allow := false

allow if {
    n := input.headers.authorization + 1
    n > 0
}

allow if {
    n := input.user.api_token * 2
    n > 0
}
"""

SECRET = "Bearer s3cr3t-VALUE"
TOKEN = "tok-9f8e7d"


@pytest.fixture
def regoguard_logs() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger("regoguard")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield records
    root.removeHandler(handler)
    root.setLevel(level)


def _text(records: list[logging.LogRecord]) -> str:
    return "\n".join(r.getMessage() for r in records)


def test_evaluation_errors_do_not_quote_masked_values(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    # The interpreter raises on `"text" + 1` and quotes the operand (the RVM answers undefined).
    authz = authorizer(LEAKY, evaluator="interpreter")
    for doc in (
        {"headers": {"authorization": SECRET}},
        {"headers": {}, "user": {"api_token": TOKEN}},
    ):
        with pytest.raises(EvaluationError) as info:
            authz.check(doc)
        text = str(info.value)
        assert SECRET not in text and TOKEN not in text and "s3cr3t" not in text, text
        assert "***" in text, "the operand is shown masked"
        assert "authz.rego" in text, "the location is kept"


def test_masked_values_stay_out_of_the_500_the_logger_and_the_decision_log(
    authorizer: Callable[..., regoguard.Authorizer], regoguard_logs: list[logging.LogRecord]
) -> None:
    authz = authorizer(LEAKY, evaluator="interpreter", decision_log=DecisionLogConfig())

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = RegoGuardMiddleware(
        Starlette(routes=[Route("/", ok)]), authorizer=authz, include_headers=["authorization"]
    )
    with TestClient(app) as client:
        r = client.get("/", headers={"authorization": SECRET})
    assert r.status_code == 500
    assert SECRET not in r.text
    deadline = time.monotonic() + 5
    while (
        "regoguard.decisions" not in {r.name for r in regoguard_logs}
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    logs = _text(regoguard_logs)
    assert "evaluation failed" in logs
    assert SECRET not in logs and "s3cr3t" not in logs, logs
    decisions = [
        json.loads(r.getMessage()) for r in regoguard_logs if r.name == "regoguard.decisions"
    ]
    assert decisions and "***" in decisions[-1]["error"]["message"]


# --- 12. Default masks -------------------------------------------------------------------------


def test_default_masks_remove_credentials_from_decision_logs(
    authorizer: Callable[..., regoguard.Authorizer], regoguard_logs: list[logging.LogRecord]
) -> None:
    authz = authorizer("package authz\nallow := true\n", decision_log=DecisionLogConfig())
    secrets = {
        "authorization": "A-1111",
        "proxy-authorization": "P-2222",
        "x-api-key": "K-3333",
        "set-cookie": "S-4444",
        "cookie": "C-5555",
        "X-Refresh-Token": "T-6666",
        "x-client-secret": "S-7777",
    }
    authz.check(
        {
            "headers": {**secrets, "x-tenant": "acme"},
            "user": {"name": "bob", "Password": "P-8888", "oauth": {"ACCESS_TOKEN": "T-9999"}},
            "query": {"reset_token": ["T-0000"]},
        }
    )
    deadline = time.monotonic() + 5
    while (
        not [r for r in regoguard_logs if r.name == "regoguard.decisions"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    lines = [r.getMessage() for r in regoguard_logs if r.name == "regoguard.decisions"]
    assert lines
    for value in [*secrets.values(), "P-8888", "T-9999", "T-0000"]:
        assert value not in lines[-1], f"{value} leaked: {lines[-1]}"
    record = json.loads(lines[-1])
    assert record["input"]["headers"] == {"x-tenant": "acme"}
    assert record["input"]["user"] == {"name": "bob", "oauth": {}}
    assert "/input/user/oauth/ACCESS_TOKEN" in record["erased"]
    # mask_names=() turns the name patterns off; pointers still apply.
    plain = DecisionLogConfig(mask_names=())
    assert plain.mask_names == [] and "/input/headers/x-api-key" in plain.mask


# --- 13. The Redis password --------------------------------------------------------------------


def test_redis_password_is_redacted_everywhere(regoguard_logs: list[logging.LogRecord]) -> None:
    # Port 1: nothing listens, so every call fails and warns.
    cfg = RedisConfig("redis://bob:hunter2-pw@127.0.0.1:1/0", key_prefix="pw", timeout_seconds=0.05)
    assert "hunter2" not in repr(cfg) and "bob:***@127.0.0.1:1" in repr(cfg)
    assert "hunter2" not in cfg.url and cfg.url == "redis://bob:***@127.0.0.1:1/0"

    @cached_authorization(redis=cfg, name="pw.check")
    def check(user: str) -> bool:
        return True

    assert check("x") is True  # Redis down: a miss, computed
    assert "regoguard L2:" in _text(regoguard_logs), "the warning path ran"
    stats = cfg.stats()
    assert "hunter2" not in repr(stats) and stats["errors"] >= 1
    assert "hunter2" not in _text(regoguard_logs)
    with pytest.raises(ConfigError) as info:
        RedisConfig("redis://:hunter2-pw@[::1", key_prefix="pw")
    assert "hunter2" not in str(info.value)
    unix = RedisConfig("redis+unix:///tmp/none.sock?db=1&pass=hunter2-pw", key_prefix="pw")
    assert "hunter2" not in repr(unix) and "pass=***" in unix.url
