"""The native module's hooks (``src/bindings/hooks.rs``): the package hands over the Python
helpers the native code calls back, so the native module never imports its package. Before
``_install`` ran, every native call that needs a hook is a ``RuntimeError``, never a panic."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import regoguard
from regoguard import _decision_log, _identity, _l2, _regoguard

HOOKS: dict[str, Any] = {
    "resolve": _l2.resolve,
    "ready": _l2.ready,
    "running_loop": _l2.running_loop,
    "finish": _l2.finish,
    "register_atexit": _l2.register_atexit,
    "ensure_drain": _decision_log._ensure_drain,
    "token_error": _identity.TokenError,
}

POLICY = 'package authz\n\ndefault allow := false\n\nallow if input.user == "alice"\n'

# Runs with the native module loaded alone: a bare `regoguard` package whose __init__ never ran.
ALONE = """
import asyncio, importlib.util, sys, types

spec = importlib.util.find_spec("regoguard")
package = types.ModuleType("regoguard")
package.__path__ = list(spec.submodule_search_locations)
sys.modules["regoguard"] = package
from regoguard import _regoguard

policies = sys.argv[1]

def refused(what, call):
    try:
        call()
    except RuntimeError as e:
        assert "hooks are installed" in str(e), (what, e)
        print("refused", what)
    else:
        raise AssertionError(what + " ran without hooks")

refused("decision_log", lambda: _regoguard.Authorizer(
    policies, decision_log=_regoguard.DecisionLogConfig()))
plain = _regoguard.Authorizer(policies)
assert not plain.check({"user": "bob"}).allow, "a call needing no hook works"
refused("check_async", lambda: plain.check_async({"user": "alice"}))
identity = _regoguard.JWTIdentity(keys=b"k" * 32, algorithms=["HS256"], required=True)
refused("token_error", lambda: identity({"type": "http", "headers": []}))
refused("register_atexit", lambda: _regoguard.RedisConfig("redis://127.0.0.1:9").stats())

from regoguard import _decision_log, _identity, _l2
hooks = dict(
    resolve=_l2.resolve, ready=_l2.ready, running_loop=_l2.running_loop, finish=_l2.finish,
    register_atexit=_l2.register_atexit, ensure_drain=_decision_log._ensure_drain,
    token_error=_identity.TokenError,
)
_regoguard._install(**hooks)
decision = asyncio.run(plain.check_async({"user": "alice"}))
assert decision.allow
try:
    identity({"type": "http", "headers": []})
except _identity.TokenError as e:
    assert e.reason == "missing"
else:
    raise AssertionError("a missing token was let through")
_regoguard.Authorizer(policies, decision_log=_regoguard.DecisionLogConfig())
print("installed")
"""


def test_before_install_a_hook_is_a_runtime_error(tmp_path: Path) -> None:
    (tmp_path / "authz.rego").write_text(POLICY)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ALONE), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "refused",
        "decision_log",
        "refused",
        "check_async",
        "refused",
        "token_error",
        "refused",
        "register_atexit",
        "installed",
    ]


def test_importing_the_package_installs_them() -> None:
    # The very same objects again: a no-op (what `importlib.reload(regoguard)` does).
    _regoguard._install(**HOOKS)
    assert regoguard.TokenError is _identity.TokenError


def test_other_hooks_are_refused_once_installed() -> None:
    with pytest.raises(RuntimeError, match="installed already"):
        _regoguard._install(**{**HOOKS, "ready": lambda v: v})


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_a_hook_must_be_callable(name: str) -> None:
    with pytest.raises(TypeError, match=f"{name} must be callable"):
        _regoguard._install(**{**HOOKS, name: 42})


def test_every_hook_is_a_keyword_argument() -> None:
    with pytest.raises(TypeError):
        _regoguard._install(*HOOKS.values())
    missing = dict(HOOKS)
    del missing["token_error"]
    with pytest.raises(TypeError, match="token_error"):
        _regoguard._install(**missing)
