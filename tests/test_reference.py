"""REFERENCE.md is generated from the docstrings: it must be current, and it must cover every
public Python name of the package (the native ones are in _regoguard.pyi)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import regoguard
from regoguard import _regoguard

ROOT = Path(__file__).parent.parent


def test_reference_is_current() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/reference.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_every_public_name_is_in_one_of_the_references() -> None:
    reference = (ROOT / "REFERENCE.md").read_text()
    stub = (ROOT / "python" / "regoguard" / "_regoguard.pyi").read_text()
    for name in regoguard.__all__:
        if name.startswith("__"):
            continue
        native = hasattr(_regoguard, name)
        in_stub = any(f in stub for f in (f"class {name}", f"def {name}(", f"{name}:"))
        documented = in_stub if native else f"`regoguard.{name}`" in reference
        assert documented, name
    for hook in ("input_builder", "on_deny", "on_error", "identity", "shadow", "exclude_paths"):
        assert f"{hook}:" in reference, hook
