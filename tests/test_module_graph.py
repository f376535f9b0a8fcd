"""``scripts/module_graph.py``: the Rust module graphs have no cycles and the native module never
imports its own Python package (ARCHITECTURE.md, "Module map"); the checks catch what they
should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import load_file

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "module_graph.py"


@pytest.fixture(scope="module")
def mg() -> ModuleType:
    return load_file("module_graph", SCRIPT)


def test_the_native_module_never_imports_its_package(mg: ModuleType) -> None:
    assert mg.package_imports() == []


def test_the_core_and_the_extension_have_no_cycles(mg: ModuleType) -> None:
    assert mg.cycles(mg.graph()) == []
    ext = mg.graph(mg.EXT, mg.EXT_NESTED)
    assert mg.cycles(ext) == []
    assert "bindings::hooks" in ext["bindings::authorizer"], "the extension's graph is read"


def test_the_script_passes_and_prints_both_graphs() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "# src" in lines
    assert any(line.startswith("pipeline -> ") for line in lines)
    assert any(line.startswith("bindings::gate -> ") for line in lines)


@pytest.mark.parametrize(
    "line",
    [
        'py.import("regoguard._l2")?',
        'py.import( "regoguard" )?',
        'PyModule::import(py, "regoguard._identity")?',
        'py.import("importlib")?.call_method1("import_module", ("regoguard._l2",))?',
    ],
)
def test_a_package_import_is_found(mg: ModuleType, tmp_path: Path, line: str) -> None:
    (tmp_path / "src" / "bindings").mkdir(parents=True)
    (tmp_path / "src" / "bindings" / "x.rs").write_text(f"fn f() {{\n    {line}\n}}\n")
    assert mg.package_imports(tmp_path / "src") == [f"src/bindings/x.rs:2: {line}"]


def test_other_imports_and_the_class_module_are_not_package_imports(
    mg: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.rs").write_text(
        'py.import("logging")?;\n#[pyclass(module = "regoguard._regoguard")]\n'
        'log.call_method1("getLogger", ("regoguard",));\n'
    )
    assert mg.package_imports(tmp_path / "src") == []


def _crate(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cycle_through_crate_paths_is_found(mg: ModuleType, tmp_path: Path) -> None:
    src = _crate(
        tmp_path,
        {"lib.rs": "mod a; mod b;", "a.rs": "use crate::b::X;", "b.rs": "use crate::a::Y;"},
    )
    assert mg.cycles(mg.graph(src, set())) == [["a", "b"]]


def test_a_cycle_between_siblings_through_super_is_found(mg: ModuleType, tmp_path: Path) -> None:
    # Grouped `use super::{...}` items and plain `super::x::` paths both name the sibling.
    src = _crate(
        tmp_path,
        {
            "lib.rs": "pub mod p;",
            "p.rs": "pub mod a; pub mod b; pub struct Z;",
            "p/a.rs": "use super::{b::{self, X}, Z};",
            "p/b.rs": "fn f() { super::a::g() }",
        },
    )
    edges = mg.graph(src, {"p"})
    assert edges["p::a"] == {"p::b"}, "Z is the parent's: no edge"
    assert mg.cycles(edges) == [["p::a", "p::b"]]


def test_tests_are_left_out(mg: ModuleType, tmp_path: Path) -> None:
    src = _crate(
        tmp_path,
        {
            "a.rs": "use crate::b::X;",
            "b.rs": "pub struct X;\n#[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n",
        },
    )
    assert mg.cycles(mg.graph(src, set())) == []
