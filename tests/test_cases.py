"""The shared decision oracle (tests/cases/*.yaml) through the Python API: RVM and interpreter,
cached and uncached, check and check_many. cargo's crates/regoguard-core/tests/cases.rs reads the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import regoguard

from .conftest import load_case_files

CASE_FILES = load_case_files()


def _params() -> list[Any]:
    out = []
    for name, spec in CASE_FILES:
        for evaluator in ("auto", "interpreter"):
            for cached in (True, False):
                out.append(
                    pytest.param(
                        name,
                        spec,
                        evaluator,
                        cached,
                        id=f"{name}-{evaluator}-{'cached' if cached else 'uncached'}",
                    )
                )
    return out


def _differs(case: dict[str, Any], authz: regoguard.Authorizer) -> bool:
    if "known_difference" not in case:
        return False
    on = case.get("known_difference_on")
    return on is None or authz.stats()["evaluators"][authz.entrypoint] == on


def _check(case: dict[str, Any], decide: Any) -> None:
    if case.get("error"):
        with pytest.raises(regoguard.EvaluationError) as info:
            decide()
        assert info.value.entrypoint
        return
    d = decide()
    if "allow" in case:
        assert d.allow is case["allow"], (case["note"], d.result)
    if "result" in case:
        assert d.result == case["result"], case["note"]
    if "reason" in case:
        assert d.reason == case["reason"], case["note"]
    if "status" in case:
        assert d.status == case["status"], case["note"]
    if "headers" in case:
        assert d.headers == case["headers"], case["note"]


@pytest.mark.parametrize(("name", "spec", "evaluator", "cached"), _params())
def test_case_file(
    tmp_path: Path, name: str, spec: dict[str, Any], evaluator: str, cached: bool
) -> None:
    for file, text in spec["policies"].items():
        path = tmp_path / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    kwargs: dict[str, Any] = {}
    if not cached:
        kwargs["cache"] = None
    authz = regoguard.Authorizer(
        tmp_path,
        entrypoint=spec.get("entrypoint", "data.authz.allow"),
        data=spec.get("data") or {},
        rego_v0=spec.get("rego_v0", False),
        evaluator=evaluator,
        **kwargs,
    )
    cases = [c for c in spec["cases"] if not _differs(c, authz)]
    assert cases
    for round_ in range(2):
        for case in cases:
            _check(case, lambda case=case: authz.check(case["input"]))
    # check_many agrees with check, in order.
    ok = [c for c in cases if not c.get("error")]
    decisions = authz.check_many([c["input"] for c in ok])
    assert [d.allow for d in decisions] == [c["allow"] for c in ok]


def test_rvm_and_interpreter_agree_on_realistic_inputs() -> None:
    from .conftest import REALISTIC, realistic_input

    rvm = regoguard.Authorizer(REALISTIC, data=REALISTIC / "data.json", evaluator="rvm", cache=None)
    interp = regoguard.Authorizer(
        REALISTIC, data=REALISTIC / "data.json", evaluator="interpreter", cache=None
    )
    assert rvm.stats()["evaluators"] == {"data.authz.allow": "rvm"}
    assert interp.stats()["evaluators"] == {"data.authz.allow": "interpreter"}
    for user in range(45):
        for project in range(38, 62):
            for method in ("GET", "POST"):
                for roles in (("user",), ("admin",), ()):
                    i = realistic_input(f"u{user}", str(project), method, roles)
                    assert rvm.check(i).result == interp.check(i).result, i
