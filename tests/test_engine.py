"""Loading policies and data, revisions, reload and set_data, evaluators, entrypoints."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import regoguard

from .conftest import POLICIES, REALISTIC, realistic_input

SIMPLE = POLICIES / "good" / "simple"
MULTI = POLICIES / "good" / "multi"

ADMIN = {"user": {"id": "root", "roles": ["admin"]}}


def test_file_folder_list_and_pathlike() -> None:
    by_folder = regoguard.Authorizer(SIMPLE)
    by_file = regoguard.Authorizer(str(SIMPLE / "authz.rego"))
    by_list = regoguard.Authorizer([SIMPLE / "authz.rego"])
    assert (
        by_folder.check(ADMIN).allow and by_file.check(ADMIN).allow and by_list.check(ADMIN).allow
    )
    # The revision is about content: where the files were loaded from does not change it.
    assert by_folder.revision == by_list.revision == by_file.revision


def test_recursive_folder_with_packages_and_yaml_data() -> None:
    a = regoguard.Authorizer(MULTI, data=MULTI / "data.yaml")
    assert a.check(
        {"method": "DELETE", "path": "/x", "user": {"id": "s", "roles": ["superuser"]}}
    ).allow
    assert a.check({"method": "GET", "path": "/docs/api", "user": {"id": "z", "roles": []}}).allow
    assert not a.check({"method": "GET", "path": "/docs/x", "user": {"id": "z", "roles": []}}).allow


def test_undefined_result_is_a_deny_with_reason() -> None:
    d = regoguard.Authorizer(SIMPLE).check({"user": {"id": "u", "roles": []}})
    assert (d.allow, d.reason, d.result) == (False, "undefined", None)


def test_decision_fields(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer("""package authz
allow := {"allow": false, "reason": "login first", "status": 401,
          "headers": {"WWW-Authenticate": "Bearer"}, "tags": ["t"]}
