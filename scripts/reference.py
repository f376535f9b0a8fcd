"""Writes REFERENCE.md: the reference of regoguard's Python API (the middleware, the FastAPI
dependency, the decorator, shadow mode, presets, metrics), from the docstrings and
signatures themselves, so it cannot drift from the code. The native classes (Authorizer,
Decision, the configs, the errors) are documented in python/regoguard/_regoguard.pyi.

    .venv/bin/python scripts/reference.py          # rewrite REFERENCE.md
    .venv/bin/python scripts/reference.py --check  # exit 1 when REFERENCE.md is stale
"""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path
from typing import Any

import regoguard
from regoguard import _types, metrics, middleware, presets, shadow
from regoguard import dependencies

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "REFERENCE.md"

SECTIONS: list[tuple[str, list[tuple[str, Any]]]] = [
    ("Middleware", [
        ("regoguard.RegoGuardMiddleware", middleware.RegoGuardMiddleware),
        ("regoguard.middleware.OnDeny", None),
        ("regoguard.middleware.OnError", None),
        ("regoguard.middleware.InputBuilder", None),
    ]),
    ("FastAPI dependency", [
        ("regoguard.Authorize", dependencies.Authorize),
        ("regoguard.dependencies.route_template", dependencies.route_template),
    ]),
    ("Decorator", [("regoguard.cached_authorization", regoguard.cached_authorization)]),
    ("The request input", [
        ("regoguard.build_input", regoguard.build_input),
        ("regoguard.default_identity", regoguard.default_identity),
        ("regoguard.TokenError", regoguard.TokenError),
    ]),
    ("Shadow mode", [
        ("regoguard.shadow", shadow),
        ("regoguard.Shadow", shadow.Shadow),
        ("regoguard.OPAServer", shadow.OPAServer),
    ]),
    ("Presets", [
        ("regoguard.presets", presets),
        ("regoguard.presets.fastapi_opa", presets.fastapi_opa),
        ("regoguard.presets.fastapi_opa_input", presets.fastapi_opa_input),
        ("regoguard.presets.fastapi_opa_deny", presets.fastapi_opa_deny),
    ]),
    ("Metrics", [
        ("regoguard.metrics_app", metrics.metrics_app),
        ("regoguard.metrics.MetricsApp", metrics.MetricsApp),
        ("regoguard.RegoguardCollector", metrics.RegoguardCollector),
    ]),
    ("Typed results", [
        ("regoguard._types", _types),
        *[(f"regoguard.{n}", getattr(_types, n)) for n in _types.__all__],
    ]),
]

ALIASES = {
    "regoguard.middleware.OnDeny": (
        "OnDeny = Callable[[Scope, Decision], ASGIApp | None]",
        "The ``on_deny=`` hook: return an ASGI app to answer the denied request (for example a "
        "``JSONResponse``), or ``None`` for the default ``403 {\"detail\": reason}`` (or the "
        "decision's own status and headers).",
    ),
    "regoguard.middleware.OnError": (
        "OnError = Callable[[Scope, BaseException], ASGIApp | None]",
        "The ``on_error=`` hook: return an ASGI app to answer a failed evaluation or identity, "
        "or ``None`` for the default 500 with an error id.",
    ),
    "regoguard.middleware.InputBuilder": (
        "InputBuilder = Callable[[Scope, Any, Any], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]",
        "The ``input_builder=`` hook: ``(scope, user, body) -> input document`` (``body`` is "
        "``None`` unless ``include_body=True``), sync or ``async def``. It replaces the "
        "built-in document (``regoguard.build_input``); every request then builds a dict.",
    ),
}


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj)).replace("'", "")
    except (TypeError, ValueError):
        return "(...)"


def _annotation(t: Any) -> str:
    if isinstance(t, type) and not typing.get_args(t):
        return t.__name__
    return repr(t).replace("typing.", "").replace("regoguard._types.", "")


def _typed_dict(name: str, obj: Any) -> list[str]:
    short = name.rsplit(".", 1)[1]
    lines = [f"### `{name}`", "", "```python", f"class {short}(TypedDict):"]
    lines += [f"    {k}: {_annotation(t)}" for k, t in obj.__annotations__.items()]
    return lines + ["```", "", inspect.getdoc(obj) or "", ""]


def _entry(name: str, obj: Any) -> list[str]:
    if typing.is_typeddict(obj):
        return _typed_dict(name, obj)
    if name in ALIASES:
        code, doc = ALIASES[name]
        return [f"### `{name}`", "", "```python", code, "```", "", doc, ""]
    if inspect.ismodule(obj):
        title = [] if name == "regoguard._types" else [f"### `{name}`", ""]
        return [*title, inspect.getdoc(obj) or "", ""]
    lines = [f"### `{name}`", "", "```python"]
    kind = "class " if inspect.isclass(obj) else "def "
    short = name.rsplit(".", 1)[1]
    lines += [f"{kind}{short}{_signature(obj)}", "```", "", inspect.getdoc(obj) or "", ""]
    if inspect.isclass(obj):
        for attr, member in sorted(vars(obj).items()):
            if attr.startswith("_") or not callable(member) or not member.__doc__:
                continue
            lines += [f"- `{short}.{attr}{_signature(member)}`: "
                      + " ".join((inspect.getdoc(member) or "").split()), ""]
    return lines


def render() -> str:
    lines = [
        "# regoguard Python API reference",
        "",
        "Generated from the docstrings by `scripts/reference.py` (`tests/test_reference.py`",
        "fails when it is stale). The native classes (`Authorizer`, `Decision`, `CacheConfig`,",
        "`RedisConfig`, `DecisionLogConfig`, the exceptions) are documented in",
        "[`python/regoguard/_regoguard.pyi`](python/regoguard/_regoguard.pyi). Import",
        "everything from `regoguard` (or the module named).",
        "",
    ]
    for title, entries in SECTIONS:
        lines += [f"## {title}", ""]
        for name, obj in entries:
            lines += _entry(name, obj)
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print("REFERENCE.md is stale: run scripts/reference.py", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    OUT.write_text(text)
