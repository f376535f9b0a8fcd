"""Time-aware caching (caching rule 8): a decision that read the clock is never served after
the moment it could change. No timed assertion on speed: only which answer comes back."""

from __future__ import annotations

import time
from typing import Any

CLOCK = """package authz

default allow := false

allow if time.now_ns() < input.exp_ns
"""

BOUNDED = """package authz

default allow := {"allow": false, "reason": "expired"}

allow := {"allow": true, "cache_ttl_seconds": (input.exp_ns - time.now_ns()) / 1e9} if {
	time.now_ns() < input.exp_ns
}
"""

STABLE = """package authz

default allow := false

# time.now_ns() in a comment does not count
allow if input.exp_ns > 0
"""


def test_an_allow_before_exp_is_a_deny_after_exp_with_the_cache_on(authorizer: Any) -> None:
    authz = authorizer({"authz.rego": CLOCK})
    exp = time.time_ns() + 1_000_000_000
    first = authz.check({"exp_ns": exp})
    assert first.allow
    # Not kept: the decision depended on the moment and the policy gave no cache_ttl_seconds.
    assert authz.check({"exp_ns": exp}).source == "engine"
    while time.time_ns() <= exp:
        time.sleep(0.05)
    after = authz.check({"exp_ns": exp})
    assert not after.allow
    assert after.source == "engine"
    assert authz.stats()["time_dependent"] == {"data.authz.allow": "time.now_ns"}
    assert authz.stats()["entries"] == 0


def test_cache_ttl_from_the_clock_bounds_the_entry(authorizer: Any) -> None:
    authz = authorizer({"authz.rego": BOUNDED})
    exp = time.time_ns() + 600_000_000
    assert authz.check({"exp_ns": exp}).allow
    second = authz.check({"exp_ns": exp})
    assert second.allow and second.source == "l1"  # the policy bounded it: kept until exp
    while time.time_ns() <= exp:
        time.sleep(0.05)
    after = authz.check({"exp_ns": exp})
    assert not after.allow, "served after the cache_ttl_seconds the policy derived from exp"
    assert after.reason == "expired"


def test_policies_that_never_read_the_clock_cache_as_before(authorizer: Any) -> None:
    authz = authorizer({"authz.rego": STABLE})
    assert authz.check({"exp_ns": 1}).allow
    assert authz.check({"exp_ns": 1}).source == "l1"
    assert authz.stats()["time_dependent"] == {}


def test_every_entrypoint_of_a_clock_reading_revision_is_time_dependent(authorizer: Any) -> None:
    authz = authorizer({"authz.rego": CLOCK + "\nother if input.x == 1\n"})
    assert authz.check({"x": 1}, entrypoint="data.authz.other").allow
    assert authz.check({"x": 1}, entrypoint="data.authz.other").source == "engine"
    assert set(authz.stats()["time_dependent"]) == {"data.authz.allow", "data.authz.other"}
