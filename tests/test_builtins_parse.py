"""``rego.parse_module`` against the OPA Go engine, on both evaluators.

Each module of the corpus is parsed by OPA (the oracle) and by regoguard on the RVM and on the
interpreter, with and without the decision cache; the ASTs (OPA's ``ast.Module`` JSON) must be
equal. The source reaches the call through ``input.src`` so neither engine folds it at compile
time. Forms regoguard cannot reproduce exactly are refused with an evaluation error
(``REFUSED``), never answered with another AST.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import regoguard

from tests import opa_oracle
from tests._builtins_util import EVALUATORS, opa_value, policy_of
from tests._builtins_util import assert_matches_opa as matches_opa

EXPR = 'rego.parse_module("x.rego", input.src)'

# One module per syntax form (and a few that mix them), as OPA v1 parses them.
CORPUS: dict[str, str] = {
    "package only": "package t\n",
    "dotted package": "package a.b.c\n",
    "complete rule assign": "package t\n\np := 1\n",
    "complete rule eq": "package t\n\np = 1\n",
    "rule if block": "package t\n\np if {\n\ttrue\n}\n",
    "rule if literal": "package t\n\np if input.x == 1\n",
    "rule value if": 'package t\n\np := "yes" if {\n\tinput.x > 1\n}\n',
    "partial set": "package t\n\ns contains x if {\n\tsome x in input.xs\n}\n",
    "partial set no body": "package t\n\ns contains 1\n",
    "partial object": "package t\n\no[k] := v if {\n\tsome k, v in input.o\n}\n",
    "ref head": "package t\n\na.b.c := 1\n",
    "ref head var": 'package t\n\na.b[x] := 1 if {\n\tsome x in ["q"]\n}\n',
    "ref head if": "package t\n\na.b if input.x\n",
    "function": "package t\n\nf(x) := y if {\n\ty := x * 2\n}\n",
    "function no value": "package t\n\nf(x) if {\n\tx > 1\n}\n",
    "function two args": "package t\n\nf(x, y) := x + y\n",
    "function literal args": 'package t\n\nf(1, "a", [z]) := z\n',
    "default": "package t\n\ndefault allow := false\n\nallow if input.ok\n",
    "default eq": "package t\n\ndefault allow = false\n",
    "default function": "package t\n\ndefault f(_) := 0\n\nf(x) := x if x > 0\n",
    "else chain": (
        "package t\n\nr := 1 if {\n\tinput.a\n} else := 2 if {\n\tinput.b\n} else := 3\n"
    ),
    "else operators": (
        "package t\n\nr = 1 if {\n\tinput.a\n} else := 2\n\n"
        "q := 1 if {\n\tinput.a\n} else = 2\n\np if {\n\tinput.a\n} else := false\n\n"
        "f(x) = 1 if {\n\tx\n} else = 2 if {\n\tx > 1\n} else := 3\n\n"
        "s := 1 if {\n\tinput.a\n} else if {\n\tinput.b\n}\n"
    ),
    "else without value": "package t\n\nr if {\n\tinput.a\n} else if {\n\tinput.b\n}\n",
    "imports": (
        "package t\n\nimport data.foo\nimport data.foo.bar as baz\nimport input.x\n"
        "import rego.v1\n\np := baz\n"
    ),
    "future keywords": "package t\n\nimport future.keywords.in\nimport future.keywords.if\n",
    "future keywords all": "package t\n\nimport future.keywords\n\np if input.x\n",
    "future keyword not": "package t\n\nimport future.keywords.not\n\np contains 1 if true\n",
    "not and with": (
        'package t\n\nr if {\n\tnot input.deny\n\tallow with input.user as "a"\n'
        '\tallow with input.user as "a" with data.x as 1\n}\n\nallow if input.user\n'
    ),
    "with function": "package t\n\nf(x) := x\n\nr if {\n\tf(1) with f as g\n}\n\ng(x) := 2\n",
    "some vars": "package t\n\nr if {\n\tsome x\n\tsome y, z\n\tx := input.a[y][z]\n}\n",
    "some in": "package t\n\nr if {\n\tsome x in input.xs\n\tsome k, v in input.o\n\tk == v\n}\n",
    "some in wildcard": "package t\n\nr if {\n\tsome _ in input.xs\n\tsome _, v in input.o\n\tv\n}\n",
    "every": "package t\n\nr if {\n\tevery x in input.xs {\n\t\tx > 0\n\t}\n}\n",
    "every key": (
        "package t\n\nr if {\n\tevery k, v in input.o {\n\t\tk != v\n\t\tv > 1\n\t}\n}\n"
    ),
    "comprehensions": (
        "package t\n\na := [x | some x in input.xs; x > 1]\n"
        "s := {x | some x in input.xs}\n"
        "o := {k: v | some k, v in input.o}\n"
    ),
    "scalars": (
        'package t\n\nr := [1, -2, 3.5, 1e3, 0.1, "s", "esc\\n\\"q\\" \\u00e9", `raw\\n`, '
        "true, false, null]\n"
    ),
    "collections": 'package t\n\nr := {"a": [1, {2}], "b": {}, "c": [], "d": set(), 3: "n"}\n',
    "sets": 'package t\n\nr := {3, 1, 2, 1, "a", [1], null, true, {"k": 1}, input.x, y}\n\ny := 1\n',
    "duplicate keys": 'package t\n\nr := {"b": 1, "a": 2, "b": 3, 1: 0, true: 0, null: 0}\n',
    "numbers": (
        "package t\n\nr := [1.0, 10, 1e3, 1E3, 1.5e-3, 100000000000000000000, 0.0, -0, -1, - 2, "
        "-1.5, 12345678901234567890123]\n"
    ),
    "unary minus": "package t\n\nr := -input.x\n\nq := [-input.y, - input.z]\n",
    "several bodies": "package t\n\np if {\n\tinput.a\n} {\n\tinput.b\n}\n",
    "bracket heads": (
        'package t\n\na["b"] := 1\n\nc[1] = 2\n\nd[x] if {\n\tx := 1\n}\n\ne.f["g"] := 3\n'
        "\nh[x].i := 4 if x := 1\n"
    ),
    "object key order": 'package t\n\nr := {"z": 1, "a": 2, "m": 3}\n',
    "wildcards": "package t\n\nr if {\n\tinput.a[_] == input.b[_]\n\t_ = input.c\n}\n",
    "infix operators": (
        "package t\n\nr if {\n\tx := input.a + 1 - 2 * 3 / 4 % 5\n\tx == 1\n\tx != 2\n\tx < 3\n"
        "\tx <= 4\n\tx > 5\n\tx >= 6\n\ty := input.s | input.t\n\tz := input.s & input.t\n}\n"
    ),
    "precedence": "package t\n\nr := (1 + 2) * 3 == 9\n",
    "unify": "package t\n\nr if {\n\t[x, 1] = input.a\n\tx = 2\n}\n",
    "calls": (
        'package t\n\nr if {\n\tcount(input.xs) > 0\n\tstrings.contains(input.s, "a")\n'
        '\tx := object.get(input, ["a", "b"], null)\n\tio.jwt.decode(input.t)\n}\n'
    ),
    "call statement": 'package t\n\nr if {\n\tprint("x", input)\n\tf(1)\n}\n\nf(x) := x\n',
    "ref on call": 'package t\n\nr := f(1).a[0]\n\nf(x) := {"a": [x]}\n',
    "membership expr": 'package t\n\nr := 1 in input.xs\n\nq := "k", 2 in input.o\n',
    "refs": (
        'package t\n\nr if {\n\tinput.a.b[0]["c-d"]\n\tx := "k"\n\tinput[x]\n'
        "\tdata.t.q\n}\n\nq := true\n"
    ),
    "ref on collections": 'package t\n\nr := [[1, 2][0], {"a": 1}.a, {"a": 1}["a"]]\n',
    "comments": (
        '# leading\npackage t # after package\n\n# before rule\nr := 1 # trailing "#"\n'
        'x := "# not a comment"\n#last'
    ),
    "metadata stays comments": (
        "# METADATA\n# title: T\n# description: |\n#  multi\npackage t\n\n"
        "# METADATA\n# scope: rule\nr := 1\n"
    ),
    "two-part heads": (
        'package t\n\na.b := 1\n\na.c = 2\n\na.d if true\n\na["e"] if true\n\n'
        "a.f := 1 if true\n\nc[1] := 2 if true\n\na[[x]] := 1 if x := 1\n\n"
        "default a.g := 1\n\na.h(x) := x\n\na.i := 1 if input.x else := 2\n"
    ),
    "wildcard everywhere": (
        "package t\n\ndefault f(_) := 0\n\nf(_, y) := y\n\n"
        "p := 1 if { input[_] } else := 2 if { input[_] } else := _\n\n"
        "r := [[_ | _ = input[_]], {_ | input[_]}, {_: 1 | input[_]}]\n\n"
        "q if {\n\tevery _ in input.xs { true }\n\tevery k, _ in input.o { k }\n}\n"
    ),
    "comments everywhere": (
        'package t\n# c1\nr if { # c2\n\t# c3\n\ttrue # c4\n} # c5\nx := "é" # unicode\n'
        "\t# tab\ny := `raw # not\ncomment` # yes\nz := 1#tight\n#last"
    ),
    "bracket head keys": (
        'package t\n\np[concat("", ["a", "b"])] if true\n\nq[input.x] if true\n\n'
        's[f(x)] if {\n\tx := 1\n}\n\nt[{"a": x}] if {\n\tx := 1\n}\n\nf(x) := x\n'
    ),
    "function ref heads": (
        "package t\n\ndefault a.b(_) := 1\n\na.b(x) := x * 2 if x > 10\n\na.c(x) if x > 1\n\n"
        "a.d(x) := x\n"
    ),
    "default comprehensions": (
        "package t\n\nx := 5\n\ndefault a := [x | true]\n\ndefault b := {k: 1 | some k in [1]}\n"
    ),
    "minus and comments": "package t\n\nz := -   # a comment\n\n  1\n\ny := - input.x\n",
    "long ref": "package t\n\nr := input" + ".a" * 40 + "\n",
    "semicolons": "package t\n\nr if { x := 1; y := 2; x < y }\n",
    "multiline": 'package t\n\nr := [\n\t1,\n\t2,\n]\n\nq := {\n\t"a": 1,\n}\n',
    "realistic": (
        "package httpapi.authz\n\nimport rego.v1\n\ndefault allow := false\n\n"
        'allow if {\n\tinput.method == "GET"\n\tinput.path == ["salary", input.user]\n}\n\n'
        'allow if {\n\tsome role in data.roles[input.user]\n\trole == "admin"\n}\n\n'
        'deny contains msg if {\n\tnot allow\n\tmsg := sprintf("denied: %v", [input.user])\n}\n'
    ),
}

# Sources OPA rejects: the call is undefined there and here.
INVALID: dict[str, Any] = {
    "syntax error": "package t\n\np := \n",
    "no package": "p := 1\n",
    "v0 body": "package t\n\np { true }\n",
    "v0 partial set": "package t\n\np[x] { x := 1 }\n",
    "empty": "",
    "rego import": "package t\n\nimport rego.v2\n",
    "unknown future keyword": "package t\n\nimport future.keywords.foo\n",
    "default with ref": "package t\n\ndefault p := input.x\n",
    "default with var": "package t\n\ndefault p := [x]\n",
    "minus paren": "package t\n\nr := -(1)\n",
    "minus array": "package t\n\nr := -[1]\n",
    "experimental or": "package t\n\nimport future.keywords.or\n\nr := or\n\nor := 1\n",
    "else with key": ('package t\n\np[k] := 1 if {\n\tk := "x"\n} else := 2 if {\n\tk := "y"\n}\n'),
    "not a string": 1,
}

# Forms regoguard refuses (an evaluation error) rather than answer with another AST.
REFUSED: dict[str, str] = {
    "repeated import": "package t\n\nimport data.a\nimport data.a\n",
    "repeated future import": "package t\n\nimport future.keywords.in\nimport future.keywords\n",
    "rule named input": "package t\n\ninput := 1\n",
    "import after rule": "package t\n\nr := 1\n\nimport data.x\n",
    "rego.v1 alias": "package t\n\nimport rego.v1 as v\n",
    "template string": 'package t\n\nr := $"x{1}"\n',
    "__target__": 'package t\n\n__target__ := "x"\n',
    "__target__ after rules": 'package t\n\nr := 1\n\n__target__ := "x"\n',
    "__target__ number": "package t\n\n__target__ := 1\n",
    "wildcard alias": "package t\n\nimport data.x as _\n",
    "experimental not": "package t\n\nimport future.keywords\n\nr if {\n\tnot input.x\n}\n",
    "deep nesting": "package t\n\nr := " + "[" * 40 + "1" + "]" * 40 + "\n",
}


def _numbers_by_value(v: Any) -> Any:
    """``v`` with integral floats as ints: Rego compares numbers by value (``1.0 == 1``), and
    regoguard hands an integral number to Python as an ``int`` while the oracle keeps the
    literal's float form (``1e3`` is ``1000.0`` there)."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, list):
        return [_numbers_by_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _numbers_by_value(x) for k, x in v.items()}
    return v


