"""Regenerates README.md's list of builtins from ``regoguard.builtins()``.

Run after adding a builtin: ``.venv/bin/python scripts/builtins_readme.py``.
tests/test_builtins.py fails while the README's list differs from the code's.
"""

from __future__ import annotations

import re
from itertools import groupby
from pathlib import Path

import regoguard

README = Path(__file__).resolve().parent.parent / "README.md"


def block(names: list[str]) -> str:
    lines = []
    for ns, group in groupby(names, key=lambda n: n.split(".")[0] if "." in n else ""):
        label = f"{ns}.*" if ns else "top level"
        lines.append(f"- {label}: " + ", ".join(f"`{n}`" for n in group))
    return "\n".join(lines) + "\n"


def main() -> None:
    names = regoguard.builtins()
    # Top-level names first, then each namespace.
    ordered = sorted(names, key=lambda n: ("." in n, n.split(".")[0] if "." in n else "", n))
    text = README.read_text()
    new, count = re.subn(
        r"(<!-- builtins:begin -->\n).*?(<!-- builtins:end -->)",
        lambda m: m.group(1) + block(ordered) + m.group(2),
        text,
        flags=re.DOTALL,
    )
    if count != 1:
        raise SystemExit("README.md has no <!-- builtins:begin --> ... <!-- builtins:end --> block")
    README.write_text(new)
    print(f"README.md: {len(names)} builtins")


if __name__ == "__main__":
    main()
