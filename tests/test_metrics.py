"""Metrics as a scraper sees them: the exposition text, its counters after a scripted sequence,
metrics_app, the prometheus_client collector, the decorator caches, and stats()."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import regoguard
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from regoguard import ConfigError, RegoguardCollector, cached_authorization, metrics_app

POLICY = """package authz
default allow := false
allow if input.user == "admin"
allow := "oops" if input.user == "broken"
"""

SECRET = "s3cr3t-user-value"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(s: Samples, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def authz(authorizer: Callable[..., regoguard.Authorizer]) -> regoguard.Authorizer:
    return authorizer(POLICY, cache=regoguard.CacheConfig(max_entries=50))


def script(a: regoguard.Authorizer) -> None:
    """3 allows (1 evaluated, 2 hits), 2 denies (1 evaluated, 1 hit), 1 error, 1 reload."""
    for _ in range(3):
        a.check({"user": "admin"})
    for _ in range(2):
        a.check({"user": SECRET})
    with pytest.raises(regoguard.EvaluationError):
        a.check({"user": "broken"})
    a.reload()


def test_exposition_parses_with_help_and_type_for_every_family(authz: regoguard.Authorizer) -> None:
    script(authz)
    text = authz.metrics_text()
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    for expected in [
        "regoguard_decisions",
        "regoguard_cache_hits",
        "regoguard_cache_misses",
        "regoguard_cache_entries",
        "regoguard_cache_max_entries",
        "regoguard_cache_hit_ratio",
        "regoguard_evaluations",
        "regoguard_decision_duration_seconds",
        "regoguard_evaluation_errors",
        "regoguard_l2_errors",
        "regoguard_reloads",
        "regoguard_reload_errors",
        "regoguard_decision_logs",
        "regoguard_decision_logs_dropped",
        "regoguard_policy_info",
    ]:
        assert expected in names, expected
    for f in families:
        assert f.documentation, f.name
        assert f.name.startswith("regoguard_")
    assert text.count("# TYPE ") == text.count("# HELP ") == len(families)
    kinds = {f.name: f.type for f in families}
    assert kinds["regoguard_decision_duration_seconds"] == "histogram"
    assert kinds["regoguard_decisions"] == "counter"
    assert kinds["regoguard_cache_entries"] == "gauge"


def test_counters_equal_what_happened(authz: regoguard.Authorizer) -> None:
    script(authz)
    s = samples(authz.metrics_text())
    assert value(s, "regoguard_decisions_total", result="allow") == 3
    assert value(s, "regoguard_decisions_total", result="deny") == 2
    assert value(s, "regoguard_decisions_total", result="error") == 1
    assert value(s, "regoguard_cache_hits_total", layer="l1") == 3
    assert value(s, "regoguard_cache_hits_total", layer="l2") == 0
    assert value(s, "regoguard_cache_misses_total") == 3
    assert (
        value(s, "regoguard_evaluations_total", evaluator="rvm")
        + value(s, "regoguard_evaluations_total", evaluator="interpreter")
        == 3
    )
    assert value(s, "regoguard_evaluation_errors_total") == 1
    assert value(s, "regoguard_l2_errors_total") == 0
    assert value(s, "regoguard_reloads_total") == 1
    assert value(s, "regoguard_reload_errors_total") == 0
    assert value(s, "regoguard_cache_max_entries") == 50
    # The reload kept the same revision (nothing changed), so the entries stay.
    assert value(s, "regoguard_cache_entries") == 2
    assert value(s, "regoguard_cache_hit_ratio") == pytest.approx(0.5)
    assert value(s, "regoguard_policy_info", revision=authz.revision) == 1
    # Histogram counts are decisions per source; failed decisions are not timed.
    dur = "regoguard_decision_duration_seconds"
    assert value(s, f"{dur}_count", source="l1") == 3
    assert value(s, f"{dur}_count", source="engine") == 2
    assert value(s, f"{dur}_count", source="l2") == 0
    assert value(s, f"{dur}_bucket", source="l1", le="+Inf") == 3
    assert 0 < value(s, f"{dur}_sum", source="engine") < 1
    stats = authz.stats()
    assert (stats["l1_hits"], stats["l1_misses"], stats["evaluations"]) == (3, 3, 3)
    assert stats["decisions"] == {"allow": 3, "deny": 2, "error": 1}


def test_buckets_are_cumulative(authz: regoguard.Authorizer) -> None:
    script(authz)
    s = samples(authz.metrics_text())
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in s.items()
        if k[0] == "regoguard_decision_duration_seconds_bucket" and dict(k[1])["source"] == "l1"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == 3


def test_label_values_never_contain_input_values(authz: regoguard.Authorizer) -> None:
    script(authz)
    authz.check({"user": SECRET, "path": "/secret/path"})
    text = authz.metrics_text()
    assert SECRET not in text and "/secret/path" not in text
    allowed = {"result", "layer", "source", "le", "evaluator", "revision", "cache", "authorizer"}
    allowed.add("reason")  # regoguard_token_rejections_total: a fixed set of reasons
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample


def test_stats_keep_every_key_and_add_timing(authz: regoguard.Authorizer) -> None:
    before = authz.stats()
    assert before["decision_seconds"]["l1"] == {"count": 0, "p50": None, "p99": None}
    script(authz)
    s = authz.stats()
    for key in [
        "revision", "entries", "max_entries", "l1_hits", "l1_misses", "hit_ratio", "coalesced",
        "evaluations", "rvm_evaluations", "interpreter_evaluations", "evaluation_errors",
        "decisions", "reloads", "reload_errors", "evaluators", "l2_hits", "l2_misses",
        "l2_errors", "decision_seconds", "decision_logs", "decision_logs_dropped",
    ]:  # fmt: skip
        assert key in s, key
    l1 = s["decision_seconds"]["l1"]
    assert l1["count"] == 3
    assert 0 < l1["p50"] <= l1["p99"] < 1
    assert s["decision_seconds"]["engine"]["count"] == 2
    assert (s["l2_hits"], s["l2_misses"], s["l2_errors"]) == (0, 0, 0)
    assert s["decision_logs_dropped"] == 0


def test_without_a_cache_everything_is_an_engine_decision(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    a = authorizer(POLICY, cache=None)
    for _ in range(3):
        a.check({"user": "admin"})
    s = samples(a.metrics_text())
    assert value(s, "regoguard_decision_duration_seconds_count", source="engine") == 3
    assert value(s, "regoguard_cache_hits_total", layer="l1") == 0
    assert value(s, "regoguard_cache_max_entries") == 0


def test_check_many_is_counted(authz: regoguard.Authorizer) -> None:
    authz.check_many([{"user": "admin"}] * 4 + [{"user": "x"}])
    s = samples(authz.metrics_text())
    assert value(s, "regoguard_decisions_total", result="allow") == 4
    assert value(s, "regoguard_decisions_total", result="deny") == 1
    total = sum(
        value(s, "regoguard_decision_duration_seconds_count", source=src)
        for src in ("l1", "l2", "engine")
    )
    assert total == 5


def test_metrics_app_serves_text_with_the_right_content_type(authz: regoguard.Authorizer) -> None:
    script(authz)
    app = FastAPI()
    app.add_route("/metrics", metrics_app(authz))
    with TestClient(app) as client:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert value(samples(r.text), "regoguard_decisions_total", result="allow") == 3
        head = client.head("/metrics")
        assert head.status_code == 200 and head.content == b""
        assert client.post("/metrics").status_code == 405


def test_metrics_app_runs_on_its_own(authz: regoguard.Authorizer) -> None:
    # As the root app (its own port): the lifespan protocol is answered.
    with TestClient(metrics_app(authz)) as client:
        r = client.get("/anything")
        assert r.status_code == 200
        assert "regoguard_decisions_total" in r.text


def test_several_authorizers_are_labelled_by_entrypoint(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    a = authorizer(POLICY)
    b = authorizer(POLICY + "\nother if true\n", entrypoint="data.authz.other")
    a.check({"user": "admin"})
    text = metrics_app(a, b).render()
    s = samples(text)
    assert value(s, "regoguard_decisions_total", authorizer="data.authz.allow", result="allow") == 1
    assert value(s, "regoguard_decisions_total", authorizer="data.authz.other", result="allow") == 0
    with pytest.raises(ConfigError, match="data.authz.allow"):
        metrics_app(a, authorizer(POLICY))
    with pytest.raises(ConfigError):
        metrics_app("not an authorizer")  # type: ignore[arg-type]


def test_collector_feeds_a_prometheus_client_registry(authz: regoguard.Authorizer) -> None:
    script(authz)
    registry = CollectorRegistry()
    registry.register(RegoguardCollector(authz, functions=False))
    assert registry.get_sample_value("regoguard_decisions_total", {"result": "deny"}) == 2
    assert (
        registry.get_sample_value("regoguard_decision_duration_seconds_count", {"source": "l1"})
        == 3
    )
    exposed = generate_latest(registry).decode()
    assert "regoguard_cache_hits_total" in exposed
    authz.check({"user": "admin"})
    assert registry.get_sample_value("regoguard_decisions_total", {"result": "allow"}) == 4


def test_decorator_cache_series_carry_the_function_name() -> None:
    @cached_authorization(ttl_seconds=60, max_entries=7)
    def may_read(user_id: str) -> bool:
        return user_id == "u1"

    may_read("u1")
    may_read("u1")
    may_read("u2")
    name = f"{__name__}.test_decorator_cache_series_carry_the_function_name.<locals>.may_read"
    registry = CollectorRegistry()
    registry.register(RegoguardCollector())
    get: Callable[..., Any] = registry.get_sample_value
    assert get("regoguard_cache_hits_total", {"cache": name, "layer": "l1"}) == 1
    assert get("regoguard_cache_misses_total", {"cache": name}) == 2
    assert get("regoguard_cache_entries", {"cache": name}) == 2
    assert get("regoguard_cache_max_entries", {"cache": name}) == 7
    assert get("regoguard_cache_hit_ratio", {"cache": name}) == pytest.approx(1 / 3)
    # Without functions, or once the function is gone, its series go.
    assert name not in metrics_app(functions=False).render()
    del may_read
    import gc

    gc.collect()
    assert name not in metrics_app().render()
