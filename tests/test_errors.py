"""Every error class, with its exact first line or input path."""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import regoguard

from .conftest import POLICIES, REALISTIC

BROKEN = POLICIES / "broken"

# The first line of the message for each broken fixture (tests/policies/README.md locates each).
FIRST_LINES = {
    "syntax_error.rego": "tests/policies/broken/syntax_error.rego:4:21: rego_parse_error: expecting expression",
    "unterminated_string.rego": "tests/policies/broken/unterminated_string.rego:4:33: rego_parse_error: invalid character in string",
    "missing_if_v1.rego": "tests/policies/broken/missing_if_v1.rego:4:7: rego_parse_error: `if` keyword is required before rule body",
    "conflicting_defaults.rego": "tests/policies/broken/conflicting_defaults.rego:5:1: rego_type_error: multiple default rules data.authz.allow found (first at tests/policies/broken/conflicting_defaults.rego:4)",
    "undefined_function.rego": "tests/policies/broken/undefined_function.rego:4:10: rego_type_error: undefined function no_such_function",
}


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Paths in messages are as the user gave them: give them relative to the repo root.
    monkeypatch.chdir(POLICIES.parent.parent)


@pytest.mark.parametrize("name", sorted(FIRST_LINES))
def test_policy_error_first_line(name: str) -> None:
    path = f"tests/policies/broken/{name}"
    with pytest.raises(regoguard.PolicyError) as info:
        regoguard.Authorizer(path)
    err = info.value
    assert str(err).splitlines()[0] == FIRST_LINES[name]
    line, column = (int(x) for x in FIRST_LINES[name].split(":")[1:3])
    assert (err.file, err.line, err.column) == (path, line, column)
    assert err.errors[0]["file"] == path and err.errors[0]["line"] == line
    assert isinstance(err, regoguard.RegoguardError)


def test_every_broken_file_is_reported_not_just_the_first() -> None:
    with pytest.raises(regoguard.PolicyError) as info:
        regoguard.Authorizer("tests/policies/broken")
    files = [e["file"] for e in info.value.errors]
    # The three parse failures are all reported; compile checks run once parsing succeeds.
    assert files == [
        "tests/policies/broken/missing_if_v1.rego",
        "tests/policies/broken/syntax_error.rego",
        "tests/policies/broken/unterminated_string.rego",
    ]
    assert str(info.value).count("rego_parse_error") == 3
    assert "^" in str(info.value), "regorus's snippet and caret are kept"


def test_bad_data_files() -> None:
    with pytest.raises(regoguard.DataError) as info:
        regoguard.Authorizer(
            "tests/policies/good/simple", data="tests/policies/broken/bad_data/data.json"
        )
    assert str(info.value).startswith(
        "tests/policies/broken/bad_data/data.json:4:1: trailing comma"
    )
    with pytest.raises(regoguard.DataError, match="bad.yaml"):
        regoguard.Authorizer(
            "tests/policies/good/simple", data="tests/policies/broken/bad_data/bad.yaml"
        )
    with pytest.raises(regoguard.DataError, match="must be an object, got array"):
        regoguard.Authorizer(
            "tests/policies/good/simple", data="tests/policies/broken/bad_data/not_object.json"
        )


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ("3", "got number"),
        ('"yes"', "got string"),
        ("[true]", "got array"),
        ("null", "got null"),
        ('{"reason": "x"}', "no boolean `allow`"),
        ('{"allow": "true"}', "`allow` in the result must be a boolean, got string"),
        ('{"allow": true, "status": 42}', "`status`"),
        ('{"allow": true, "headers": {"a": 1}}', "`headers`"),
        ('{"allow": true, "cache_ttl_seconds": -1}', "`cache_ttl_seconds`"),
        ('{"allow": true, "tags": "t"}', "`tags`"),
    ],
)
def test_bad_result_shapes(
    authorizer: Callable[..., regoguard.Authorizer], result: str, message: str
) -> None:
    a = authorizer(f"package authz\nallow := {result}\n")
    with pytest.raises(regoguard.EvaluationError) as info:
        a.check({})
    assert info.value.entrypoint == "data.authz.allow"
    assert str(info.value).startswith("data.authz.allow: ")
    assert message in str(info.value)


