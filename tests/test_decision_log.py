"""Decision logs as an operator sees them: OPA's fields, masking, sampling, the bounded queue
under a blocked handler, and a clean interpreter exit."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import regoguard
from regoguard import ConfigError, DecisionLogConfig
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

POLICY = """package authz
default allow := false
allow if input.user == "admin"
allow := "oops" if input.user == "broken"
"""


class Records(logging.Handler):
    """Collects the JSON records of the ``regoguard.decisions`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.records()


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("regoguard.decisions")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_config_defaults_and_validation() -> None:
    c = DecisionLogConfig()
    assert c.sample_rate == 1.0
    assert c.mask == [
        "/input/headers/authorization",
        "/input/headers/cookie",
        "/input/headers/proxy-authorization",
        "/input/headers/set-cookie",
        "/input/headers/x-api-key",
    ]
    assert c.mask_names == ["*token*", "*secret*", "*password*"]
    assert DecisionLogConfig(mask_names=()).mask_names == []
    assert c.max_queue == 10_000
    assert c.labels == {}
    assert c == DecisionLogConfig()
    assert "sample_rate=1.0" in repr(c)
    for bad in [
        {"sample_rate": 1.5},
        {"sample_rate": -0.1},
        {"sample_rate": float("nan")},
        {"max_queue": 0},
        {"max_queue": -1},
        {"mask": ["input/x"]},
        {"mask": ["/data/x"]},
        {"labels": {"a": 1}},
        {"labels": {"": "x"}},
        {"mask_names": ["*"]},
        {"mask_names": [""]},
    ]:
        with pytest.raises(ConfigError):
            DecisionLogConfig(**bad)
    with pytest.raises(TypeError):
        DecisionLogConfig(0.5)  # type: ignore[misc]


def test_off_by_default(authorizer: Callable[..., regoguard.Authorizer], records: Records) -> None:
    a = authorizer(POLICY)
    assert a.decision_log is None
    a.check({"user": "admin"})
    time.sleep(0.2)
    assert records.lines == []
    assert a.stats()["decision_logs"] == 0


def test_one_record_per_decision_with_opas_fields(
    authorizer: Callable[..., regoguard.Authorizer], records: Records
) -> None:
    cfg = DecisionLogConfig(labels={"app": "tests"})
    a = authorizer(POLICY, decision_log=cfg)
    assert a.decision_log == cfg
    d1 = a.check({"user": "admin", "headers": {"authorization": "Bearer t0ken", "x": "1"}})
    d2 = a.check({"user": "admin", "headers": {"authorization": "Bearer t0ken", "x": "1"}})
    d3 = a.check({"user": "bob"})
    with pytest.raises(regoguard.EvaluationError):
        a.check({"user": "broken"})
    got = records.wait_for(4)
    assert len(got) == 4
    first, second, deny, error = got
    assert [r["decision_id"] for r in got[:3]] == [d1.decision_id, d2.decision_id, d3.decision_id]
    assert first["path"] == "authz/allow"
    assert first["input"] == {"user": "admin", "headers": {"x": "1"}}
    assert first["erased"] == ["/input/headers/authorization"]
    assert first["result"] is True
    assert first["revision"] == a.revision
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert first["metrics"]["timer_regoguard_decision_ns"] > 0
    assert first["labels"]["app"] == "tests"
    assert first["labels"]["version"] == regoguard.__version__
    assert (first["source"], second["source"], deny["source"]) == ("engine", "l1", "engine")
    assert deny["result"] is False and "erased" not in deny
    assert "result" not in error and error["error"]["code"] == "eval_error"
    for line in records.lines:
        assert "t0ken" not in line
    assert a.stats()["decision_logs"] == 4


def test_the_middleware_masks_credentials(
    authorizer: Callable[..., regoguard.Authorizer], records: Records
) -> None:
    a = authorizer(
        'package authz\nallow if input.headers["x-tenant"] == "acme"\n',
        decision_log=DecisionLogConfig(),
    )
    app = Starlette(
        routes=[Route("/x", lambda r: PlainTextResponse("ok"))],
        middleware=[
            Middleware(
                regoguard.RegoGuardMiddleware,
                authorizer=a,
                include_headers=["x-tenant", "authorization", "cookie"],
            )
        ],
    )
    with TestClient(app) as client:
        r = client.get(
            "/x", headers={"x-tenant": "acme", "authorization": "Bearer zzz", "cookie": "sid=1"}
        )
        assert r.status_code == 200
    (rec,) = records.wait_for(1)
    assert rec["input"]["headers"] == {"x-tenant": "acme"}
    assert rec["input"]["path_segments"] == ["x"], "the input as the policy saw it"
    assert sorted(rec["erased"]) == ["/input/headers/authorization", "/input/headers/cookie"]
    assert "zzz" not in records.lines[0] and "sid=1" not in records.lines[0]


def test_a_500s_error_id_finds_the_failed_decisions_record(
    authorizer: Callable[..., regoguard.Authorizer], records: Records
) -> None:
    a = authorizer(POLICY, decision_log=DecisionLogConfig())
    with pytest.raises(regoguard.EvaluationError) as info:
        a.check({"user": "broken"})
    assert info.value.decision_id is not None
    app = Starlette(
        routes=[Route("/x", lambda r: PlainTextResponse("ok"))],
        middleware=[
            Middleware(
                regoguard.RegoGuardMiddleware,
                authorizer=a,
                identity=lambda scope: "broken",
            )
        ],
    )
    with TestClient(app) as client:
        r = client.get("/x")
    assert r.status_code == 500
    error_id = r.json()["detail"].split("error ")[1].rstrip(")")
    got = records.wait_for(2)
    assert [rec["decision_id"] for rec in got] == [info.value.decision_id, error_id]
    assert all(rec["error"]["code"] == "eval_error" for rec in got)


def test_records_outlive_their_authorizer(
    authorizer: Callable[..., regoguard.Authorizer], records: Records
) -> None:
    a = authorizer(POLICY, decision_log=DecisionLogConfig())
    ids = [a.check({"user": f"u{i}"}).decision_id for i in range(3)]
    del a
    gc.collect()
    got = records.wait_for(3)
    assert [r["decision_id"] for r in got] == ids


@pytest.mark.parametrize(
    ("rate", "low", "high"), [(0.0, 0, 0), (1.0, 2000, 2000), (0.5, 850, 1150)]
)
def test_sampling(
    authorizer: Callable[..., regoguard.Authorizer], rate: float, low: int, high: int
) -> None:
    # Counted through the queue counter (no handler needed): 2,000 decisions, and for 0.5 a
    # band of about 6.7 standard deviations each side.
    a = authorizer(POLICY, decision_log=DecisionLogConfig(sample_rate=rate, max_queue=5000))
    for i in range(2000):
        a.check({"user": f"u{i % 7}"})
    s = a.stats()
    assert low <= s["decision_logs"] <= high
    assert s["decision_logs_dropped"] == 0


def test_a_blocked_handler_never_slows_requests(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    release = threading.Event()
    entered = threading.Event()

    class Blocking(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            release.wait(30)

    logger = logging.getLogger("regoguard.decisions")
    handler = Blocking(logging.INFO)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        a = authorizer(POLICY, decision_log=DecisionLogConfig(max_queue=100))
        a.check({"user": "admin"})
        assert entered.wait(10), "the drain thread reached the handler"
        start = time.perf_counter()
        for _ in range(5000):
            a.check({"user": "admin"})
        elapsed = time.perf_counter() - start
        s = a.stats()
        # The drain thread holds at most one batch; the queue holds at most max_queue.
        assert s["decision_logs"] <= 1 + 100 + 1
        assert s["decision_logs"] + s["decision_logs_dropped"] == 5001
        assert s["decision_logs_dropped"] >= 5000 - 101
        assert elapsed < 2.0, f"5,000 hits took {elapsed:.2f} s with a blocked handler"
        text = a.metrics_text()
        assert f"regoguard_decision_logs_dropped_total {s['decision_logs_dropped']}" in text
    finally:
        release.set()
        logger.removeHandler(handler)
        logger.setLevel(level)


EXIT_SCRIPT = """
import logging, sys
import regoguard
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
authz = regoguard.Authorizer({policies!r}, decision_log=regoguard.DecisionLogConfig())
for i in range(200):
    authz.check({{"user": "admin" if i % 2 else f"u{{i}}"}})
"""


@pytest.mark.slow
def test_interpreter_exit_stays_clean(tmp_path: Path) -> None:
    (tmp_path / "authz.rego").write_text(POLICY)
    script = tmp_path / "log_and_exit.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT.format(policies=str(tmp_path))))
    for run in range(10):
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, f"run {run}: {out.returncode}\n{out.stderr[-2000:]}"
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert len(lines) == 200, f"run {run}: the exit hook writes what is still queued"
        assert out.stderr == "", out.stderr
