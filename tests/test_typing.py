"""The stub is the user reference: it must match the native module exactly, and public usage
must type-check under mypy --strict."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy")

ROOT = Path(__file__).parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=300,
    )


def test_stub_matches_runtime() -> None:
    out = _run("mypy.stubtest", "regoguard._regoguard")
    assert out.returncode == 0, out.stdout + out.stderr


def test_public_usage_type_checks(tmp_path: Path) -> None:
    usage = tmp_path / "usage.py"
    usage.write_text(
        textwrap.dedent("""
        from pathlib import Path
        import regoguard

        authz = regoguard.Authorizer(Path("policies"), data={"a": 1},
                                     cache=regoguard.CacheConfig(max_entries=10, ttl_seconds=1.0))
        d: regoguard.Decision = authz.check({"method": "GET"})
        allowed: bool = d.allow
        reason: str | None = d.reason
        status: int | None = d.status
        many: list[regoguard.Decision] = authz.check_many([{"a": 1}], entrypoint="data.x.y")
        revision: str = authz.set_data("a/b", [1, 2])
        authz.invalidate(tags=["t"])
        logged = regoguard.Authorizer("p", decision_log=regoguard.DecisionLogConfig(
            sample_rate=0.5, mask=["/input/user"], max_queue=10, labels={"app": "x"}))
        rate: float = logged.decision_log.sample_rate if logged.decision_log else 0.0
        text: str = authz.metrics_text() + regoguard.metrics_app(authz, logged).render()
        collector = regoguard.RegoguardCollector(authz, functions=False)
        p99: float | None = authz.stats()["decision_seconds"]["l1"]["p99"]
        try:
            authz.reload()
        except regoguard.PolicyError as e:
            line: int | None = e.line
            issues: list[regoguard.PolicyIssue] = e.errors
            first_line: int = issues[0]["line"]
        except regoguard.InputError as e:
            path: str = e.path

        redis = regoguard.RedisConfig("redis://127.0.0.1:6379/0", signing_key=b"k" * 16,
                                      decisions="never", timeout_seconds=0.02)
        shared = regoguard.Authorizer("policies", redis=redis)
        counters: regoguard.RedisStats = redis.stats()
        writes: int = counters["writes"]
        healthy: bool = counters["healthy"]
        stats: regoguard.Stats = shared.stats()
        l1_hits: int = stats["l1_hits"]
        engine: regoguard.DecisionTiming = stats["decision_seconds"]["engine"]
        evaluator: str = stats["evaluators"]["data.authz.allow"]
        l2_writes: int = stats["l2"]["writes"] if "l2" in stats else 0

        @regoguard.cached_authorization(ttl_seconds=60, redis=redis)
        async def can_edit(user_id: str, project_id: int) -> bool:
            return True

        async def handler() -> bool:
            decision: regoguard.Decision = await shared.check_async({"user": "u1"})
            return decision.allow and await can_edit("u1", 42)
        """)
    )
    out = _run("mypy", "--strict", str(usage))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_typed_stats_name_every_key_the_runtime_returns(tmp_path: Path) -> None:
    """``Stats``/``RedisStats``/``ShadowStats``/``PolicyIssue`` list exactly the keys of the
    dicts they describe, so the types cannot drift from what ``stats()`` returns."""
    import regoguard

    (tmp_path / "authz.rego").write_text("package authz\n\nallow := input.ok\n")
    redis = regoguard.RedisConfig(
        "redis://127.0.0.1:1/0", signing_key=b"k" * 16, timeout_seconds=0.02
    )
    authz = regoguard.Authorizer(tmp_path, redis=redis)
    authz.check({"ok": True})
    stats = authz.stats()
    assert set(stats) == regoguard.Stats.__required_keys__ | regoguard.Stats.__optional_keys__
    assert set(regoguard.Authorizer(tmp_path).stats()) == regoguard.Stats.__required_keys__
    assert set(stats["l2"]) == regoguard.RedisStats.__required_keys__
    assert set(redis.stats()) == regoguard.RedisStats.__required_keys__
    assert set(stats["decisions"]) == regoguard.DecisionCounts.__required_keys__
    assert set(stats["decision_seconds"]) == regoguard.DecisionSeconds.__required_keys__
    for timing in stats["decision_seconds"].values():
        assert set(timing) == regoguard.DecisionTiming.__required_keys__
    shadow = regoguard.Shadow(regoguard.Authorizer(tmp_path))
    assert set(shadow.stats()) == regoguard.ShadowStats.__required_keys__
    shadow.close()
    (tmp_path / "broken.rego").write_text("package broken\n\nallow if {\n")
    with pytest.raises(regoguard.PolicyError) as e:
        regoguard.Authorizer(tmp_path)
    assert e.value.errors
    for issue in e.value.errors:
        assert set(issue) == regoguard.PolicyIssue.__required_keys__
