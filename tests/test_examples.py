"""examples/: the basic_fastapi app through Starlette's TestClient, and run_demo.py --quick under
uvicorn (README command 1, in small)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from .conftest import load_file

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
APP = EXAMPLES / "basic_fastapi" / "app.py"
DATA = json.loads((EXAMPLES / "basic_fastapi" / "data.json").read_text())
PROJECT = "p5"


def load_example() -> ModuleType:
    return load_file("basic_fastapi_app", APP)


example = load_example()


def someone(*, role: str | None, project: str = PROJECT) -> str:
    """An ordinary user (role ``user``) with ``role`` in ``project`` (``None``: not a member)."""
    members: dict[str, str] = DATA["projects"][project]["members"]
    users: dict[str, Any] = DATA["users"]
    for user, doc in users.items():
        if doc["roles"] == ["user"] and members.get(user) == role:
            return user
    raise AssertionError(f"data.json has no ordinary user with role {role} in {project}")


OWNER, MEMBER, STRANGER = someone(role="owner"), someone(role="member"), someone(role=None)
ADMIN = "u1"


def bearer(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


@pytest.fixture
def app() -> FastAPI:
    app: FastAPI = example.create_app(bare=False)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def test_the_data_file_is_what_make_data_writes() -> None:
    make_data = load_file("make_data", APP.with_name("make_data.py"))
    assert make_data.build() == DATA
    assert len(DATA["users"]) == 2000 and len(DATA["projects"]) == 200


def test_public_pages_need_no_token(client: TestClient) -> None:
    r = client.get("/public/docs")
    assert r.status_code == 200
    assert r.json()["page"] == "docs"


def test_a_member_reads_the_project_and_the_decision_is_cached(client: TestClient) -> None:
    first = client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    assert first.status_code == 200
    assert first.json()["authorized"] == f"member of project {PROJECT}"
    assert first.json()["decided_by"] == "engine"
    second = client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    assert second.json()["decided_by"] == "l1"


@pytest.mark.parametrize(
    ("method", "path", "user", "reason"),
    [
        ("GET", f"/projects/{PROJECT}", STRANGER, f"not a member of project {PROJECT}"),
        ("DELETE", f"/projects/{PROJECT}", MEMBER, "member may not DELETE this project"),
        ("PUT", f"/projects/{PROJECT}/members/u42", OWNER, "owner may not PUT this project"),
        ("GET", "/elsewhere", MEMBER, "forbidden"),
    ],
)
def test_denials_say_why(
    client: TestClient, method: str, path: str, user: str, reason: str
) -> None:
    r = client.request(method, path, headers=bearer(user), json={"role": "member"})
    assert (r.status_code, r.json()) == (403, {"detail": reason})


def test_no_token_is_401_with_a_challenge(client: TestClient) -> None:
    r = client.get(f"/projects/{PROJECT}")
    assert (r.status_code, r.json()) == (401, {"detail": "login required"})
    assert r.headers["www-authenticate"] == "Bearer"
    bad = client.get(f"/projects/{PROJECT}", headers=bearer("nobody"))
    assert (bad.status_code, bad.json()) == (401, {"detail": "invalid bearer token"})


def test_admins_may_do_anything(client: TestClient) -> None:
    r = client.get(f"/projects/{PROJECT}", headers=bearer(ADMIN))
    assert (r.status_code, r.json()["authorized"]) == (200, "admin")
    r = client.put(f"/projects/{PROJECT}", headers=bearer(ADMIN), json={"name": "renamed"})
    assert (r.status_code, r.json()["authorized"]) == (200, "admin")


def test_authorize_lets_only_owners_rename(client: TestClient, app: FastAPI) -> None:
    path = f"/projects/{PROJECT}"
    r = client.put(path, headers=bearer(OWNER), json={"name": "renamed"})
    assert r.status_code == 200
    assert r.json() == {"id": PROJECT, "name": "renamed", "authorized": "owner"}
    # The middleware let the member through; the route's own policy says no.
    r = client.put(path, headers=bearer(MEMBER), json={"name": "mine now"})
    assert (r.status_code, r.json()) == (403, {"detail": "only the project's owners may change it"})
    # A stranger does not get past the middleware.
    r = client.put(path, headers=bearer(STRANGER), json={"name": "mine now"})
    assert (r.status_code, r.json()) == (403, {"detail": f"not a member of project {PROJECT}"})
    assert client.get(path, headers=bearer(MEMBER)).json()["name"] == "renamed"
    evaluators = app.state.authz.stats()["evaluators"]
    assert evaluators.keys() == {"data.authz.allow", "data.projects.allow"}


def test_billing_lookup_is_cached(client: TestClient, app: FastAPI) -> None:
    lookup = app.state.may_see_billing
    path = f"/projects/{PROJECT}/billing"
    r = client.get(path, headers=bearer(OWNER))
    assert r.status_code == 200
    assert r.json()["seats"] == len(DATA["projects"][PROJECT]["members"])
    assert lookup.cache_info()[:2] == (0, 1)  # hits, misses
    assert client.get(path, headers=bearer(OWNER)).status_code == 200
    assert lookup.cache_info()[:2] == (1, 1)
    r = client.get(path, headers=bearer(MEMBER))
    assert r.status_code == 403
    assert r.json() == {"detail": "the bill is for the project's owners and the finance team"}
    finance = next(u for u, doc in DATA["users"].items() if doc["roles"] == ["finance"])
    assert client.get(path, headers=bearer(finance)).status_code == 200
    # The middleware lets finance read bills only: no project page.
    r = client.get(f"/projects/{PROJECT}", headers=bearer(finance))
    assert r.status_code == (200 if finance in DATA["projects"][PROJECT]["members"] else 403)


def test_a_membership_change_takes_effect_at_once(client: TestClient, app: FastAPI) -> None:
    path = f"/projects/{PROJECT}"
    members = f"{path}/members/{STRANGER}"
    assert client.get(path, headers=bearer(STRANGER)).status_code == 403
    revision = app.state.authz.revision
    # The app calls set_data: a new revision, so the cached denial above is unreachable.
    assert client.put(members, headers=bearer(ADMIN), json={"role": "member"}).status_code == 200
    assert app.state.authz.revision != revision
    r = client.get(path, headers=bearer(STRANGER))
    assert (r.status_code, r.json()["authorized"]) == (200, f"member of project {PROJECT}")
    assert client.get(f"{path}/billing", headers=bearer(STRANGER)).status_code == 403
    # ... and invalidate_tags: the billing lookup's cached "no" goes too.
    assert client.put(members, headers=bearer(ADMIN), json={"role": "owner"}).status_code == 200
    assert client.get(f"{path}/billing", headers=bearer(STRANGER)).status_code == 200
    assert client.delete(members, headers=bearer(ADMIN)).status_code == 200
    assert client.get(path, headers=bearer(STRANGER)).status_code == 403


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    r = client.get("/stats")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    assert doc["authorizer"]["l1_hits"] == 1
    assert doc["authorizer"]["evaluations"] == 1
    assert doc["cached_authorization"]["may_see_billing"]["ttl_seconds"] == 30.0


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    client.get(f"/projects/{PROJECT}/billing", headers=bearer(OWNER))
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }
    assert samples[("regoguard_cache_hits_total", (("layer", "l1"),))] >= 1
    # Which evaluator auto picks for the example is the RVM guard's call (README, Matching OPA).
    evaluated = sum(
        samples[("regoguard_evaluations_total", (("evaluator", e),))]
        for e in ("rvm", "interpreter")
    )
    assert evaluated >= 1
    billing = "basic_fastapi_app.create_app.<locals>.may_see_billing"
    assert samples[("regoguard_cache_misses_total", (("cache", billing),))] >= 1


def test_the_bare_app_has_no_middleware_and_keeps_the_route_checks() -> None:
    with TestClient(example.create_app(bare=True)) as client:
        r = client.get(f"/projects/{PROJECT}")
        assert r.status_code == 200
        assert r.json()["authorized"] is None
        r = client.put(f"/projects/{PROJECT}", headers=bearer(MEMBER), json={"name": "x"})
        assert r.status_code == 403
        assert client.get(f"/projects/{PROJECT}/billing").status_code == 401


def test_bare_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGOGUARD_DEMO_BARE", "1")
    with TestClient(example.create_app()) as client:
        assert client.get(f"/projects/{PROJECT}").status_code == 200
    monkeypatch.setenv("REGOGUARD_DEMO_BARE", "0")
    with TestClient(example.create_app()) as client:
        assert client.get(f"/projects/{PROJECT}").status_code == 401


def test_run_demo_quick() -> None:
    demo = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "run_demo.py"), "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:  # timed out: SIGTERM lets run_demo stop its servers first
            demo.terminate()
            try:
                demo.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.communicate()
    assert demo.returncode == 0, out + err
    assert re.search(r"^  requests\s+300 in ", out, re.MULTILINE), out
    assert "without RegoGuardMiddleware" in out
    assert re.search(r"hit ratio 0\.\d{3}", out), out
    assert re.search(r"one at a time, p50 .* ms", out), out
    assert re.search(r"^done in .*, 0 failed", out, re.MULTILINE), out


def test_alert_rules_name_only_series_that_exist(client: TestClient) -> None:
    import yaml
    from prometheus_client.parser import text_string_to_metric_families

    client.get(f"/projects/{PROJECT}", headers=bearer(MEMBER))
    exposed = {
        s.name
        for f in text_string_to_metric_families(client.get("/metrics").text)
        for s in f.samples
    }
    doc = yaml.safe_load((EXAMPLES / "prometheus" / "alerts.yml").read_text())
    rules = doc["groups"][0]["rules"]
    assert {"RegoguardCacheHitRatioLow", "RegoguardEvaluationErrors", "RegoguardL2Errors"} <= {
        r["alert"] for r in rules
    }
    for rule in rules:
        names = set(re.findall(r"regoguard_[a-z0-9_]+", rule["expr"]))
        assert names, rule["alert"]
        assert names <= exposed, (rule["alert"], names - exposed)
