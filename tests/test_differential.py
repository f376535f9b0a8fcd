"""Differential harness: generated policies and inputs, decided by OPA's Go engine (the oracle)
and by regoguard on every evaluator, cached and uncached.

Hypothesis builds a small policy around one rule ``r`` of a random kind (complete with default
and else chains, partial set, partial object, function with and without default, ref head,
``every``, ``some ... in``, comprehensions, ``with``, ``not``) and wraps it in the decision
``allow := {"allow": true, "value": r}``, so "r undefined", "r conflicts" and "r's value" all
show in the decision. A failure shrinks to a small policy and input; the cases it found are
kept in tests/cases/differential.yaml (run by cargo and pytest).

Bounded: ``REGOGUARD_DIFFERENTIAL_EXAMPLES`` examples (default 60, derandomized so CI is
reproducible), each a few milliseconds per evaluator.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import regoguard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import opa_oracle

EXAMPLES = int(os.environ.get("REGOGUARD_DIFFERENTIAL_EXAMPLES", "60"))

ints = st.integers(min_value=0, max_value=3)
terms = st.one_of(
    ints.map(str),
    st.sampled_from(["input.a", "input.b[0]", "input.o.k", "count(input.b)", "input.s", '"x"']),
)
ops = st.sampled_from(["==", "!=", "<", ">"])


@st.composite
def conditions(draw: Any, depth: int = 0) -> str:
    kind = draw(
        st.sampled_from(["cmp", "cmp", "not", "some", "every", "member"] if depth < 1 else ["cmp"])
    )
    if kind == "cmp":
        return f"{draw(terms)} {draw(ops)} {draw(terms)}"
    if kind == "not":
        # Over helper rules: `not` over an undefined operand is a known difference (README).
        return f"not {draw(st.sampled_from(['na', 'nb', 'no', '1 == 2']))}"
    if kind == "some":
        return f"some x in input.b\n\t\tx {draw(ops)} {draw(terms)}"
    if kind == "every":
        return f"every y in input.b {{ y {draw(ops)} {draw(ints)} }}"
    return f"{draw(ints)} in input.b"


@st.composite
def bodies(draw: Any) -> str:
    conds = draw(st.lists(conditions(), min_size=1, max_size=2))
    return "{\n\t" + "\n\t".join(conds) + "\n}"


values = st.one_of(
    ints.map(str),
    st.sampled_from(['"v"', "input.a", '{"k": input.a}', "[input.a, 1]", "true", "false"]),
)


@st.composite
def rule(draw: Any) -> str:
    kind = draw(
        st.sampled_from(
            [
                "complete",
                "else",
                "set",
                "object",
                "function",
                "function_default",
                "ref_head",
                "compr",
                "with",
            ]
        )
    )
    default = draw(st.booleans())
    lines: list[str] = []
    if kind == "complete":
        if default:
            lines.append(f"default r := {draw(values)}")
        for _ in range(draw(st.integers(1, 2))):
            lines.append(f"r := {draw(values)} if {draw(bodies())}")
    elif kind == "else":
        if default:
            lines.append(f"default r := {draw(values)}")
        chain = f"r := {draw(values)} if {draw(bodies())}"
        for _ in range(draw(st.integers(1, 2))):
            chain += f" else := {draw(values)} if {draw(bodies())}"
        if draw(st.booleans()):
            chain += f" else := {draw(values)}"
        lines.append(chain)
    elif kind == "set":
        lines.append(f"r contains {draw(values)} if {draw(bodies())}")
        lines.append(f"r contains x if {{\n\tsome x in input.b\n\t{draw(conditions())}\n}}")
    elif kind == "object":
        lines.append(f'r["p"] := {draw(values)} if {draw(bodies())}')
        lines.append(
            f"r[k] := {draw(values)} if {{\n\tsome k in input.b\n\t{draw(conditions())}\n}}"
        )
    elif kind in ("function", "function_default"):
        if kind == "function_default":
            lines.append(f"default f(_) := {draw(ints)}")
        lines.append(f"f(x) := x + {draw(ints)} if x {draw(ops)} {draw(ints)}")
        if draw(st.booleans()):
            lines.append(f"f(x) := {draw(ints)} if x {draw(ops)} {draw(ints)}")
        call = draw(
            st.sampled_from(
                ["[f(x) | some x in input.b]", "f(input.a)", "{f(x) | some x in input.b}"]
            )
        )
        lines.append(f"r := {call}")
    elif kind == "ref_head":
        # Known difference (README): when no rule of a dotted ref head fires, OPA answers
        # {"p": {}} and regorus undefined; one rule that always fires keeps the harness off it.
        lines.append("r.p.always := 1")
        lines.append(f"r.p.q := {draw(values)} if {draw(bodies())}")
        lines.append(f"r.p.w := {draw(values)} if {draw(bodies())}")
    elif kind == "compr":
        shape = draw(
            st.sampled_from(
                [
                    "[x | some x in input.b; {c}]",
                    "{{x | some x in input.b; {c}}}",
                    # Known difference (README): duplicate keys with different values
                    # are a conflict in OPA and last-wins in regorus; x: x never conflicts.
                    "{{x: x | some x in input.b; {c}}}",
                ]
            )
        )
        cond = draw(conditions(1)).replace("\n\t\t", "; ")
        lines.append("r := " + shape.format(c=cond))
    else:  # with
        lines.append(f"h := {draw(values)} if {draw(bodies())}")
        lines.append(f"r := v if {{\n\tv := h with input.a as {draw(ints)}\n}}")
    return "\n".join(lines)


inputs = st.fixed_dictionaries(
    {},
    optional={
        "a": ints,
        "b": st.lists(ints, max_size=3),
        "s": st.sampled_from(["x", "y"]),
        "o": st.fixed_dictionaries({"k": ints}),
    },
)

HEADER = (
    'package gen\n\nallow := {"allow": true, "value": r}\n\n'
    "na if input.a == 1\n\nnb if 0 in input.b\n\nno if input.o.k > 1\n\n"
)


def _oracle(opa: Any, policy: str, doc: dict[str, Any]) -> tuple[str, Any]:
    engine = None
    try:
        engine = opa({"gen.rego": policy})
        value = engine.eval("data.gen.allow", doc)
    except Exception as e:  # noqa: BLE001 - OpaError (the oracle module loads lazily): conflicts, strict builtin errors
        text = str(e)
        # The oracle runs with strict builtin errors; OPA's default (ours) is undefined there.
        assume("eval_builtin_error" not in text and "rego_" not in text)
        return ("error", text.splitlines()[0])
    finally:
        if engine is not None:
            engine.close()
    if value is opa_oracle.UNDEFINED:
        return ("undefined", None)
    return ("value", json.loads(opa_oracle.canonical(value)))


def _ours(authz: regoguard.Authorizer, doc: dict[str, Any]) -> tuple[str, Any]:
    try:
        d = authz.check(doc)
    except regoguard.EvaluationError as e:
        return ("error", str(e).splitlines()[0])
    if d.result is None:
        return ("undefined", None)
    return ("value", json.loads(opa_oracle.canonical(d.result)))


def _same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    # Error texts differ between engines; that both fail is what matters.
    return a[0] == b[0] and (a[0] == "error" or a[1] == b[1])


def differences(opa: Any, tmp: Path, policy: str, docs: list[dict[str, Any]]) -> list[str]:
    """Every (evaluator, cache, input) whose decision differs from OPA's."""
    (tmp / "gen.rego").write_text(policy)
    expected = [_oracle(opa, policy, d) for d in docs]  # skips policies OPA rejects
    auto = regoguard.Authorizer(tmp, entrypoint="data.gen.allow", evaluator="auto")
    found = []
    auto_on = auto.stats()["evaluators"]["data.gen.allow"]
    for evaluator in ("auto", "interpreter", "rvm"):
        if evaluator == "rvm" and auto_on != "rvm":
            # Explicit rvm is compared where auto trusts it; where auto avoids it, the README's
            # known differences say why.
            continue
        for cache in (True, False):
            kwargs: dict[str, Any] = {} if cache else {"cache": None}
            authz = regoguard.Authorizer(
                tmp, entrypoint="data.gen.allow", evaluator=evaluator, **kwargs
            )
            for doc, want in zip(docs, expected):
                for _round in range(2 if cache else 1):
                    got = _ours(authz, doc)
                    if not _same(got, want):
                        found.append(
                            f"{evaluator} cache={cache} input={doc}: got {got}, OPA {want}"
                        )
    return found


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("REGOGUARD_DIFFERENTIAL_RANDOM") is None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(body=rule(), docs=st.lists(inputs, min_size=1, max_size=3))
def test_generated_policies_decide_as_opa(
    opa: Any, tmp_path_factory: pytest.TempPathFactory, body: str, docs: list[dict[str, Any]]
) -> None:
    policy = HEADER + body + "\n"
    tmp = tmp_path_factory.mktemp("gen")
    found = differences(opa, tmp, policy, docs)
    assert not found, policy + "\n" + "\n".join(found)
