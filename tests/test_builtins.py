"""The builtins regoguard adds to regorus, against the OPA Go engine, on both evaluators.

Every expression is evaluated by OPA (the oracle) and by regoguard on the RVM and on the
interpreter, with and without the decision cache; all must agree. The oracle runs with strict
builtin errors, so where it raises ``eval_builtin_error``/``eval_type_error`` the non-strict
answer (what OPA serves by default, and regoguard implements) is undefined.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regoguard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import opa_oracle
from tests._builtins_util import EVALUATORS, assert_matches_opa, opa_value, ours, policy_of, same

README = Path(__file__).resolve().parent.parent / "README.md"

# Each family's cases: expressions whose value OPA decides. Inputs reach them through
# `input.a`/`input.b` where a constant would let OPA's type checker refuse the policy.
CASES: dict[str, list[tuple[str, Any]]] = {
    "array": [
        ("array.flatten(input.a)", {"a": [1, [2, [3]], 4, {"k": [5]}]}),
        ("array.flatten(input.a)", {"a": []}),
        ("array.flatten(input.a)", {"a": "no"}),
    ],
    "strings": [
        ('strings.split_n("a,b,c,d", ",", input.a)', {"a": n}) for n in (-5, -2, -1, 0, 1, 2, 3, 10)
    ]
    + [
        ('strings.split_n("", ",", 2)', None),
        ('strings.split_n("héllo", "", 3)', None),
        ('strings.split_n("a,b", ",", input.a)', {"a": 1.5}),
    ],
    "template": [
        ("strings.render_template(input.t, input.v)", {"t": t, "v": v})
        for t, v in [
            (
                "Hi {{.name}}, {{ .n }} {{.o.k}} {{.missing}} {{.arr}} {{.b}} {{.f}}",
                {"name": "x", "n": 3, "o": {"k": "v"}, "arr": [1, "a"], "b": True, "f": 1.5},
            ),
            ("{{range .l}}[{{.}}]{{end}}", {"l": [1, 2]}),
            ("{{if .a}}yes{{else}}no{{end}}", {"a": False}),
            ("{{if .a}}yes{{end}}!", {"a": "x"}),
            ("{{.o}}", {"o": {"k": "v", "a": 1}}),
            ("{{.x", {}),
            ("{{.n}}", {"n": None}),
            ("plain", {}),
        ]
    ],
    "regex": [
        (f"regex.globs_match({json.dumps(a)}, {json.dumps(b)})", None)
        for a, b in [
            ("a.a.[0-9]+z", ".b.b2359825792*594.*z"),
            ("[a-z]+", "[0-9]*"),
            ("[a-c]+x", "b*x"),
            ("a+", "a*b"),
            ("a*", ""),
            ("a+", ""),
            ("(", "("),
            ("a?", ""),
            ("a|b", "b"),
            ("", ""),
            ("abc", "a.c"),
            (".*", "xyz"),
            ("x[ab]+y", "xa*by"),
            ("xa*", "x"),
            ("a*b", "b"),
            ("a*b*", "a"),
            ("a*b*", "ab"),
            ("a*", "b*"),
            (".*", ""),
            ("a*c", "c*"),
        ]
    ],
    "json": [
        ("json.match_schema(input.a, input.b)", {"a": a, "b": b})
        for a, b in [
            (
                {"a": 1},
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            ),
            ({"a": "x"}, {"type": "object"}),
            ('{"a": 1}', '{"type": "object"}'),
            ({"a": [1, "x"]}, {"properties": {"a": {"items": {"type": "integer"}}}}),
            ({"a": 1}, "{"),
        ]
    ]
    + [
        (
            "json.match_schema(input.a, input.b)[0]",
            {"a": {"a": 5}, "b": {"properties": {"a": {"maximum": 3}}}},
        )
    ]
    + [
        ("json.verify_schema(input.a)", {"a": a})
        for a in [{"type": "object"}, '{"type": "string"}', 7]
    ]
    + [("json.verify_schema(input.a)[0]", {"a": a}) for a in [{"type": 12}, "{"]]
    # OPA: a non-string is not valid JSON/YAML text (false), not a type error.
    + [
        (f"{f}.is_valid(input.a)", {"a": a})
        for f in ("json", "yaml")
        for a in [1, None, [1], "{", "a: 1", '{"a": [1, 2]}']
    ],
    # Non-string object keys reach the result as OPA renders them: compact JSON text.
    "keys": [
        ('{[1, 2]: "a", {"k": [1, "x"]}: "b", {3}: "c", 4: "d"}', None),
        ('[k | some k, _ in {[1]: 1, {"a": {"b": 2}}: 2}]', None),
    ],
    "aws": [
        ("providers.aws.sign_req(input.a, input.b, input.c)", {"a": a, "b": b, "c": c})
        for a, b, c in [
            (
                {
                    "method": "GET",
                    "url": "https://examplebucket.s3.amazonaws.com/test.txt",
                    "headers": {"range": "bytes=0-9"},
                },
                {
                    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
                    "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                    "aws_service": "s3",
                    "aws_region": "us-east-1",
                },
                1369353600000000000,
            ),
            (
                {
                    "method": "POST",
                    "url": "https://x.execute-api.eu-west-1.amazonaws.com/p?b=2&a=1",
                    "body": {"k": 1},
                },
                {
                    "aws_access_key": "AK",
                    "aws_secret_access_key": "SK",
                    "aws_service": "execute-api",
                    "aws_region": "eu-west-1",
                    "aws_session_token": "TOK",
                },
                1700000000000000000,
            ),
            (
                {"method": "GET", "url": "https://x.com/"},
                {
                    "aws_access_key": "AK",
                    "aws_secret_access_key": "SK",
                    "aws_service": "s3",
                    "aws_region": "us-east-1",
                    "disable_payload_signing": True,
                },
                0,
            ),
            ({"method": "GET", "url": "https://x.com/"}, {"aws_access_key": "AK"}, 0),
        ]
    ],
    "operators": [
        ("plus(input.a, input.b)", {"a": 1, "b": 2.5}),
        ("minus(input.a, input.b)", {"a": 5, "b": 7}),
        ("minus(input.a, input.b)", {"a": 5, "b": "x"}),
        ("mul(input.a, input.b)", {"a": 6, "b": 7}),
        ("div(input.a, input.b)", {"a": 1, "b": 4}),
        ("div(input.a, input.b)", {"a": 1, "b": 0}),
        ("rem(input.a, input.b)", {"a": 7, "b": 3}),
        ("rem(input.a, input.b)", {"a": 7, "b": 0}),
        ("rem(input.a, input.b)", {"a": 7.5, "b": 2}),
        ("minus({1, 2, 3}, {2})", None),
        ("and({1, 2}, {2, 3})", None),
        ("or({1}, {2})", None),
        ("equal(input.a, input.b)", {"a": 1, "b": 1}),
        ("neq(input.a, input.b)", {"a": 1, "b": 2}),
        ("lt(input.a, input.b)", {"a": 1, "b": "a"}),
        ("lte(input.a, input.b)", {"a": 2, "b": 2}),
        ("gt(input.a, input.b)", {"a": [1], "b": 2}),
        ("gte(input.a, input.b)", {"a": 1, "b": 2}),
    ],
    "net": [
        (f"net.cidr_intersects({json.dumps(a)}, {json.dumps(b)})", None)
        for a, b in [
            ("192.168.0.0/16", "192.168.1.0/24"),
            ("192.168.0.0/24", "10.0.0.0/8"),
            ("192.168.0.0/24", "fd00::/8"),
            ("::ffff:0:0/96", "1.0.0.0/8"),
            ("::/0", "1.0.0.0/8"),
            ("fd00::/8", "fd12::/16"),
            ("bad", "10.0.0.0/8"),
            ("1.2.3.4", "1.2.3.4/32"),
        ]
    ]
    + [
        ("net.cidr_merge(input.a)", {"a": a})
        for a in [
            ["192.0.128.0/24", "192.0.129.0/24", "fd00::/9", "fd80::/9"],
            ["1.1.1.0/25", "1.1.1.128/25", "1.1.1.7/24"],
            ["10.0.0.0/8", "10.0.0.0/8", "11.0.0.0/8"],
            ["1.1.1.7/24"],
            ["10.0.0.0/33"],
            ["x"],
            ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/30", "0.0.0.8/29"],
            [],
        ]
    ]
    + [
        ("net.cidr_contains_matches(input.a, input.b)", {"a": a, "b": b})
        for a, b in [
            (["1.1.1.0/24", "1.1.2.0/24"], ["1.1.1.128", ["1.1.254.1", "x"], "1.1.2.1"]),
            ({"a": "1.0.0.0/8"}, {"k": "1.2.3.4", "j": "2.2.2.2"}),
            ("1.0.0.0/8", "1.2.3.4"),
            (["1.0.0.0/8"], "1.2.3.4/32"),
            (["1.0.0.0/8"], "1.0.0.0/4"),
            ([["1.0.0.0/8", "x"]], ["1.2.3.4"]),
            (["x"], "1.2.3.4"),
            (["1.0.0.0/8"], ["bad"]),
            (["fd00::/8"], ["fd00::1", "1.2.3.4"]),
        ]
    ],
    "uri": [
        (f"uri.{f}(input.a)", {"a": a})
        for f in ("parse", "is_valid")
        for a in [
            "https://user:pw@Host.example:8080/p/a%20b?q=1&r=2#frag",
            "mailto:a@b.c",
            "/rel/path?x",
            "spiffe://td/ns/prod",
            "http://[::1]:80/",
            "http://[::1/",
            "http://h:port/",
            "::bad",
            "a:b/c",
            "./a:b",
            "",
            "*",
            "http://x/%zz",
            "http://x/a%2Fb",
            "http://x/?",
            "a b",
            "http://x y/",
            "x\u0001",
            "//host/p",
            "#only-fragment%41",
            1,
        ]
    ],
}

ALL_CASES = [
    pytest.param(expr, inp, id=f"{family}-{i}")
    for family, cases in CASES.items()
    for i, (expr, inp) in enumerate(cases)
]


@pytest.mark.parametrize(("expr", "inp"), ALL_CASES)
def test_each_family_matches_opa_on_both_evaluators_cached_and_not(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], expr: str, inp: Any
) -> None:
    assert_matches_opa(opa, authorizer, expr, inp)


METADATA_POLICY = """# METADATA
# title: pkg
# description: the package
package t

