"""The L1 cache as a user sees it: hits, TTLs, revisions, tags, single flight, soundness."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import regoguard
from hypothesis import given, settings
from hypothesis import strategies as st

from .conftest import realistic_input

# The decision echoes the whole input back, so a decision served for the wrong input shows.
ECHO = """package authz
allow := {"allow": true, "reason": json.marshal(input)}
"""

COUNTING = """package authz
default allow := false
allow if input.user == "admin"
"""


def test_second_check_is_an_l1_hit(realistic: regoguard.Authorizer) -> None:
    i = realistic_input()
    first, second = realistic.check(i), realistic.check(dict(reversed(list(i.items()))))
    assert (first.source, second.source) == ("engine", "l1")
    assert first.allow and second.allow
    assert first.result == second.result == {"allow": True, "reason": "member"}
    assert first.decision_id != second.decision_id
    s = realistic.stats()
    assert (s["l1_hits"], s["l1_misses"], s["evaluations"], s["entries"]) == (1, 1, 1, 1)


def test_cache_none_always_evaluates(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer(COUNTING, cache=None)
    for _ in range(3):
        assert a.check({"user": "admin"}).source == "engine"
    assert a.stats()["evaluations"] == 3
    assert a.stats()["entries"] == 0


def test_allow_ttl_expires(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer(COUNTING, cache=regoguard.CacheConfig(ttl_seconds=0.2))
    assert a.check({"user": "admin"}).source == "engine"
    assert a.check({"user": "admin"}).source == "l1"
    time.sleep(0.3)
    assert a.check({"user": "admin"}).source == "engine"


def test_deny_ttl_is_separate(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer(COUNTING, cache=regoguard.CacheConfig(ttl_seconds=60, deny_ttl_seconds=0))
    a.check({"user": "bob"})
    assert a.check({"user": "bob"}).source == "engine", "deny_ttl_seconds=0 never caches denials"
    a.check({"user": "admin"})
    assert a.check({"user": "admin"}).source == "l1"


def test_policy_cache_ttl_zero_is_honoured(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer("""package authz
allow := {"allow": true, "cache_ttl_seconds": 0} if input.live
allow := {"allow": true} if not input.live
""")
    a.check({"live": True})
    assert a.check({"live": True}).source == "engine"
    a.check({"live": False})
    assert a.check({"live": False}).source == "l1"


def test_errors_are_never_cached(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer('package authz\nallow := "yes"\n')
    for _ in range(2):
        try:
            a.check({})
        except regoguard.EvaluationError as e:
            assert e.entrypoint == "data.authz.allow"
        else:
            raise AssertionError("expected EvaluationError")
    s = a.stats()
    assert (s["entries"], s["evaluations"], s["evaluation_errors"]) == (0, 2, 2)
    assert s["decisions"]["error"] == 2


def test_invalidate_tags_and_all(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    a = authorizer("""package authz
allow := {"allow": true, "tags": [sprintf("project:%v", [input.project])]}
""")
    for p in (1, 2):
        a.check({"project": p})
    a.invalidate(tags=["project:1"])
    assert a.check({"project": 1}).source == "engine"
    assert a.check({"project": 2}).source == "l1"
    assert a.check({"project": 1}).tags == ["project:1"]
    a.invalidate_all()
    assert a.check({"project": 2}).source == "engine"


def test_revision_change_makes_old_entries_unreachable(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    a = authorizer(
        """package authz
default allow := false
allow if input.user in data.admins
""",
        data={"admins": []},
    )
    r0 = a.revision
    assert not a.check({"user": "ann"}).allow
    r1 = a.set_data("admins", ["ann"])
    assert r1 != r0 and a.revision == r1
    d = a.check({"user": "ann"})
    assert d.allow and d.source == "engine" and d.revision == r1
    # Setting the same data back returns to the first revision, with fresh decisions.
    assert a.set_data("/admins", []) == r0
    assert not a.check({"user": "ann"}).allow


def test_sixteen_threads_missing_one_key_evaluate_once(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    # A slow policy: the first evaluation is still running when the others arrive.
    a = authorizer(
        """package authz
allow if {
    count([x | some x in numbers.range(1, 200000); x % 7 == 0]) > 0
    input.user == "admin"
}
""",
        eval_timeout_seconds=30,
    )  # slow on purpose: past the default 0.1 s budget under contention
    barrier = threading.Barrier(16)
    results: list[Any] = []

    def worker() -> None:
        barrier.wait()
        results.append(a.check({"user": "admin"}))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16 and all(d.allow for d in results)
    s = a.stats()
    assert s["evaluations"] == 1, s
    assert s["l1_hits"] + s["l1_misses"] - s["coalesced"] >= 15


def test_check_many_uses_the_cache(realistic: regoguard.Authorizer) -> None:
    inputs = [realistic_input(f"u{n}") for n in range(40)] * 3
    decisions = realistic.check_many(inputs)
    assert len(decisions) == 120
    single = [realistic.check(i) for i in inputs[:40]]
    assert [d.result for d in decisions[:40]] == [d.result for d in single]
    assert all(d.source == "l1" for d in single)
    assert realistic.stats()["evaluations"] == 40


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _mutate(value: Any, data: st.DataObject) -> Any:
    """A copy of ``value`` with one nested field changed."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        k = data.draw(st.sampled_from(sorted(value)))
        return {**value, k: _mutate(value[k], data)}
    if isinstance(value, list) and value and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(value) - 1))
        return [*value[:i], _mutate(value[i], data), *value[i + 1 :]]
    return data.draw(json_values.filter(lambda v: v != value or type(v) is not type(value)))


@pytest.fixture(scope="module")
def echo_pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[regoguard.Authorizer, regoguard.Authorizer]:
    d = tmp_path_factory.mktemp("echo")
    (d / "authz.rego").write_text(ECHO)
    return regoguard.Authorizer(
        d, cache=regoguard.CacheConfig(max_entries=1000)
    ), regoguard.Authorizer(d, cache=None)


@settings(max_examples=300, deadline=None)
@given(base=st.dictionaries(st.text(max_size=6), json_values, max_size=5), data=st.data())
def test_a_cached_decision_is_never_served_for_another_input(
    echo_pair: tuple[regoguard.Authorizer, regoguard.Authorizer],
    base: dict[str, Any],
    data: st.DataObject,
) -> None:
    cached, uncached = echo_pair
    other = _mutate(base, data)
    for value in (base, other, base, other):
        # The policy echoes its input: a decision computed for another input would show.
        assert cached.check(value).reason == uncached.check(value).reason


@given(value=st.dictionaries(st.text(max_size=6), json_values, max_size=6))
@settings(max_examples=200, deadline=None)
def test_key_is_independent_of_dict_order(
    echo_pair: tuple[regoguard.Authorizer, regoguard.Authorizer], value: dict[str, Any]
) -> None:
    cached, _ = echo_pair
    first = cached.check(value)
    reordered = cached.check(dict(reversed(list(value.items()))))
    assert reordered.source == "l1" and reordered.reason == first.reason
