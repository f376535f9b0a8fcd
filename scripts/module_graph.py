#!/usr/bin/env python3
"""The core crate's module graph from its `crate::` paths, and its cycles (ARCHITECTURE.md,
"Module map").

    python3 scripts/module_graph.py          # text: one `module -> deps` line per module
    python3 scripts/module_graph.py --dot    # Graphviz DOT

A module is a file under crates/regoguard-core/src (`builtins/jwt.rs` is `builtins`, its
family files fold into it; `l2/pubsub.rs` stays `l2::pubsub`). Test modules (`#[cfg(test)]`
to the end of the file, and `tests.rs` files) are left out: tests may use anything. Exit status 1 when there is a
cycle.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "crates" / "regoguard-core" / "src"
KEEP_NESTED = {"l2", "bundle"}  # submodules shown on their own


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in {"mod", "lib"}:
        parts = parts[:-1] or ["lib"]
    if len(parts) > 1 and parts[0] not in KEEP_NESTED:
        parts = parts[:1]
    return "::".join(parts)


def graph() -> dict[str, set[str]]:
    modules = {module_of(p) for p in SRC.rglob("*.rs")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for p in SRC.rglob("*.rs"):
        if p.name == "tests.rs":
            continue
        me = module_of(p)
        text = p.read_text()
        cut = text.find("#[cfg(test)]\nmod tests")
        if cut >= 0:
            text = text[:cut]
        text = re.sub(r"//[^\n]*", "", text)  # comments and doc links are not dependencies
        for m in re.finditer(r"\b(?:crate|super)::((?:\w+)(?:::\w+)?)", text):
            if m.group(0).startswith("super::"):
                if "::" not in me:
                    continue
                target = me.rsplit("::", 1)[0]
            else:
                first, _, second = m.group(1).partition("::")
                nested = f"{first}::{second}"
                target = nested if nested in modules else first
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


def main() -> int:
    edges = graph()
    if "--dot" in sys.argv:
        print("digraph regoguard_core {")
        for m in sorted(edges):
            for d in sorted(edges[m]):
                print(f'  "{m}" -> "{d}";')
        print("}")
    else:
        for m in sorted(edges):
            print(f"{m} -> {', '.join(sorted(edges[m])) or '(none)'}")
    found = cycles(edges)
    for c in found:
        print(f"CYCLE: {' <-> '.join(c)}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