# METADATA
# title: allow rule
# custom:
#   severity: high
allow if {
\ttrue
}

r := rego.metadata.rule()

c := rego.metadata.chain()

# METADATA
# description: with
w := [rego.metadata.rule(), rego.metadata.chain()]

# METADATA
# title: f
f(x) := [x, rego.metadata.rule().title]

v := f(1)
"""


@pytest.mark.parametrize("rule", ["r", "c", "w", "v"])
def test_rego_metadata_rule_and_chain_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], rule: str
) -> None:
    expected = opa_value(opa, METADATA_POLICY, f"data.t.{rule}", {})
    wrapped = METADATA_POLICY + f'\nout := {{"allow": true, "v": {rule}}}\n'
    for evaluator in EVALUATORS:
        got = (
            authorizer(wrapped, entrypoint="data.t.out", evaluator=evaluator).check({}).result["v"]
        )
        assert same(got, expected), f"{evaluator}: {got!r} != OPA {expected!r}"


# -- small semantic differences from OPA, each checked against the oracle ----------------------


def test_walk_with_an_array_path_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    """`walk` paths are arrays of keys and indexes; regorus 0.14's RVM cannot compile `walk`
    loops, so `auto` runs the policy on the interpreter (and `rvm` is refused at construction)."""
    policy = policy_of('[[p, w] | walk({"a": [1, {"b": 2}]}, [p, w]); is_number(w)]')
    expected = opa_value(opa, policy, "data.t.r.v", {})
    for evaluator in ("auto", "interpreter"):
        a = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator)
        assert same(ours(a, None), expected), evaluator
    with pytest.raises(regoguard.ConfigError, match="walk"):
        authorizer(policy, entrypoint="data.t.r", evaluator="rvm")


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ("x := 1e400", "invalid number"),  # OPA keeps it as an arbitrary-precision number
        ("f(a) := 1\nx := y if { y := f([1, 2]) with f as count }", "count"),
    ],
)
@pytest.mark.parametrize("evaluator", ["auto", "rvm", "interpreter"])
def test_what_regorus_cannot_express_is_refused_at_construction(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], body: str, what: str, evaluator: str
) -> None:
    """OPA accepts these (a `1e400` literal; mocking a function with a builtin); regorus cannot
    evaluate them, so the policy is a PolicyError when it is loaded, never a wrong answer."""
    policy = f"package t\n\n{body}\n"
    assert opa_value(opa, policy, "data.t.x", {}) is not opa_oracle.UNDEFINED
    with pytest.raises(regoguard.PolicyError, match=what) as e:
        authorizer(policy, entrypoint="data.t.x", evaluator=evaluator)
    assert re.search(r"authz\.rego:\d+:\d+", str(e.value)), str(e.value)


CHAINED_BODIES = [
    "x := y if { false; y := 1 } { y := 2 }",  # OPA: 2; regorus answered true
    "x := 5 if { false } { true }",  # OPA: 5; regorus answered true
    "x := y if { y := input.a } { y := input.b }",  # OPA: a conflict error; regorus: input.a
    "f(a) := y if { a == 1; y := 1 } { y := 2 }\nx := f(0)",  # OPA: 2
    "x.c := y if { false; y := 1 } { y := 2 }",  # OPA: {"c": 2}
    'x[k] := y if { k := "a"; y := 1 } { k := "b"; y := 2 }',
]


@pytest.mark.parametrize("body", CHAINED_BODIES)
@pytest.mark.parametrize("evaluator", ["auto", "rvm", "interpreter"])
def test_chained_rule_bodies_are_refused_at_construction(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], body: str, evaluator: str
) -> None:
    """`p := v if { ... } { ... }`: OPA reads each further body as another definition of `p`,
    and regorus answered several of these forms differently on both evaluators (a head value
    became `true`, a conflict went unreported). A PolicyError naming the body, never a wrong
    answer."""
    from opa_bindings.engine import OpaError

    policy = f"package t\n\n{body}\n"
    try:
        opa_value(opa, policy, "data.t.x", {"a": 7, "b": 8})  # OPA accepts the syntax
    except OpaError as e:
        assert "eval_conflict_error" in str(e), e
    with pytest.raises(regoguard.PolicyError, match="chained rule bodies") as e:
        authorizer(policy, entrypoint="data.t.x", evaluator=evaluator)
    assert re.search(r"authz\.rego:3:\d+", str(e.value)), str(e.value)


@pytest.mark.parametrize("evaluator", ["auto", "interpreter"])  # rvm: a known difference
def test_else_chains_are_not_chained_bodies(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], evaluator: str
) -> None:
    policy = policy_of("x") + "\nx := y if { false; y := 1 } else := 3 if { true }\n"
    expected = opa_value(opa, policy, "data.t.r.v", {})
    assert expected == 3
    assert same(ours(authorizer(policy, entrypoint="data.t.r", evaluator=evaluator), None), 3)


def test_auto_answers_as_opa_where_the_rvm_is_known_to_differ(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    """The RVM answers a dotted ref head's leaf, not the object: `auto` runs such an entrypoint
    on the interpreter (and says so), so the default evaluator gives OPA's answer."""
    policy = policy_of("g") + '\ng.h[k] := 1 if k := "key"\n'
    expected = opa_value(opa, policy, "data.t.r.v", {})
    assert expected == {"h": {"key": 1}}
    for evaluator in ("auto", "interpreter"):
        a = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator)
        assert same(ours(a, None), expected), evaluator
    assert (
        authorizer(policy, entrypoint="data.t.r").stats()["evaluators"]["data.t.r"] == "interpreter"
    )


