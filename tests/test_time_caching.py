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


JWT = """package authz

default allow := false

# The policy allows caching for a minute; the token's exp must still bound the entry.
allow := {"allow": true, "cache_ttl_seconds": 60} if {
	[valid, _, payload] := io.jwt.decode_verify(input.token, {"secret": "a-32-byte-secret-for-the-hs256-t"})
	valid
	payload.sub == "alice"
}
"""


def test_a_decision_that_verified_a_jwt_is_cached_no_longer_than_its_exp(authorizer: Any) -> None:
    import jwt

    authz = authorizer({"authz.rego": JWT})
    exp = int(time.time()) + 2
    token = jwt.encode(
        {"sub": "alice", "exp": exp}, "a-32-byte-secret-for-the-hs256-t", algorithm="HS256"
    )
    assert authz.check({"token": token}).allow
    second = authz.check({"token": token})
    assert second.allow and second.source == "l1"  # within exp and the policy's 60 s
    while time.time() <= exp + 0.05:
        time.sleep(0.05)
    after = authz.check({"token": token})
    assert not after.allow, "a decision made with the token was served past its exp"
    assert after.source == "engine"


def test_a_not_yet_valid_token_is_denied_until_its_nbf_then_decided_again(authorizer: Any) -> None:
    import jwt

    authz = authorizer({"authz.rego": JWT})
    nbf = int(time.time()) + 2
    token = jwt.encode(
        {"sub": "alice", "nbf": nbf, "exp": nbf + 60},
        "a-32-byte-secret-for-the-hs256-t",
        algorithm="HS256",
    )
    assert not authz.check({"token": token}).allow
    while time.time() <= nbf + 0.05:
        time.sleep(0.05)
    assert authz.check({"token": token}).allow, "the pre-nbf denial was served after nbf"