def test_conflicting_outputs_are_an_evaluation_error(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    a = authorizer("package authz\nallow := true if input.a\nallow := false if input.b\n")
    assert a.stats()["evaluators"]["data.authz.allow"] == "rvm"
    with pytest.raises(regoguard.EvaluationError):
        a.check({"a": True, "b": True})
    assert a.check({"a": True}).allow


def test_unknown_entrypoint_fails_at_construction() -> None:
    with pytest.raises(regoguard.EvaluationError) as info:
        regoguard.Authorizer("tests/policies/good/simple", entrypoint="data.authz.alow")
    assert info.value.entrypoint == "data.authz.alow"
    assert "unknown entrypoint" in str(info.value)


class BytesPath:
    """An ``os.PathLike`` whose path is bytes."""

    def __fspath__(self) -> bytes:
        return b"tests/policies/good/simple"


class StrPath:
    def __fspath__(self) -> str:
        return "tests/policies/good/simple"


def test_paths_are_str_or_path_like() -> None:
    """The authorizer's paths refuse other types with TypeError, a Bundle's with ConfigError."""
    regoguard.Authorizer(StrPath())
    regoguard.Authorizer([Path("tests/policies/good/simple")], data=Path(REALISTIC, "data.json"))
    with pytest.raises(TypeError, match="^policies must be a str or os.PathLike$"):
        regoguard.Authorizer(42)
    with pytest.raises(TypeError, match="^each policy path must be a str path$"):
        regoguard.Authorizer([BytesPath()])
    with pytest.raises(TypeError, match=r"^data \(a dict or a path\) must be a str or os"):
        regoguard.Authorizer("tests/policies/good/simple", data=42)
    assert regoguard.Bundle(StrPath()).source == "tests/policies/good/simple"
    with pytest.raises(regoguard.ConfigError, match="source must be a str or os.PathLike"):
        regoguard.Bundle(42)
    with pytest.raises(regoguard.ConfigError, match="persist_dir must be a str path"):
        regoguard.Bundle("http://127.0.0.1:9/b.tar.gz", persist_dir=BytesPath())


class Color(Enum):
    RED = 1


class Role(str, Enum):
    ADMIN = "admin"


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        ({"user": {"groups": {"a"}}}, "input.user.groups", "'set'"),
        ({"user": {"groups": frozenset()}}, "input.user.groups", "'frozenset'"),
        ({"token": b"x"}, "input.token", "'bytes'"),
        ({"score": math.nan}, "input.score", "NaN"),
        ({"score": [1.0, math.inf]}, "input.score[1]", "inf"),
        ({"user": {1: "x"}}, "input.user", "dict key 1 (int) is not a string"),
        ({"user": {("a",): "x"}}, "input.user", "is not a string"),
        ({"color": Color.RED}, "input.color", "'Color'"),
        ({"who": object()}, "input.who", "'object'"),
        ({"odd key": {"x": {1}}}, 'input["odd key"].x', "'set'"),
        ({"s": "\ud800"}, "input.s", "lone surrogate"),
        ([{"a": {"b": None}}, {2}], "input[1]", "'set'"),
    ],
)
def test_input_error_names_the_path(
    realistic: regoguard.Authorizer, value: Any, path: str, message: str
) -> None:
    with pytest.raises(regoguard.InputError) as info:
        realistic.check(value)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert isinstance(info.value, TypeError)
    assert realistic.stats()["evaluations"] == 0, "nothing is evaluated for a bad input"


def test_depth_limit(realistic: regoguard.Authorizer) -> None:
    ok: Any = 1
    for _ in range(regoguard.MAX_INPUT_DEPTH):
        ok = {"a": ok}
    realistic.check(ok)  # exactly MAX_INPUT_DEPTH nested dicts
    with pytest.raises(regoguard.InputError, match="nested deeper than 64"):
        realistic.check({"a": ok})
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(regoguard.InputError) as info:
        realistic.check(cyclic)
    assert info.value.path.startswith("input.self.self")


def test_json_subclasses_are_accepted(realistic: regoguard.Authorizer) -> None:
    class D(dict[str, Any]):
        pass

    d1 = realistic.check(
        D(user=D(id="u1", roles=[Role.ADMIN]), method="GET", path="/x", path_segments=("x",))
    )
    d2 = realistic.check(
        {
            "user": {"id": "u1", "roles": ["admin"]},
            "method": "GET",
            "path": "/x",
            "path_segments": ["x"],
        }
    )
    assert d1.allow and d2.allow and d2.source == "l1", "the same canonical input"
    assert realistic.check({"n": True}).result == realistic.check({"n": True}).result
    # bool and int stay apart: True is not 1.
    assert realistic.stats()["entries"] == 2


def test_check_many_reports_the_index() -> None:
    a = regoguard.Authorizer("tests/policies/good/simple")
    with pytest.raises(regoguard.InputError) as info:
        a.check_many([{}, {}, {"x": {1, 2}}])
    assert info.value.path == "inputs[2].x"


def test_class_hierarchy() -> None:
    for cls in (
        regoguard.PolicyError,
        regoguard.DataError,
        regoguard.EvaluationError,
        regoguard.ConfigError,
        regoguard.InputError,
    ):
        assert issubclass(cls, regoguard.RegoguardError) and cls.__module__ == "regoguard"
    assert issubclass(regoguard.ConfigError, ValueError)
    assert issubclass(regoguard.InputError, TypeError)
    assert not issubclass(regoguard.PolicyError, ValueError)


def test_data_with_no_json_form(tmp_path: Path) -> None:
    with pytest.raises(regoguard.DataError, match=r"data\.x"):
        regoguard.Authorizer("tests/policies/good/simple", data={"x": {1, 2}})
