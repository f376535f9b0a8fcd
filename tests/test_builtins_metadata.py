"""`rego.metadata.rule()` / `rego.metadata.chain()` against OPA, on both evaluators: every
scope (`rule`, `document`, `package`, `subpackages`) across the files of a package and the
packages above it, the chain's order and paths, the normalisation of every annotation field,
calls in functions, `else` and later bodies, and the blocks OPA refuses (a `PolicyError` with
the file and line, never a silent `{}`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import regoguard

from tests import opa_oracle
from tests._builtins_util import EVALUATORS, same


def opa_eval(opa: Any, files: dict[str, str], path: str) -> Any:
    engine = opa(files)
    try:
        return engine.eval(path, {})
    finally:
        engine.close()


def check(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    files: dict[str, str],
    package: str,
    rule: str,
    evaluators: tuple[str, ...] = EVALUATORS,
) -> None:
    """`data.<package>.<rule>` is OPA's value on both evaluators (OPA given the same files)."""
    expected = opa_eval(opa, files, f"data.{package}.{rule}")
    assert expected is not opa_oracle.UNDEFINED
    wrapper = f'package regoguard_out\n\nout := {{"allow": true, "v": data.{package}.{rule}}}\n'
    ours = {**files, "zz_out.rego": wrapper}
    for evaluator in evaluators:
        authz = authorizer(ours, entrypoint="data.regoguard_out.out", evaluator=evaluator)
        got = authz.check({}).result["v"]
        assert same(got, expected), (
            f"{evaluator}: {json.dumps(got, sort_keys=True)}\n"
            f"   OPA: {json.dumps(expected, sort_keys=True)}"
        )


# -- scopes across files and packages ------------------------------------------------------

SCOPES = {
    "a.rego": """# METADATA
# scope: subpackages
# title: root
# organizations: [acme]
package a
""",
    "b.rego": """# METADATA
# title: pkg b
package a.b

# METADATA
# scope: document
# title: doc r

# METADATA
# title: rule r
r := [rego.metadata.rule(), rego.metadata.chain()]

# METADATA
# title: far

# METADATA
# title: near
two := [rego.metadata.rule(), rego.metadata.chain()]

none := [rego.metadata.rule(), rego.metadata.chain()]

# METADATA
# entrypoint: true
# title: ep
ep := [rego.metadata.rule(), rego.metadata.chain()]
""",
    "c.rego": """# METADATA
# scope: subpackages
# title: sub c
package a.b.c

# METADATA
# title: x
x := [rego.metadata.rule(), rego.metadata.chain()]
""",
    "d.rego": """package a.b

# METADATA
# title: r in another file
r := 1 if false

other := rego.metadata.chain()
""",
    "e.rego": """package a.b.c.d.e

deep := rego.metadata.chain()
""",
    "f.rego": """# METADATA
# title: lonely
package f

g := rego.metadata.chain()
""",
}


@pytest.mark.parametrize(
    ("package", "rule"),
    [
        ("a.b", "r"),
        ("a.b", "two"),
        ("a.b", "none"),
        ("a.b", "ep"),
        ("a.b", "other"),
        ("a.b.c", "x"),
        ("a.b.c.d.e", "deep"),
        ("f", "g"),
    ],
)
def test_every_scope_across_files_and_packages_matches_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], package: str, rule: str
) -> None:
    check(opa, authorizer, SCOPES, package, rule)


# -- where the call is ---------------------------------------------------------------------

PLACES = """# METADATA
# title: pkg
package t

# METADATA
# title: first
m contains rego.metadata.rule().title if true

# METADATA
# title: second
m contains [rego.metadata.rule(), rego.metadata.chain()] if true

# METADATA
# title: elsy
e := 1 if false else := [rego.metadata.rule(), rego.metadata.chain()]

# METADATA
# title: main body
e2 := [rego.metadata.rule(), 1] if true else := 2

# METADATA
# title: first definition
b := 1 if false

# METADATA
# title: second definition
b := [rego.metadata.rule(), rego.metadata.chain()] if true

c := 1 if false

c := [rego.metadata.rule(), rego.metadata.chain()] if true

# METADATA
# title: fn
f(x) := [x, rego.metadata.rule(), rego.metadata.chain()]

fv := f(1)

a.b[1] := rego.metadata.chain()

g.h[k] := rego.metadata.chain() if k := "key"

# METADATA
# title: in a comprehension
comp := [y | some y in [rego.metadata.rule().title]]
"""


@pytest.mark.parametrize("rule", ["m", "e", "e2", "b", "c", "fv", "comp"])
def test_calls_in_functions_else_and_definitions_match_opa(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], rule: str
) -> None:
    check(opa, authorizer, {"t.rego": PLACES}, "t", rule)


@pytest.mark.parametrize("rule", ["a", "g"])
def test_ref_heads_give_their_ground_prefix_as_path(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], rule: str
) -> None:
    """On the interpreter only: regorus's RVM cannot compile `a.b[1] := ...`, and gives
    `g.h[k] := ...` the wrong shape (its bug, not the call's)."""
    check(opa, authorizer, {"t.rego": PLACES}, "t", rule, evaluators=("interpreter",))