# -- construction: unknown functions, the evaluator choice ------------------------------------

UNKNOWN_SHAPES = [
    "x := nope(input.a)",
    "x if { y := nope(input.a); y }",
    "x if { [a, b] := nope(input.a); a == b }",
    "x if { nope(input.a) == 1 }",
    "x := [y | some a in input.as; y := nope(a)]",
    "x := {k: w | some k, v in input.o; w := io.nope(v)}",
    "x := 1 if { false } else := nope(1)",
    "f(a) := nope(a)\nx := f(1)",
    "x if { every a in input.as { nope(a) } }",
    "x if { y := count(input.a) with input as nope(1); y }",
    "x := 1\nunreached if { strings.nope(1) }",
]


@pytest.mark.parametrize("body", UNKNOWN_SHAPES)
@pytest.mark.parametrize("evaluator", ["auto", "rvm", "interpreter"])
def test_an_unknown_function_anywhere_is_a_policy_error_at_construction(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], body: str, evaluator: str
) -> None:
    from opa_bindings.engine import OpaError

    policy = f"package t\n\n{body}\n"
    with pytest.raises(OpaError, match="rego_type_error"):
        opa_value(opa, policy, "data.t.x", {})  # OPA refuses it too
    with pytest.raises(regoguard.PolicyError) as e:
        authorizer(policy, entrypoint="data.t.x", evaluator=evaluator)
    assert re.search(r"authz\.rego:[34]:\d+", str(e.value)), str(e.value)
    assert "undefined function" in str(e.value)