""")
    d = a.check({})
    assert (d.allow, d.reason, d.status, d.headers, d.tags, d.source) == (
        False,
        "login first",
        401,
        {"WWW-Authenticate": "Bearer"},
        ["t"],
        "engine",
    )
    assert d.revision == a.revision and len(d.decision_id) == 36
    assert "allow=False" in repr(d)
    with pytest.raises(TypeError, match="decision.allow"):
        bool(d)


def test_data_dict_and_set_data(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer(
        "package authz\nallow if input.user in data.teams.a.members\n",
        data={"teams": {"a": {"members": ["x"]}}},
    )
    assert a.check({"user": "x"}).allow and not a.check({"user": "y"}).allow
    r = a.set_data(["teams", "a", "members"], ["y"])
    assert a.revision == r and a.check({"user": "y"}).allow and not a.check({"user": "x"}).allow
    a.set_data("/teams/b", {"members": []})  # creates the path
    a.set_data("", {"teams": {"a": {"members": ["z"]}}})
    assert a.check({"user": "z"}).allow
    with pytest.raises(regoguard.DataError):
        a.set_data("teams/a/members/0", 1)  # crosses a list
    with pytest.raises(regoguard.DataError):
        a.set_data("", [1, 2])  # the root must be an object
    with pytest.raises(regoguard.DataError, match=r"data\.teams\.a"):
        a.set_data("teams/a", {1: 2})
    with pytest.raises(TypeError):
        a.set_data(3, 1)


def test_reload_rereads_and_keeps_serving_on_failure(tmp_path: Path) -> None:
    (tmp_path / "authz.rego").write_text('package authz\nallow if input.user.role == "admin"\n')
    (tmp_path / "data.json").write_text("{}")
    a = regoguard.Authorizer(tmp_path, data=tmp_path / "data.json")
    r0 = a.revision
    assert a.reload() == r0, "nothing changed"
    (tmp_path / "authz.rego").write_text("package authz\nallow if {\n")
    with pytest.raises(regoguard.PolicyError):
        a.reload()
    assert a.revision == r0 and a.check({"user": {"role": "admin"}}).allow
    (tmp_path / "data.json").write_text("[")
    (tmp_path / "authz.rego").write_text("package authz\nallow if input.user.role == data.role\n")
    with pytest.raises(regoguard.DataError):
        a.reload()
    (tmp_path / "data.json").write_text('{"role": "ops"}')
    r1 = a.reload()
    assert r1 != r0 and a.revision == r1
    assert (
        a.check({"user": {"role": "ops"}}).allow and not a.check({"user": {"role": "admin"}}).allow
    )
    s = a.stats()
    assert (s["reloads"], s["reload_errors"]) == (2, 2)


def test_other_entrypoints_register_on_first_use(realistic: regoguard.Authorizer) -> None:
    d = realistic.check(realistic_input(), entrypoint="data.authz.is_member")
    assert d.allow and d.result is True
    assert realistic.stats()["evaluators"] == {
        "data.authz.allow": "rvm",
        "data.authz.is_member": "rvm",
    }
    with pytest.raises(regoguard.EvaluationError) as info:
        realistic.check({}, entrypoint="data.authz.nope")
    assert info.value.entrypoint == "data.authz.nope"
    with pytest.raises(regoguard.ConfigError):
        realistic.check({}, entrypoint="authz.allow")


def test_evaluator_choice(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    with_policy = 'package authz\nis_admin if input.role == "admin"\nallow if is_admin with input.role as "admin"\n'
    assert authorizer(with_policy).stats()["evaluators"]["data.authz.allow"] == "interpreter"
    with pytest.raises(regoguard.ConfigError, match="RVM cannot compile"):
        authorizer(with_policy, evaluator="rvm")
    with pytest.raises(regoguard.ConfigError, match="evaluator"):
        authorizer(with_policy, evaluator="fast")


def test_rego_v0(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    v0 = 'package authz\nallow { input.user == "admin" }\n'
    assert authorizer(v0, rego_v0=True).check({"user": "admin"}).allow
    with pytest.raises(regoguard.PolicyError):
        authorizer(v0)


def test_constructor_defaults(realistic: regoguard.Authorizer) -> None:
    assert realistic.entrypoint == "data.authz.allow"
    assert realistic.stats()["max_entries"] == 100_000
    c = regoguard.CacheConfig()
    assert (c.max_entries, c.ttl_seconds, c.deny_ttl_seconds) == (100_000, 60.0, None)
    assert c == regoguard.CacheConfig(max_entries=100_000)
    assert "max_entries=100000" in repr(c)
    with pytest.raises(TypeError):
        regoguard.CacheConfig(10)  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_entries": 0},
        {"max_entries": -1},
        {"ttl_seconds": -1.0},
        {"ttl_seconds": float("nan")},
        {"deny_ttl_seconds": float("inf")},
    ],
)
def test_cache_config_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(regoguard.ConfigError) as info:
        regoguard.CacheConfig(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_bad_constructor_arguments(tmp_path: Path) -> None:
    with pytest.raises(regoguard.ConfigError, match="does not exist"):
        regoguard.Authorizer(tmp_path / "nope")
    with pytest.raises(regoguard.ConfigError, match="no .rego files"):
        regoguard.Authorizer(tmp_path)
    with pytest.raises(regoguard.ConfigError, match="policies is empty"):
        regoguard.Authorizer([])
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(regoguard.ConfigError, match="not a .rego file"):
        regoguard.Authorizer(tmp_path / "x.txt")
    with pytest.raises(TypeError):
        regoguard.Authorizer(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cache"):
        regoguard.Authorizer(SIMPLE, cache={"max_entries": 1})  # type: ignore[arg-type]
    with pytest.raises(regoguard.ConfigError, match=r"\.json, \.yaml or \.yml"):
        regoguard.Authorizer(SIMPLE, data=tmp_path / "x.txt")
    with pytest.raises(regoguard.ConfigError, match="does not exist"):
        regoguard.Authorizer(SIMPLE, data=tmp_path / "missing.json")
    with pytest.raises(regoguard.DataError, match="must be an object"):
        regoguard.Authorizer(SIMPLE, data=POLICIES / "broken" / "bad_data" / "not_object.json")
    with pytest.raises(regoguard.ConfigError, match="full rule path"):
        regoguard.Authorizer(SIMPLE, entrypoint="allow")


def test_data_conflicting_with_a_rule_is_a_data_error(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    with pytest.raises(regoguard.RegoguardError):
        authorizer("package authz\nallow := true\n", data={"authz": {"allow": False}})


def test_interpreter_exits_cleanly_after_parallel_checks() -> None:
    script = textwrap.dedent(f"""
        import regoguard
        a = regoguard.Authorizer({str(REALISTIC)!r}, data={str(REALISTIC / "data.json")!r})
        inputs = [{json.dumps(realistic_input())}] * 50
        assert len(a.check_many(inputs)) == 50
        print("ok")
    """)
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
        )
        assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr
