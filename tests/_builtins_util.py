"""What the builtin tests (``test_builtins.py``, ``test_builtins_crypto.py``) share: one
expression as a policy, OPA's non-strict answer, regoguard's answer, and the check that the
two agree on both evaluators, with and without the decision cache."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import regoguard

from tests import opa_oracle

EVALUATORS: tuple[Literal["rvm"], Literal["interpreter"]] = ("rvm", "interpreter")


def policy_of(expr: str) -> str:
    """A policy whose ``data.t.r`` allows with ``v`` = the value of ``expr``."""
    return f'package t\n\nr := {{"allow": true, "v": v}} if {{\n\tv := {expr}\n}}\n'


def opa_value(opa: Any, policy: str, path: str, inp: Any) -> Any:
    """OPA's non-strict answer: a builtin error (strict in the oracle) is undefined."""
    from opa_bindings.engine import OpaError  # type: ignore[import-not-found]

    engine = opa({"t.rego": policy})
    try:
        return engine.eval(path, inp)
    except OpaError as e:
        if e.code == "eval_error" and re.search(r"eval_(builtin|type)_error", e.message):
            return opa_oracle.UNDEFINED
        raise
    finally:
        engine.close()


def ours(authz: regoguard.Authorizer, inp: Any) -> Any:
    """regoguard's ``v`` for ``inp`` (``opa_oracle.UNDEFINED`` when the rule is undefined)."""
    d = authz.check(inp if inp is not None else {})
    if d.reason == "undefined":
        return opa_oracle.UNDEFINED
    return d.result["v"]


def same(a: Any, b: Any) -> bool:
    """Equal as OPA compares values (undefined only equals undefined)."""
    if a is opa_oracle.UNDEFINED or b is opa_oracle.UNDEFINED:
        return a is b
    return opa_oracle.canonical(a) == opa_oracle.canonical(b)


def assert_matches_opa(
    opa: Any,
    authorizer: Callable[..., regoguard.Authorizer],
    expr: str,
    inp: Any,
    normalize: Callable[[Any], Any] | None = None,
) -> None:
    """``expr`` on ``inp`` gives OPA's value on the RVM and on the interpreter (each really
    running there), without a cache and with one (asked twice: the second answer comes from
    the cache). ``normalize`` maps both defined answers before they are compared."""

    def norm(v: Any) -> Any:
        return v if normalize is None or v is opa_oracle.UNDEFINED else normalize(v)

    policy = policy_of(expr)
    expected = opa_value(opa, policy, "data.t.r.v", inp)
    for evaluator in EVALUATORS:
        for cache in (None, regoguard.CacheConfig()):
            authz = authorizer(policy, entrypoint="data.t.r", evaluator=evaluator, cache=cache)
            assert authz.stats()["evaluators"]["data.t.r"] == evaluator
            for _ in range(2):  # the second answer comes from the cache when there is one
                got = ours(authz, inp)
                assert same(norm(got), norm(expected)), (
                    f"{evaluator} cache={cache is not None}: {expr} gave {got!r}, OPA {expected!r}"
                )