def test_auto_says_which_evaluator_and_why_and_logs_a_fallback(
    authorizer: Callable[..., regoguard.Authorizer], caplog: pytest.LogCaptureFixture
) -> None:
    rvm = authorizer(
        'package t\nx := {"allow": true, "v": array.flatten([[1]])}\n', entrypoint="data.t.x"
    )
    assert rvm.stats()["evaluators"] == {"data.t.x": "rvm"}
    assert rvm.stats()["evaluator_reasons"] == {"data.t.x": None}
    assert rvm.check({}).evaluator == "rvm"
    # `with` is one construct regorus 0.14's RVM compiler refuses: auto falls back, loudly.
    policy = (
        'package t\nx := {"allow": y} if { y := data.t.z with input.q as 1 }\nz := input.q == 1\n'
    )
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        interp = authorizer(policy, entrypoint="data.t.x")
    reason = interp.stats()["evaluator_reasons"]["data.t.x"]
    if interp.stats()["evaluators"]["data.t.x"] == "rvm":
        pytest.skip("this regorus compiles `with` for the RVM: no fallback to show")
    assert reason
    assert any(
        "data.t.x runs on the interpreter" in r.getMessage() and reason in r.getMessage()
        for r in caplog.records
    )
    d = interp.check({})
    assert (d.allow, d.evaluator) == (True, "interpreter")
    assert interp.check({}).source == "l1" and interp.check({}).evaluator == "interpreter"