def test_a_rule_without_blocks_gets_an_empty_object(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    files = {"t.rego": "package t\n\nr := rego.metadata.rule()\n"}
    assert opa_eval(opa, files, "data.t.r") == {}
    check(opa, authorizer, files, "t", "r")


# -- every field's normalisation --------------------------------------------------------

FIELDS = [
    "title: 5",
    "title: 0x10",
    "title: true",
    "title: null",
    'description: "  spaced  "',
    "organizations: [1, true, x]",
    "organizations: []",
    "organizations: [~, a]",
    "related_resources: ['https://x.com/a b?q=1', 'mailto:A@B.com', '//host/p', 'https://Ex.COM:80/']",
    (
        "related_resources:\n- https://example.com/a?b=c#d\n- HTTPS://Example.com\n"
        "- ref: ' https://x.y '\n  description: ' d '\n- relative/path"
    ),
    (
        "authors:\n- Jane Doe <jane@example.com>\n- '  A   B   <a@b>  '\n- <only@email>\n"
        "- Just Name\n- 'A <>'\n- name: ' n '\n- email: e@x\n- {name: N, email: E, other: 1}"
    ),
    (
        "schemas:\n- input: schema.foo\n- data.x.y: schema\n"
        "- input.a: {type: object, properties: {k: {type: string}}}"
    ),
    'schemas:\n- data.x["y z"][1]: schema.a.b',
    "custom:\n  severity: high\n  n: 1.5\n  i: 3\n  list: [1, a, null, true]\n  nested: {a: {b: c}}\n  1: numeric key",
    "custom: {}",
    "custom: {big: 12345678901234567890, h: 0x1F, f: 1.0, q: '2020-01-01', anchor: &x 1, alias: *x}",
    "title: |\n  multi\n  line\ndescription: >\n  folded\n  line",
    "title: 1e3\ndescription: !!str 5",
    "entrypoint: true",
    "entrypoint: yes",
    "entrypoint: false\ntitle: t",
    "unknown_field: ignored\ntitle: t",
    "scope: rule\ntitle: explicit",
    "scope: document\ntitle: as document",
]


@pytest.mark.parametrize("yaml", FIELDS)
def test_each_field_is_normalised_as_opa_does(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], yaml: str
) -> None:
    block = "".join(f"# {line}\n" for line in yaml.split("\n"))
    policy = f"package t\n\n# METADATA\n{block}r := [rego.metadata.rule(), rego.metadata.chain()]\n"
    check(opa, authorizer, {"t.rego": policy}, "t", "r")


def test_block_shapes_match_opa(opa: Any, authorizer: Callable[..., regoguard.Authorizer]) -> None:
    """A block starts at a `METADATA` comment in column 1 and ends at the first comment not in
    column 1 or not on the next row; `#` inside strings is not a comment."""
    policy = """package t

s := "# METADATA"

# METADATA
# title: t1
 # title: indented, not part of the block
r := [rego.metadata.rule(), `# METADATA`]

x := 1 # METADATA
# title: trailing start, not a block
q := rego.metadata.rule()

  # METADATA
# title: indented start, not a block either
q2 := rego.metadata.rule()

#METADATA
#title: no spaces
q3 := rego.metadata.rule()
"""
    check(opa, authorizer, {"t.rego": policy}, "t", "r")
    check(opa, authorizer, {"t.rego": policy}, "t", "q")
    check(opa, authorizer, {"t.rego": policy}, "t", "q2")
    check(opa, authorizer, {"t.rego": policy}, "t", "q3")


# -- what OPA refuses ----------------------------------------------------------------------

# OPA reads the blocks (and refuses bad ones) only when some module calls rego.metadata.*.
CALL = "package call\n\nx := rego.metadata.rule()\n"

