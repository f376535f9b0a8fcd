#!/usr/bin/env python3
"""The Rust module graphs from their `crate::` and `super::` paths, their cycles, and whether
the extension imports its own Python package (ARCHITECTURE.md, "Module map").

    python3 scripts/module_graph.py          # text: one `module -> deps` line per module
    python3 scripts/module_graph.py --dot    # Graphviz DOT

Two graphs: the core crate's (crates/regoguard-core/src: `builtins/jwt.rs` is `builtins`, its
family files fold into it; `l2/pubsub.rs` stays `l2::pubsub`), then the extension's (src:
`bindings/l2.rs` is `bindings::l2`), after a `# src` line. Test modules (`#[cfg(test)]` to the
end of the file, and `tests.rs` files) are left out: tests may use anything. A parent's uses of
its own children are not edges (a child is part of its parent).

The extension must never import a module of its package (`py.import("regoguard...")`): the
package hands it the Python helpers it calls back (`src/bindings/hooks.rs`), so the import
only runs Python → native. Exit status 1 when there is a cycle or such an import.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "crates" / "regoguard-core" / "src"
EXT = ROOT / "src"
KEEP_NESTED = {"l2", "bundle"}  # the core's submodules shown on their own
EXT_NESTED = {"bindings"}  # every binding is its own module

# `py.import("regoguard…")`, `PyModule::import(py, "regoguard…")`, `import_module("regoguard…")`.
PACKAGE_IMPORT = re.compile(r"""import\w*"?\s*[(,]\s*\(?\s*(?:\w+\s*,\s*)?"regoguard\b""")


def module_of(path: Path, src: Path = SRC, nested: set[str] = KEEP_NESTED) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in {"mod", "lib"}:
        parts = parts[:-1] or ["lib"]
    if len(parts) > 1 and parts[0] not in nested:
        parts = parts[:1]
    return "::".join(parts)


def uses(text: str) -> list[tuple[str, str]]:
    """`(crate|super, a::b)` for every `crate::a::b…` and `super::a…` path in `text`, the items
    of a grouped `use super::{a, b::c}` each on its own."""
    out = []
    for m in re.finditer(r"\b(crate|super)::(?:(\w+(?:::\w+)?)|\{)", text):
        if m.group(2) is not None:
            out.append((m.group(1), m.group(2)))
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[m.end() : i - 1]
        top = re.sub(r"\{[^{}]*\}", "", inner)  # `a::{x, y}` names `a`
        for item in top.split(","):
            path = re.match(r"\s*(\w+(?:::\w+)?)", item)
            if path and path.group(1) != "self":
                out.append((m.group(1), path.group(1)))
    return out


def graph(src: Path = SRC, nested: set[str] = KEEP_NESTED) -> dict[str, set[str]]:
    modules = {module_of(p, src, nested) for p in src.rglob("*.rs")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for p in src.rglob("*.rs"):
        if p.name == "tests.rs":
            continue
        me = module_of(p, src, nested)
        text = p.read_text()
        cut = text.find("#[cfg(test)]\nmod tests")
        if cut >= 0:
            text = text[:cut]
        text = re.sub(r"//[^\n]*", "", text)  # comments and doc links are not dependencies
        for kind, path in uses(text):
            first, _, second = path.partition("::")
            if kind == "super":
                if "::" not in me:
                    continue
                parent = me.rsplit("::", 1)[0]
                sibling = f"{parent}::{first}"
                target = sibling if sibling in modules else parent
            else:
                child = f"{first}::{second}"
                target = child if child in modules else first
            if target in modules and target != me and not me.startswith(target + "::"):
                edges[me].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def package_imports(src: Path = EXT) -> list[str]:
    """`path:line: text` of every place under `src` that imports a module of the package."""
    out = []
    for p in sorted(src.rglob("*.rs")):
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if PACKAGE_IMPORT.search(line):
                out.append(f"{p.relative_to(src.parent)}:{n}: {line.strip()}")
    return out


def main() -> int:
    graphs = {"regoguard_core": graph(), "regoguard_ext": graph(EXT, EXT_NESTED)}
    for name, edges in graphs.items():
        if "--dot" in sys.argv:
            print(f"digraph {name} {{")
            for m in sorted(edges):
                for d in sorted(edges[m]):
                    print(f'  "{m}" -> "{d}";')
            print("}")
        else:
            if name == "regoguard_ext":
                print("# src")
            for m in sorted(edges):
                print(f"{m} -> {', '.join(sorted(edges[m])) or '(none)'}")
    found = [c for edges in graphs.values() for c in cycles(edges)]
    for c in found:
        print(f"CYCLE: {' <-> '.join(c)}", file=sys.stderr)
    imports = package_imports()
    for i in imports:
        print(f"NATIVE MODULE IMPORTS ITS PACKAGE: {i}", file=sys.stderr)
    return 1 if found or imports else 0


if __name__ == "__main__":
    sys.exit(main())