# -- the list of builtins ----------------------------------------------------------------------


def test_builtins_lists_regorus_and_ours_and_the_readme_shows_exactly_them() -> None:
    names = regoguard.builtins()
    assert names == sorted(set(names))
    for n in ("count", "io.jwt.decode", "array.flatten", "net.cidr_merge", "print"):
        if n.startswith("io.jwt") and n not in names:
            continue  # the crypto families land from their own branch
        assert n in names
    text = README.read_text()
    block = re.search(r"<!-- builtins:begin -->\n(.*?)<!-- builtins:end -->", text, re.DOTALL)
    assert block, "README has no generated builtins list"
    listed = re.findall(r"`([a-z0-9_.]+)`", block.group(1))
    assert sorted(listed) == names and len(listed) == len(names), (
        "README's builtin list is stale: run `python scripts/builtins_readme.py`"
    )


# -- Hypothesis: the RVM and the interpreter agree ---------------------------------------------

ARG = st.one_of(
    st.integers(-3, 3).map(str),
    st.sampled_from(
        [
            '"a,b,c"',
            '","',
            '""',
            '"10.0.0.0/8"',
            '"10.1.0.0/16"',
            '"fd00::/8"',
            '"x"',
            '"a*"',
            '"[a-b]+"',
            '"https://h.example:8/p?q#f"',
            '"::x"',
        ]
    ),
    st.sampled_from(
        [
            "[1, [2, 3]]",
            "[]",
            '["10.0.0.1/32", "10.0.0.0/8"]',
            "{1, 2}",
            "{2, 3}",
            "input.a",
            "input.b",
        ]
    ),
)
CALL = st.one_of(
    st.tuples(st.just("array.flatten"), ARG),
    st.tuples(st.just("strings.split_n"), ARG, ARG, ARG),
    st.tuples(st.just("regex.globs_match"), ARG, ARG),
    st.tuples(st.sampled_from(["net.cidr_intersects", "net.cidr_contains_matches"]), ARG, ARG),
    st.tuples(st.just("net.cidr_merge"), ARG),
    st.tuples(
        st.sampled_from(
            ["uri.parse", "uri.is_valid", "crypto.sha256", "crypto.x509.parse_certificates"]
        ),
        ARG,
    ),
    st.tuples(
        st.sampled_from(["plus", "minus", "mul", "div", "rem", "and", "or", "lt", "equal"]),
        ARG,
        ARG,
    ),
    st.tuples(st.sampled_from(["count", "concat", "split"]), ARG, ARG).map(
        lambda t: (t[0], t[1]) if t[0] == "count" else t
    ),
)