REFUSED = [
    ("t.rego", "package t\n\n# METADATA\n# title: [a]\nr := rego.metadata.rule()\n", 4),
    ("t.rego", "package t\n\n# METADATA\n# title: a\n# title: b\nr := 1\n", 0),
    ("t.rego", "package t\n\n# METADATA\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# organizations: x\nr := 1\n", 4),
    ("t.rego", "package t\n\n# METADATA\n# custom: [1]\nr := 1\n", 4),
    ("t.rego", "package t\n\n# METADATA\n# custom: {a: {1: b}}\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# just a string\nr := 1\n", 4),
    ("t.rego", "package t\n\n# METADATA\n# - a\nr := 1\n", 4),
    ("t.rego", "package t\n\n# METADATA\n# title: 'x'\n#   bad: indent: :\nr := 1\n", 0),
    ("t.rego", 'package t\n\n# METADATA\n# entrypoint: "true"\nr := 1\n', 4),
    ("t.rego", 'package t\n\n# METADATA\n# related_resources: [""]\nr := 1\n', 3),
    ("t.rego", "package t\n\n# METADATA\n# related_resources: [{description: d}]\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# related_resources: [1]\nr := 1\n", 3),
    ("t.rego", 'package t\n\n# METADATA\n# related_resources: ["::"]\nr := 1\n', 3),
    ("t.rego", 'package t\n\n# METADATA\n# related_resources: ["http://a b"]\nr := 1\n', 3),
    ("t.rego", 'package t\n\n# METADATA\n# authors: [""]\nr := 1\n', 3),
    ("t.rego", "package t\n\n# METADATA\n# authors: [1]\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# authors: [{name: 1}]\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# schemas: [{input: bad}]\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# schemas: [{'1x': schema}]\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# schemas: [{input: 1}]\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# scope: bogus\nr := 1\n", 3),
    ("t.rego", "package t\n\n# METADATA\n# scope: package\nr := 1\n", 3),
    ("t.rego", "# METADATA\n# scope: rule\npackage t\n\nr := 1\n", 1),
    ("t.rego", "# METADATA\n# entrypoint: true\n# scope: subpackages\npackage t\n\nr := 1\n", 1),
    ("t.rego", "package t\n\n# METADATA\n# title: import\nimport data.x\n\nr := 1\n", 3),
    ("t.rego", "package t\n\nr := 1\n\n# METADATA\n# title: nothing after\n", 5),
    (
        "t.rego",
        "package t\n\n# METADATA\n# scope: document\nr := 1\n\n# METADATA\n# scope: document\nr := 2 if false\n",
        7,
    ),
]


@pytest.mark.parametrize(("name", "policy", "line"), REFUSED)
@pytest.mark.parametrize("evaluator", ["auto", "rvm", "interpreter"])
def test_a_block_opa_refuses_is_a_policy_error_with_its_location(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    name: str,
    policy: str,
    line: int,
    evaluator: str,
) -> None:
    """`line` is OPA's (0: OPA names a line of the block we do not reproduce exactly)."""
    from opa_bindings.engine import OpaError  # type: ignore[import-not-found]

    files = {name: policy, "call.rego": CALL}
    with pytest.raises(OpaError, match=r"rego_(parse|type)_error") as o:
        opa_eval(opa, files, "data.t.r")
    if line:
        assert f"{name}:{line}:" in str(o.value), str(o.value)
    with pytest.raises(regoguard.PolicyError) as e:
        authorizer(files, entrypoint="data.t.r", evaluator=evaluator)
    text = str(e.value)
    if line:
        assert re.search(rf"{re.escape(name)}:{line}:\d+", text), text
    else:
        assert re.search(rf"{re.escape(name)}:\d+:\d+", text), text


REDECLARED = [
    {
        "p1.rego": "# METADATA\n# title: one\npackage t\n\nr := 1\n",
        "p2.rego": "# METADATA\n# title: two\npackage t\n",
    },
    {
        "p1.rego": "# METADATA\n# scope: subpackages\npackage t\n\nr := 1\n",
        "p2.rego": "# METADATA\n# scope: subpackages\npackage t\n",
    },
    {
        "p1.rego": "package t\n\n# METADATA\n# scope: document\nr := 1\n",
        "p2.rego": "package t\n\n# METADATA\n# scope: document\nr := 2 if false\n",
    },
]


@pytest.mark.parametrize("files", REDECLARED)
def test_a_second_block_for_one_path_is_refused_in_any_file(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer], files: dict[str, str]
) -> None:
    from opa_bindings.engine import OpaError

    files = {**files, "call.rego": CALL}
    with pytest.raises(OpaError, match=r"annotation redeclared: p1\.rego:\d+") as o:
        opa_eval(opa, files, "data.t.r")
    where = re.search(
        r"(p2\.rego:\d+): rego_type_error: (\w+ annotation redeclared: )p1\.rego:(\d+)",
        str(o.value),
    )
    assert where, str(o.value)
    with pytest.raises(regoguard.PolicyError) as e:
        authorizer(files, entrypoint="data.t.r")
    text = str(e.value)
    assert f"{where.group(1)}:" in text, text
    assert re.search(rf"{where.group(2)}\S*p1\.rego:{where.group(3)}", text), text


def test_blocks_are_read_only_when_some_module_calls_rego_metadata(
    opa: Any, authorizer: Callable[..., regoguard.Authorizer]
) -> None:
    """As OPA's compiler: without a call (a string or a comment naming one does not count),
    no block is read, so a bad one is not an error; with a call in any file, it is."""
    bad = '# METADATA\n# title: [a]\npackage t\n\nr := "rego.metadata.rule()" # rego.metadata.chain()\n'
    assert opa_eval(opa, {"t.rego": bad}, "data.t.r") == "rego.metadata.rule()"
    for evaluator in EVALUATORS:  # builds: no PolicyError
        authorizer({"t.rego": bad}, entrypoint="data.t.r", evaluator=evaluator)
    with pytest.raises(regoguard.PolicyError, match="t.rego:2"):
        authorizer({"t.rego": bad, "call.rego": CALL}, entrypoint="data.t.r")
