"""glob.match and glob.quote_meta against the OPA Go engine (gobwas/glob), on both evaluators.

regoguard ports gobwas/glob v0.2.3 (``crates/regoguard-core/src/builtins/glob.rs``), quirks
included, so every pattern answers as in OPA. The named cases are the shapes where a plain
glob library differs from gobwas (its compiler's shortcuts, byte-level slicing of characters);
the Hypothesis test draws patterns and subjects from a small alphabet of every metacharacter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import regoguard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import opa_oracle
from tests._builtins_util import EVALUATORS, assert_matches_opa, opa_value, ours, policy_of, same

DELIMITERS: list[Any] = [None, [], ["."], ["/"], [".", "/"], ["/", "."], [":"], ["é"]]
SUBJECTS = ["", "x", "a/x", "a/b/x", "a.b", "a.b.c", "ab", "é", "aé", "éa", "a/é.b", "ba", "-"]

# (pattern, subjects)
CASES: list[str] = [
    "{**/,}x",  # OPA: never matches (the alternative is measured as one character long)
    "x{**/,}",
    "{a,}b",
    "{,a}",
    "{}",
    "{a,b}{c,}",
    "*",
    "**",
    "?",
    "??",
    "*.b",
    "**.c",
    "a.*",
    "a*b",
    "a**",
    "[a-c]",
    "[!a]",
    "[!a]?",
    "[é]a",
    "?a",
    "a?",
    "é*",
    "*é",
    "{a,é}*",
    "a\\*",
    "\\",
    "[",
    "[]",
    "[!]",
    "[b-a]",
    "{a",
    "a}",
    "a,b",
    "*/**/x",
    "**/x",
    "a/**",
    "{a/**,b}",
    "\x00a",
    "a\ufffd",
]


def _query(pattern: str, delimiters: list[Any], subjects: list[str]) -> tuple[str, Any]:
    cases = [[d, s] for d in delimiters for s in subjects]
    expr = "{k: glob.match(input.p, c[0], c[1]) | some k, c in input.cases}"
    return expr, {"p": pattern, "cases": cases}


def _one_by_one(opa: Any, pattern: str, cases: list[list[Any]]) -> dict[str, Any]:
    """OPA's answers call by call, for a batch where gobwas/glob panicked (it slices a subject
    out of range for some patterns): OPA's query fails there; regoguard's call is undefined
    (an error, never a match)."""
    policy = policy_of("glob.match(input.p, input.d, input.s)")
    out: dict[str, Any] = {}
    for k, (d, s) in enumerate(cases):
        try:
            v = opa_value(opa, policy, "data.t.r.v", {"p": pattern, "d": d, "s": s})
        except Exception as e:  # the oracle's OpaError
            if getattr(e, "code", None) != "panic":
                raise
            v = opa_oracle.UNDEFINED
        if v is not opa_oracle.UNDEFINED:
            out[str(k)] = v
    return out


def _compare(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    pattern: str,
    delimiters: list[Any],
    subjects: list[str],
) -> None:
    """Every (delimiters, subject) pair for one pattern in one query. The oracle's strict
    builtin errors turn a bad pattern into an error of the whole query: then every call is
    undefined in OPA's default (non-strict) mode, and the object is empty."""
    expr, inp = _query(pattern, delimiters, subjects)
    policy = policy_of(expr)
    try:
        expected = opa_value(opa, policy, "data.t.r.v", inp)
    except Exception as e:  # the oracle's OpaError
        if getattr(e, "code", None) != "panic":
            raise
        expected = _one_by_one(opa, pattern, inp["cases"])
    if expected is opa_oracle.UNDEFINED:
        expected = {}
    for evaluator in EVALUATORS:
        authz = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator)
        got = ours(authz, inp)
        assert same(got, expected), (
            f"{evaluator}: glob.match({pattern!r}, ...) differs from OPA:\n"
            + "\n".join(
                f"  {inp['cases'][int(k)]}: ours {got.get(k)!r}, OPA {expected.get(k)!r}"
                for k in sorted(set(got) | set(expected), key=int)
                if got.get(k) != expected.get(k)
            )
        )


@pytest.mark.parametrize("pattern", CASES)
def test_glob_match_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], pattern: str
) -> None:
    _compare(opa, authorizer, pattern, DELIMITERS, SUBJECTS)


def test_glob_alternative_with_a_super_wildcard_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    """Was a known difference (regorus matched `a/x`); now OPA's answer: no match at all."""
    policy = policy_of('[glob.match("{**/,}x", ["/"], s) | some s in ["x", "a/x", "a/b/x"]]')
    expected = opa_value(opa, policy, "data.t.r.v", {})
    assert expected == [False, False, False]
    for evaluator in EVALUATORS:
        a = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator)
        assert same(ours(a, None), expected), evaluator


@pytest.mark.parametrize(
    ("expr", "inp"),
    [
        ('glob.match("*", input.d, "a")', {"d": d})
        for d in [["ab"], [""], [1], "x", {"a": 1}, ["é"], ["."]]
    ]
    + [
        ("glob.match(input.p, [], input.s)", {"p": 1, "s": "a"}),
        ("glob.match(input.p, [], input.s)", {"p": "a", "s": 1}),
        ("glob.match(input.p, null, input.s)", {"p": "a*", "s": "a.b"}),
    ]
    + [("glob.quote_meta(input.p)", {"p": p}) for p in ["{a*}[?]\\,!-", "plain", "é*", "", "[", 1]],
)
def test_arguments_and_quote_meta_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], expr: str, inp: Any
) -> None:
    assert_matches_opa(opa, authorizer, expr, inp)


def test_a_quoted_pattern_matches_itself(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    text = "{a*}[?]\\é"
    expr = "glob.match(glob.quote_meta(input.p), [], input.p)"
    assert_matches_opa(opa, authorizer, expr, {"p": text})


PATTERN_ALPHABET = ["a", "b", ".", "/", "é", "*", "**", "?", "[", "]", "!", "-", "{", "}", ","]
SUBJECT_ALPHABET = ["a", "b", ".", "/", "é", "-"]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    pattern=st.lists(st.sampled_from([*PATTERN_ALPHABET, "\\"]), max_size=7).map("".join),
    subjects=st.lists(
        st.lists(st.sampled_from(SUBJECT_ALPHABET), max_size=5).map("".join),
        min_size=1,
        max_size=6,
        unique=True,
    ),
)
def test_hypothesis_glob_match_agrees_with_opa(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    pattern: str,
    subjects: list[str],
) -> None:
    _compare(opa, authorizer, pattern, [None, ["."], ["/"], [".", "/"]], subjects)
