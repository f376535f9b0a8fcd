"""``python -m regoguard test|eval|check`` against fixture policies (tests/policies/cli/)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from regoguard._cli import main

CLI = Path(__file__).parent / "policies" / "cli"
SUITE = str(CLI / "suite")
FAILING = str(CLI / "failing")
DATA = str(CLI / "data.json")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def run_json(*argv: str) -> tuple[int, Any]:
    code, text = run(*argv, "--format", "json")
    return code, json.loads(text)


# -- test -----------------------------------------------------------------------------------


def test_a_passing_suite_exits_0_and_skips_todo_tests() -> None:
    code, report = run_json("test", SUITE, "--data", DATA)
    assert code == 0
    outcomes = {t["rule"]: t["outcome"] for t in report["tests"]}
    assert outcomes == {
        "test_admin_allowed": "pass",
        "test_public_get": "pass",
        "test_guest_denied": "pass",
        "test_limit_from_data": "pass",
        "todo_test_later": "skip",
    }
    assert report["summary"] == {"pass": 4, "fail": 0, "error": 0, "skip": 1, "total": 5}


def test_a_data_file_given_as_a_path_is_data_too() -> None:
    code, report = run_json("test", SUITE, DATA)
    assert code == 0, report


def test_without_its_data_the_test_reading_it_fails() -> None:
    code, report = run_json("test", SUITE)
    assert code == 1
    failed = [t["rule"] for t in report["tests"] if t["outcome"] == "fail"]
    assert failed == ["test_limit_from_data"]


def test_failing_and_erroring_tests_exit_1_with_where_they_stopped() -> None:
    code, report = run_json("test", FAILING)
    assert code == 1
    by_rule = {t["rule"]: t for t in report["tests"]}
    assert by_rule["test_ok"]["outcome"] == "pass"
    wrong = by_rule["test_wrong"]
    assert wrong["outcome"] == "fail" and wrong["undefined"] is True
    assert wrong["failed_at"] == [14, "x == 3"] or tuple(wrong["failed_at"]) == (14, "x == 3")
    assert wrong["prints"] and "x is 2" in wrong["prints"][0]
    assert by_rule["test_undefined"]["outcome"] == "fail"
    conflict = by_rule["test_conflict"]
    assert conflict["outcome"] == "error"
    assert conflict["error"].startswith(f"{FAILING}/p.rego:23:6: ")
    assert "multiple outputs" in conflict["error"]
    assert report["summary"] == {"pass": 1, "fail": 2, "error": 1, "skip": 0, "total": 4}


def test_verbose_text_shows_the_failing_expression_and_prints() -> None:
    code, text = run("test", FAILING, "-v")
    assert code == 1
    assert "data.p.test_ok: PASS" in text
    assert "data.p.test_wrong: FAIL" in text
    assert "p.rego:14: x == 3" in text
    assert "print: " in text and "x is 2" in text
    assert "data.p.test_conflict: ERROR" in text
    assert text.rstrip().endswith("ERROR: 1/4")
    quiet = run("test", FAILING)[1]
    assert "test_ok" not in quiet and "test_wrong: FAIL" in quiet


def test_run_selects_tests_by_regex_on_their_full_name() -> None:
    code, report = run_json("test", FAILING, "--run", r"^data\.p\.test_ok$")
    assert code == 0
    assert [t["rule"] for t in report["tests"]] == ["test_ok"]
    code, report = run_json("test", SUITE, "--data", DATA, "-r", "admin|public")
    assert [t["rule"] for t in report["tests"]] == ["test_admin_allowed", "test_public_get"]


def test_coverage_reports_per_file_lines() -> None:
    code, report = run_json("test", SUITE, "--data", DATA, "--coverage")
    assert code == 0
    cov = {Path(c["file"]).name: c for c in report["coverage"]}
    policy = cov["authz.rego"]
    # Every rule line of the policy ran under some test.
    assert policy["not_covered"] == [] and policy["percent"] == 100.0
    assert set(policy["covered"]) >= {5, 8, 9, 12, 14}
    # Only the todo test's body never ran.
    assert cov["authz_test.rego"]["not_covered"] == [22]
    assert cov["authz_test.rego"]["percent"] == pytest.approx(80.0)
    # Fewer tests, less coverage: the admin rule alone leaves the public one uncovered.
    code, report = run_json("test", SUITE, "--data", DATA, "--coverage", "--run", "admin")
    policy = {Path(c["file"]).name: c for c in report["coverage"]}["authz.rego"]
    assert policy["not_covered"] == [9] and policy["percent"] == pytest.approx(500 / 6)
    code, text = run("test", SUITE, "--data", DATA, "--coverage")
    assert "authz.rego: 100.00% (6/6 lines)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["test", "tests/policies/cli/nope"], "no such file or directory"),
        (["test", FAILING, "--run", "("], "is not a regular expression"),
        (["test", FAILING, "--run", "zzz"], "no test_* rules found matching 'zzz'"),
        (["test", SUITE, "--data", "missing.json"], "missing.json: no such file"),
        (["test", DATA], "no policy given"),
        (["test", "tests/policies/broken"], "rego_parse_error"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert err.startswith("regoguard: error: ") and message in err, err


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "regoguard", "test", FAILING],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "FAIL: 2/4" in proc.stdout
    usage = subprocess.run(
        [sys.executable, "-m", "regoguard", "frobnicate"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


# -- eval -----------------------------------------------------------------------------------


def test_eval_prints_the_json_value_of_any_query() -> None:
    code, text = run("eval", "-d", SUITE, "-d", DATA, "data.authz.limit")
    assert (code, json.loads(text)) == (0, 10)
    code, text = run("eval", "-d", SUITE, "-i", str(CLI / "admin.json"), "data.authz")
    doc = json.loads(text)
    assert doc["allow"] is True and doc["is_admin"] is True
    code, text = run("eval", "-d", SUITE, "-d", DATA, "x := data.limits.max + 1")
    assert json.loads(text) == [{"x": 11}]


def test_eval_of_an_undefined_query_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run("eval", "-d", SUITE, "data.authz.nothing")
    assert (code, text) == (1, "")
    assert capsys.readouterr().err.strip() == "undefined"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "-d", SUITE, "data.authz["], "query"),
        (["eval", "-d", SUITE, "-i", str(CLI / "broken.json"), "input"], "broken.json: not JSON"),
        (["eval", "-d", SUITE, "-i", "nope.json", "input"], "nope.json: No such file"),
        (["eval", "-d", "nope/", "input"], "nope/: no such file or directory"),
    ],
)
def test_eval_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert message in err, err


# -- check ----------------------------------------------------------------------------------


def test_check_says_allowed_and_which_rules_were_true() -> None:
    code, report = run_json("check", "-d", SUITE, "-d", DATA, "-i", str(CLI / "admin.json"))
    assert code == 0
    assert report["allow"] is True and report["package"] == "data.authz"
    assert report["true_rules"] == ["allow", "is_admin"]
    assert report["rules"]["limit"] == 10
    code, text = run("check", "-d", SUITE, "-d", DATA, "-i", str(CLI / "admin.json"))
    assert text.startswith("ALLOWED by data.authz.allow")
    assert "rules true in data.authz: allow, is_admin" in text


def test_check_builds_a_request_input_as_the_middleware_does() -> None:
    code, report = run_json("check", "-d", SUITE, "--method", "get", "--path", "/public?a=1")
    assert code == 0
    assert report["input"]["method"] == "GET" and report["input"]["query"] == {"a": ["1"]}
    assert report["input"]["user"] is None
    code, report = run_json(
        "check",
        "-d",
        SUITE,
        "--method",
        "POST",
        "--path",
        "/x",
        "--user",
        '{"role": "guest"}',
        "--header",
        "X-Tenant: acme",
    )
    assert code == 1
    assert report["allow"] is False and report["reason"] is None
    assert report["input"]["headers"] == {"x-tenant": "acme"}
    assert report["true_rules"] == []


def test_check_of_a_package_entrypoint_lists_its_rules() -> None:
    code, report = run_json("check", "-d", SUITE, "-e", "data.authz", "-i", str(CLI / "admin.json"))
    assert code == 0 and report["package"] == "data.authz"


def test_check_of_an_undefined_decision_says_undefined() -> None:
    policy = str(CLI / "failing" / "p.rego")
    code, text = run(
        "check", "-d", policy, "-e", "data.p.test_undefined", "-i", str(CLI / "admin.json")
    )
    assert code == 1
    assert "DENIED" in text and "reason: undefined" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "-d", SUITE], "give -i input.json, or --method and --path"),
        (["check", "-d", SUITE, "--method", "GET", "--path", "x"], "--path must start with '/'"),
        (
            ["check", "-d", SUITE, "--method", "GET", "--path", "/", "--user", "{"],
            "--user is not JSON",
        ),
        (["check", "-d", SUITE, "--method", "GET", "--path", "/", "--header", "x"], "NAME:VALUE"),
        (
            ["check", "-d", SUITE, "-e", "data.authz.nope", "--method", "GET", "--path", "/"],
            "unknown entrypoint",
        ),
        (["check", "-d", SUITE, "-i", str(CLI / "broken.json")], "not JSON"),
    ],
)
def test_check_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, out=io.StringIO()) == 2
    err = capsys.readouterr().err
    assert message in err, err


# -- the verdicts are OPA's ------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["suite", "failing"])
def test_test_outcomes_match_opa_evaluating_each_test_rule(opa: Any, suite: str) -> None:
    from tests.opa_oracle import UNDEFINED

    folder = CLI / suite
    files = {p.name: p.read_text() for p in sorted(folder.glob("*.rego"))}
    data = json.loads((CLI / "data.json").read_text()) if suite == "suite" else None
    engine = opa(files, data)
    try:
        argv = ["test", str(folder)] + (["--data", DATA] if data is not None else [])
        _, report = run_json(*argv)
        for t in report["tests"]:
            if t["outcome"] == "skip":
                continue
            try:
                value = engine.eval(t["name"])
            except Exception as exc:  # noqa: BLE001 - the binding's error class, whatever its name
                assert "eval_builtin_error" not in str(exc), exc  # strict-mode only (see conftest)
                expected = "error"
            else:
                expected = "pass" if value is True else "fail"
                assert value is UNDEFINED or value is False or value is True
            assert t["outcome"] == expected, t["name"]
    finally:
        engine.close()


def test_eval_values_match_opa(opa: Any) -> None:
    files = {p.name: p.read_text() for p in sorted((CLI / "suite").glob("*.rego"))}
    data = json.loads((CLI / "data.json").read_text())
    doc = json.loads((CLI / "admin.json").read_text())
    engine = opa(files, data)
    try:
        for query in ("data.authz.allow", "data.authz.is_admin", "data.authz.limit"):
            code, text = run("eval", "-d", SUITE, "-d", DATA, "-i", str(CLI / "admin.json"), query)
            assert (code, json.loads(text)) == (0, engine.eval(query, doc)), query
    finally:
        engine.close()
