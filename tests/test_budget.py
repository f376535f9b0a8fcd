"""Evaluation budgets (caching rule 9): hostile inputs end within the budget as an
EvaluationError, never cached, and the process stays healthy (issue 9 item 9: not even an
allocation failure under ``ulimit -v`` aborts it)."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import regoguard

HOSTILE = """package authz

default allow := false

allow if units.parse_bytes(input.size) > 0

allow if count(numbers.range(0, input.n)) > 1

allow if input.ok == true
"""

# Generous: the budget is 0.1 s; the bound only shows that nothing runs for seconds.
BOUND_S = 5.0


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize("evaluator", ["auto", "interpreter"])
@pytest.mark.parametrize(
    "hostile", [{"size": "10e10000000EiB"}, {"n": 300_000_000}], ids=["parse_bytes", "range"]
)
def test_hostile_inputs_end_within_the_budget(
    authorizer: Any, evaluator: str, hostile: dict[str, Any]
) -> None:
    authz = authorizer({"authz.rego": HOSTILE}, evaluator=evaluator)
    before = _rss_kb()
    for _ in range(2):  # the second is not served from the cache: errors are never cached
        started = time.monotonic()
        with pytest.raises(regoguard.EvaluationError, match="evaluation budget exceeded"):
            authz.check(hostile)
        assert time.monotonic() - started < BOUND_S
    assert _rss_kb() - before < 512 * 1024, "RSS grew by more than 512 MiB"
    # Healthy: the next decision is fine.
    assert authz.check({"ok": True}).allow
    stats = authz.stats()
    assert stats["budget_exceeded"] == 2
    assert stats["entries"] == 1
    assert "regoguard_eval_budget_exceeded_total" in authz.metrics_text()


def test_auto_evaluates_guarded_builtins_on_the_interpreter(authorizer: Any) -> None:
    authz = authorizer({"authz.rego": HOSTILE})
    assert authz.stats()["evaluators"] == {"data.authz.allow": "interpreter"}
    assert "numbers.range" in authz.stats()["evaluator_reasons"]["data.authz.allow"]
    # Ordinary arguments decide as OPA does.
    assert authz.check({"size": "1KiB"}).allow
    assert authz.check({"n": 3}).allow


LOOP = """package authz

default allow := false

allow if {
	some x in input.xs
	some y in input.xs
	some z in input.xs
	x + y + z == -1
}
"""


@pytest.mark.parametrize("evaluator", ["rvm", "interpreter"])
def test_time_budget_stops_a_long_evaluation(authorizer: Any, evaluator: str) -> None:
    authz = authorizer({"authz.rego": LOOP}, evaluator=evaluator, eval_timeout_seconds=0.05)
    started = time.monotonic()
    with pytest.raises(regoguard.EvaluationError, match="evaluation budget exceeded"):
        authz.check({"xs": list(range(400))})
    assert time.monotonic() - started < BOUND_S
    assert not authz.check({"xs": [1, 2]}).allow
    assert authz.stats()["budget_exceeded"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eval_timeout_seconds": 0},
        {"eval_timeout_seconds": -1.0},
        {"eval_timeout_seconds": float("nan")},
        {"eval_memory_bytes": 1000},
    ],
)
def test_bad_budgets_are_config_errors(authorizer: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(regoguard.ConfigError):
        authorizer({"authz.rego": HOSTILE}, **kwargs)


def test_allocation_failure_under_ulimit_is_an_evaluation_error(tmp_path: Path) -> None:
    """Issue 9 item 9: under an address-space limit the hostile range is refused before it is
    reserved, so the process gets an EvaluationError instead of SIGABRT."""
    (tmp_path / "authz.rego").write_text(HOSTILE)
    script = textwrap.dedent(
        f"""
        import resource, regoguard
        limit = 3 << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        for ev in ("auto", "interpreter"):
            a = regoguard.Authorizer({str(tmp_path)!r}, evaluator=ev)
            try:
                a.check({{"n": 300_000_000}})
                print("allowed?")
            except regoguard.EvaluationError as e:
                assert "budget" in str(e), e
            assert a.check({{"ok": True}}).allow
        print("healthy")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "healthy"


GLOB = """package authz

default allow := false

allow if not glob.match(input.p, ["."], input.s)
"""


@pytest.mark.parametrize("evaluator", ["rvm", "interpreter"])
@pytest.mark.parametrize(
    "hostile",
    [{"p": "a*" * 40, "s": "a" * 40 + "."}, {"p": "a?" * 2000, "s": "a"}],
    ids=["backtracking", "long pattern"],
)
def test_a_hostile_glob_ends_within_the_budget_and_never_grants(
    authorizer: Any, evaluator: str, hostile: dict[str, str]
) -> None:
    """gobwas/glob (OPA's) backtracks without bound; here the match counts against the time
    budget and spending it fails the evaluation: under `not`, an undefined match would grant."""
    authz = authorizer({"authz.rego": GLOB}, evaluator=evaluator)
    started = time.monotonic()
    with pytest.raises(regoguard.EvaluationError, match="evaluation budget exceeded"):
        authz.check(hostile)
    assert time.monotonic() - started < BOUND_S
    assert not authz.check({"p": "a*", "s": "ab"}).allow
    assert authz.check({"p": "b*", "s": "ab"}).allow
    assert authz.stats()["budget_exceeded"] == 1
