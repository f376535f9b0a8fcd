"""The OPA Go engine as the oracle for expected values and differential tests.

``scripts/test.sh`` unzips PyPI's ``opa-golib-python-bindings`` (OPA's Go engine as a c-shared
library behind ctypes) into ``.venv`` and names the folder in ``REGOGUARD_OPA_ORACLE``. Tests
take the ``opa`` fixture (``tests/conftest.py``), which skips with the reason when the oracle
could not be fetched.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.4.4"


def oracle_dir() -> Path | None:
    given = os.environ.get("REGOGUARD_OPA_ORACLE")
    candidates = [Path(given)] if given else []
    candidates.append(ROOT / ".venv" / f"opa-oracle-{VERSION}")
    for c in candidates:
        if (c / "opa_bindings" / "engine.py").is_file():
            return c
    return None


class Undefined:
    """What OPA answers for an undefined document (distinct from ``None``, JSON null)."""

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined()


class Opa:
    """One OPA engine over policies and data; ``eval`` answers like ``Authorizer.check``'s result.

    ``eval(path, input)`` returns the JSON value of ``path`` (``data.pkg.rule``), ``UNDEFINED``
    when OPA finds it undefined, or raises ``OpaError`` (OPA's error code and message).
    """

    def __init__(self, policies: dict[str, str], data: dict[str, Any] | None = None) -> None:
        from opa_bindings import OpaEngine

        self._engine = OpaEngine()
        for name, text in policies.items():
            self._engine.add_policy(name, text)
        if data:
            self._engine.add_data(data)

    def eval(self, path: str, input: Any = None) -> Any:
        from opa_bindings.engine import OpaUndefinedError

        doc = path.removeprefix("data").removeprefix(".")
        try:
            return self._engine.eval_document(doc, input)
        except OpaUndefinedError:
            return UNDEFINED

    def close(self) -> None:
        self._engine.close()


def load() -> type[Opa] | str:
    """The ``Opa`` class, or why the oracle is unavailable."""
    d = oracle_dir()
    if d is None:
        return (
            "the OPA oracle (opa-golib-python-bindings) is not installed: run scripts/test.sh, "
            "which downloads it (the package registry could not be reached?)"
        )
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    try:
        import opa_bindings  # noqa: F401
    except (ImportError, OSError) as e:  # a broken download
        return f"the OPA oracle at {d} does not load: {e}"
    return Opa


def canonical(value: Any) -> str:
    """A comparison form: JSON with sorted keys (sets come back as sorted arrays from both)."""
    return json.dumps(value, sort_keys=True)