def render(call: tuple[str, ...]) -> str:
    return f"{call[0]}({', '.join(call[1:])})"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(CALL, min_size=1, max_size=3),
    wrap=st.sampled_from(["plain", "not", "compr", "func"]),
)
def test_hypothesis_rvm_and_interpreter_agree_on_builtin_calls(
    policy_dir: Callable[..., Path], calls: list[tuple[str, ...]], wrap: str
) -> None:
    lines = ["package t", "", "f(a) := a"]
    for i, c in enumerate(calls):
        e = render(c)
        body = {
            "plain": f"v{i} := {e}",
            "not": f"v{i} if {{ not {e} }}",
            # `y == y` after the assignment: regorus 0.14's RVM does not fail a comprehension
            # body on `y := <undefined>` (its own builtins too; README "Matching OPA").
            "compr": f"v{i} := [[k, y] | some k in [1, 2]; y := {e}; y == y]",
            "func": f"v{i} := f({e})",
        }[wrap]
        lines.append(body)
    lines.append(
        'r := {"allow": true, "vs": [' + ", ".join(f"v{i}" for i in range(len(calls))) + "]}"
    )
    lines += [f'default v{i} := "undefined"' for i in range(len(calls))]
    policy = "\n".join(lines) + "\n"
    folder = policy_dir(policy)
    inp = {"a": [1, [2]], "b": "10.0.0.5"}
    results = []
    for evaluator in EVALUATORS:
        try:
            a = regoguard.Authorizer(folder, entrypoint="data.t.r", evaluator=evaluator, cache=None)
            results.append(("ok", json.dumps(a.check(inp).result, sort_keys=True)))
        except regoguard.RegoguardError as e:
            results.append(("error", type(e).__name__))
    assert results[0] == results[1], policy


# -- http.send against a real server on 127.0.0.1 ---------------------------------------------


