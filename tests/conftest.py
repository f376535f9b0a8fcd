"""Shared fixtures: policy folders, the decision-case oracle, an authorizer factory."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import regoguard
import yaml

TESTS = Path(__file__).parent
POLICIES = TESTS / "policies"
CASES = TESTS / "cases"
REALISTIC = POLICIES / "good" / "realistic"


def load_file(name: str, path: Path) -> ModuleType:
    """The Python file at ``path`` run as a module ``name`` (scripts and examples are no
    packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def realistic_input(
    user: str = "u17", project: str = "42", method: str = "GET", roles: tuple[str, ...] = ("user",)
) -> dict[str, Any]:
    path = f"/api/v1/projects/{project}"
    return {
        "method": method,
        "path": path,
        "path_segments": path.strip("/").split("/"),
        "user": {"id": user, "roles": list(roles)},
    }


@pytest.fixture
def realistic() -> regoguard.Authorizer:
    return regoguard.Authorizer(REALISTIC, data=REALISTIC / "data.json")


@pytest.fixture
def policy_dir(tmp_path: Path) -> Callable[..., Path]:
    """Writes ``{file name: rego text}`` into a fresh folder and returns it."""

    def write(files: dict[str, str] | str) -> Path:
        if isinstance(files, str):
            files = {"authz.rego": files}
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return tmp_path

    return write


@pytest.fixture
def authorizer(policy_dir: Callable[..., Path]) -> Callable[..., regoguard.Authorizer]:
    """Builds an Authorizer over a policy text (or files), with keyword arguments passed on."""

    def make(files: dict[str, str] | str, **kwargs: Any) -> regoguard.Authorizer:
        return regoguard.Authorizer(policy_dir(files), **kwargs)

    return make


def load_case_files() -> list[tuple[str, dict[str, Any]]]:
    files = sorted(CASES.glob("*.yaml"))
    assert files, f"no case files in {CASES}"
    return [(f.stem, yaml.safe_load(f.read_text())) for f in files]


@pytest.fixture(scope="session")
def opa() -> type[Any]:
    """The OPA Go engine (``tests/opa_oracle.Opa``); skips with the reason when unavailable."""
    from tests import opa_oracle

    loaded = opa_oracle.load()
    if isinstance(loaded, str):
        pytest.skip(loaded)
    return loaded
