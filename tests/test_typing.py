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
        except regoguard.InputError as e:
            path: str = e.path

        redis = regoguard.RedisConfig("redis://127.0.0.1:6379/0", signing_key=b"k" * 16,
                                      decisions="never", timeout_seconds=0.02)
        shared = regoguard.Authorizer("policies", redis=redis)
        counters: dict[str, int | bool] = redis.stats()

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