@pytest.fixture
def server() -> Any:
    import http.server
    import threading
    import time

    hits: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path.startswith("/slow"):
                time.sleep(1.5)
            if "redirect-out" in self.path:
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.2:1/secret")
                self.end_headers()
                return
            if "redirect-in" in self.path:
                self.send_response(302)
                self.send_header("Location", "/api/user")
                self.end_headers()
                return
            body = json.dumps({"path": self.path, "n": hits[self.path]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path.startswith("/api/cached"):
                self.send_header("Cache-Control", "max-age=60")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()
    srv.server_close()


HTTP_POLICY = """package t

r := {"allow": resp.status_code == 200, "body": resp.body} if {
\tresp := http.send(object.union({"method": "GET", "url": input.url}, object.get(input, "opts", {})))
}
"""


def test_http_send_is_off_by_default(
    authorizer: Callable[..., regoguard.Authorizer], server: Any
) -> None:
    base, hits = server
    for evaluator in EVALUATORS:
        a = authorizer(HTTP_POLICY, entrypoint="data.t.r", evaluator=evaluator, cache=None)
        d = a.check({"url": f"{base}/api/user"})
        assert (d.allow, d.reason) == (False, "undefined")
        d = a.check({"url": f"{base}/api/user", "opts": {"raise_error": False}})
        assert d.result is None or d.allow is False
    assert hits == {}, "a request left the process without allow_net"


def test_http_send_fetches_allowed_urls_on_both_evaluators(
    authorizer: Callable[..., regoguard.Authorizer], server: Any
) -> None:
    base, hits = server
    for evaluator in EVALUATORS:
        a = authorizer(
            HTTP_POLICY,
            entrypoint="data.t.r",
            evaluator=evaluator,
            cache=None,
            allow_net=[f"{base}/api"],
        )
        d = a.check({"url": f"{base}/api/user"})
        assert d.allow and d.result["body"]["path"] == "/api/user"
    assert hits["/api/user"] == 2


@pytest.mark.parametrize(
    "url",
    [
        "{base}/apix",  # not at a path boundary
        "{base}/admin",
        "{base}/api/../admin",  # dot segments resolve outside the prefix
        "http://127.0.0.1.evil.test/api/user",
        "http://127.0.0.1@127.0.0.2/api/user",
        "{base}/api/redirect-out?enable",  # the redirect leaves the allow-list
    ],
)
def test_http_send_refuses_urls_outside_the_allow_list(
    authorizer: Callable[..., regoguard.Authorizer], server: Any, url: str
) -> None:
    base, hits = server
    a = authorizer(HTTP_POLICY, entrypoint="data.t.r", cache=None, allow_net=[f"{base}/api"])
    d = a.check({"url": url.format(base=base), "opts": {"enable_redirect": True}})
    assert not d.allow
    assert "/admin" not in hits and "/apix" not in hits and "/secret" not in hits


def test_http_send_follows_redirects_inside_the_allow_list(
    authorizer: Callable[..., regoguard.Authorizer], server: Any
) -> None:
    base, _hits = server
    a = authorizer(HTTP_POLICY, entrypoint="data.t.r", cache=None, allow_net=[f"{base}/api"])
    d = a.check({"url": f"{base}/api/redirect-in", "opts": {"enable_redirect": True}})
    assert d.allow and d.result["body"]["path"] == "/api/user"


def test_http_send_is_bounded_by_its_timeout(
    authorizer: Callable[..., regoguard.Authorizer], server: Any
) -> None:
    import time

    base, _ = server
    # The evaluation budget (default 100 ms) would stop it too; this is http.send's own timeout.
    a = authorizer(
        HTTP_POLICY, entrypoint="data.t.r", cache=None, allow_net=[base], eval_timeout_seconds=5
    )
    started = time.monotonic()
    d = a.check({"url": f"{base}/slow", "opts": {"timeout": "200ms"}})
    assert (d.allow, d.reason) == (False, "undefined")
    assert time.monotonic() - started < 1.4  # the server answers after 1.5 s


def test_http_send_timeout_is_clamped_to_the_evaluation_budget(
    authorizer: Callable[..., regoguard.Authorizer], server: Any
) -> None:
    """http.send's own timeout (5 s here) never outlives the evaluation budget (0.3 s): the
    request is cut when the budget runs out, so the check ends long before the server answers
    (after 1.5 s) and nothing is granted."""
    import time

    base, _ = server
    for evaluator in EVALUATORS:
        a = authorizer(
            HTTP_POLICY,
            entrypoint="data.t.r",
            evaluator=evaluator,
            cache=None,
            allow_net=[base],
            eval_timeout_seconds=0.3,
        )
        started = time.monotonic()
        try:
            d = a.check({"url": f"{base}/slow", "opts": {"timeout": "5s"}})
            assert not d.allow
        except regoguard.EvaluationError:
            pass
        assert time.monotonic() - started < 1.4, evaluator


def test_http_send_inter_query_cache_honours_max_age_and_force_cache(
    authorizer: Callable[..., regoguard.Authorizer], server: Any
) -> None:
    base, hits = server
    a = authorizer(HTTP_POLICY, entrypoint="data.t.r", cache=None, allow_net=[base])
    for _ in range(3):
        assert (
            a.check({"url": f"{base}/api/cached", "opts": {"cache": True}}).result["body"]["n"] == 1
        )
    for _ in range(3):
        assert a.check(
            {
                "url": f"{base}/api/forced",
                "opts": {"force_cache": True, "force_cache_duration_seconds": 60},
            }
        ).allow
    assert hits["/api/forced"] == 1
    # Without a cache option every evaluation asks the server.
    for _ in range(2):
        a.check({"url": f"{base}/api/plain"})
    assert hits["/api/plain"] == 2


def test_allow_net_entries_are_validated(authorizer: Callable[..., regoguard.Authorizer]) -> None:
    for bad in ["idp.example", "ftp://x/", "https://u:p@x/", "https://x/?q=1"]:
        with pytest.raises(regoguard.ConfigError, match="allow_net"):
            authorizer(HTTP_POLICY, entrypoint="data.t.r", allow_net=[bad])