def assert_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], inp: dict[str, Any]
) -> None:
    """OPA's AST for ``inp["src"]`` on the RVM and the interpreter, with and without the
    decision cache; numbers compared by value (README, ``rego.parse_module``)."""
    matches_opa(opa, authorizer, EXPR, inp, normalize=_numbers_by_value)


def _check_refused(authz: regoguard.Authorizer, src: str) -> None:
    with pytest.raises(regoguard.EvaluationError, match=r"rego\.parse_module"):
        authz.check({"src": src})


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_module_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], name: str
) -> None:
    assert_matches_opa(opa, authorizer, {"src": CORPUS[name]})


def test_corpus_is_broad() -> None:
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_source_is_undefined_as_in_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], name: str
) -> None:
    inp = {"src": INVALID[name]}
    assert opa_value(opa, policy_of(EXPR), "data.t.r.v", inp) is opa_oracle.UNDEFINED
    assert_matches_opa(opa, authorizer, inp)


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_unsupported_forms_are_refused(
    authorizer: Callable[..., regoguard.Authorizer], name: str, evaluator: str
) -> None:
    authz = authorizer(policy_of(EXPR), entrypoint="data.t.r", evaluator=evaluator)
    _check_refused(authz, REFUSED[name])


def test_listed_as_supported() -> None:
    assert "rego.parse_module" in regoguard.builtins()
