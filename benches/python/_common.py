"""Shared pieces of the Python decision benchmarks: fixture, inputs, comparison binding.

Not a test and not part of the package: imported by the decision benches of this folder
(``bench_decisions.py``, ``bench_memory.py``, ``bench_asgi.py``, ``bench_l2.py``, ...). The
statistics, timers, processes and workload every bench, the demo and the tests share are in
``harness.py`` (standard library only, so the tests can import it cheaply).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_POLICY_DIR = REPO / "tests" / "policies" / "good" / "realistic"
ENTRYPOINT = "data.authz.allow"

# The only PyPI distributions that provide a `regorus` module here; Microsoft's own
# `regorus` package is not on PyPI. gordon-to-regorus is the upstream
# microsoft/regorus `bindings/python` crate rebuilt as-is (its CI force-syncs main to
# upstream and only renames the distribution in pyproject.toml).
_BINDING_NOTES = {
    "gordon-to-regorus": "a fork of microsoft/regorus: upstream bindings/python rebuilt under a new name",
    "celine-regorus": "a repackaging of microsoft/regorus release wheels",
}


# --------------------------------------------------------------------------- fixture


@dataclass(frozen=True)
class Fixture:
    policy_dir: Path
    rego_files: tuple[Path, ...]
    data_path: Path
    data: dict[str, Any]


def load_fixture(policy_dir: Path | None = None) -> Fixture:
    """The realistic policy: every ``*.rego`` in the folder (``*_test.rego`` left out) and ``data.json``."""
    d = Path(policy_dir) if policy_dir else DEFAULT_POLICY_DIR
    rego = tuple(sorted(p for p in d.glob("*.rego") if not p.name.endswith("_test.rego")))
    data_path = d / "data.json"
    if not rego or not data_path.is_file():
        sys.exit(
            f"fixture missing: need *.rego and data.json in {d} (use --policy-dir to point elsewhere)"
        )
    with data_path.open() as f:
        data = json.load(f)
    return Fixture(d, rego, data_path, data)


# --------------------------------------------------------------------------- inputs


def make_input(
    method: str, path: str, user_id: str, roles: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """The input document the middleware builds (README, "The request input")."""
    return {
        "method": method,
        "path": path,
        "path_segments": [s for s in path.split("/") if s],
        "user": {"id": user_id, "roles": list(roles)},
    }


def _members(fx: Fixture) -> list[tuple[str, str]]:
    """(project id, member id) pairs from data.projects, so the hit set holds real allows."""
    out = []
    projects = fx.data.get("projects", {})
    items = projects.items() if isinstance(projects, dict) else enumerate(projects)
    for pid, proj in items:
        members = proj.get("members", []) if isinstance(proj, dict) else []
        if members:
            out.append((str(pid), str(members[0])))
    return out


def request_shapes(fx: Fixture) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """16 request shapes (method, path, user id, roles) covering every rule of the policy.

    Used as-is for the L1-hit set; the miss set reuses the shapes with a unique user id.
    """
    pairs = _members(fx)
    if len(pairs) < 4:
        sys.exit(
            "fixture data.json needs at least 4 projects with members (data.projects[id].members)"
        )
    shapes: list[tuple[str, str, str, tuple[str, ...]]] = []
    for pid, uid in pairs[:4]:  # members reading their project: allow
        shapes.append(("GET", f"/api/v1/projects/{pid}", uid, ("user",)))
    for pid, _ in pairs[:4]:  # a non-member reading it: deny
        shapes.append(("GET", f"/api/v1/projects/{pid}", "u-outsider", ("user",)))
    shapes += [
        ("DELETE", f"/api/v1/projects/{pairs[0][0]}", "u-admin", ("user", "admin")),  # admin: allow
        ("POST", "/api/v1/projects", "u-admin", ("admin",)),  # admin: allow
        ("GET", "/health", "u-outsider", ("user",)),  # public: allow
        ("GET", "/public/docs/index.html", "u-outsider", ()),  # public: allow
        ("POST", f"/api/v1/projects/{pairs[1][0]}", pairs[1][1], ("user",)),  # member writes: deny
        ("GET", "/admin/users", "u-outsider", ("user",)),  # deny
        ("GET", "/api/v1/projects/does-not-exist", pairs[2][1], ("user",)),  # unknown project: deny
        ("POST", "/health", "u-outsider", ("user",)),  # public path, wrong method: deny
    ]
    return shapes


def hit_inputs(fx: Fixture) -> list[dict[str, Any]]:
    return [make_input(*s) for s in request_shapes(fx)]


def unique_inputs(shapes, tag: str, start: int, count: int) -> list[dict[str, Any]]:
    """``count`` inputs never seen before (user id ``u-<tag>-<n>``), cycling over the shapes."""
    n = len(shapes)
    out = []
    for i in range(start, start + count):
        m, p, _, r = shapes[i % n]
        out.append(make_input(m, p, f"u-{tag}-{i}", r))
    return out


# --------------------------------------------------------------------------- binding


@dataclass
class Binding:
    module: Any
    dist: str
    version: str
    label: str

    def engine(self, fx: Fixture):
        e = self.module.Engine()
        for p in fx.rego_files:
            e.add_policy_from_file(str(p))
        e.add_data_json(fx.data_path.read_text())
        return e


def load_binding() -> Binding | None:
    """The installed regorus Python binding, labelled with the distribution it came from."""
    try:
        import regorus
    except ImportError:
        return None
    dists = importlib.metadata.packages_distributions().get("regorus", ["unknown"])
    dist = dists[0]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    note = _BINDING_NOTES.get(dist.lower(), "not microsoft's own PyPI package")
    label = f"regorus Python binding (PyPI {dist} {version}, {note})"
    return Binding(regorus, dist, version, label)


def binding_eval(engine) -> Callable[[dict[str, Any]], Any]:
    """What a user of the binding writes per request: set the input, evaluate the rule."""
    set_input = engine.set_input
    eval_rule = engine.eval_rule

    def check(inp):
        set_input(inp)
        return eval_rule(ENTRYPOINT)

    return check


def binding_ttl(engine, cache) -> Callable[[dict[str, Any]], Any]:
    """The binding behind a cachetools cache, keyed the way a typical user would."""
    set_input = engine.set_input
    eval_rule = engine.eval_rule
    dumps = json.dumps

    def check(inp):
        key = dumps(inp, sort_keys=True)
        try:
            return cache[key]
        except KeyError:
            pass
        set_input(inp)
        result = eval_rule(ENTRYPOINT)
        cache[key] = result
        return result

    return check


# --------------------------------------------------------------------------- environment


def git_rev() -> str | None:
    """Short HEAD, with ``+dirty`` when the sources the extension is built from differ from it."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--"]
            + ["src", "python", "Cargo.toml", "Cargo.lock", "pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def extension_info() -> str:
    """Which build of the extension is loaded: its file and modification time."""
    try:
        from regoguard import _regoguard
    except ImportError:
        return "not importable"
    p = Path(_regoguard.__file__)
    mtime = datetime.fromtimestamp(p.stat().st_mtime, UTC)
    shown = p.relative_to(REPO) if p.is_relative_to(REPO) else p
    return f"{shown} built {mtime:%Y-%m-%d %H:%M:%S} UTC"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def regoguard_version(rg) -> str:
    v = getattr(rg, "__version__", None)
    if v:
        return str(v)
    try:
        return importlib.metadata.version("regoguard")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --------------------------------------------------------------------------- memory


_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def trim_heap() -> None:
    """Give freed heap back to the OS (glibc), so RSS reflects what is live."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def numeric_stats(stats: Any) -> dict[str, float]:
    """Flatten a stats dict (nested dicts allowed) to its numeric leaves, dotted keys."""
    out: dict[str, float] = {}

    def walk(prefix, v):
        if isinstance(v, bool):
            return
        if isinstance(v, (int, float)):
            out[prefix] = v
        elif isinstance(v, dict):
            for k, w in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), w)

    walk("", stats)
    return out


def entries_from_stats(stats: Any) -> tuple[str, float] | None:
    """The cache-entry counter in ``Authorizer.stats()``, whatever it is called."""
    flat = numeric_stats(stats)
    for k in (
        "entries",
        "l1_entries",
        "l1.entries",
        "cache_entries",
        "l1_entry_count",
        "entry_count",
    ):
        if k in flat:
            return k, flat[k]
    cands = [k for k in flat if "entr" in k.lower() and "evict" not in k.lower()]
    if cands:
        return cands[0], flat[cands[0]]
    return None


class OtherLoad:
    """CPU used by *other* processes while a measurement ran, in cores (0.0 = a quiet box).

    Busy time of the whole machine from ``/proc/stat`` minus this process's own CPU time (and
    its waited-for children's), over wall time. On the shared 2-core box a build running
    beside the bench shows here as ~1-2 cores: treat such a run as disturbed.
    """

    def __init__(self) -> None:
        self._t0 = self._snap()

    @staticmethod
    def _snap() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy = (user + nice + system + irq + softirq + steal) / hz
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, own

    def cores(self) -> float:
        t1, busy1, own1 = self._snap()
        t0, busy0, own0 = self._t0
        wall = t1 - t0
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall) if wall > 0 else 0.0


def round_done(rnd: int, rounds: int, t_start: float, other_cores: float) -> None:
    """The progress line on stderr after each round of a timing bench."""
    print(
        f"  round {rnd + 1}/{rounds} done ({time.time() - t_start:.0f} s, "
        f"other processes used {other_cores:.2f} cores)",
        file=sys.stderr,
    )


def markdown_list(lines: list[str]) -> str:
    """The report: every line that is not a table row becomes a list item, so it renders as
    Markdown."""
    return "\n".join(ln if not ln or ln[0] in "|-" else "- " + ln for ln in lines)


def bench_arg_parser(doc: str | None, unit: str) -> argparse.ArgumentParser:
    """The options every timing bench shares; ``unit`` names what a batch holds."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="2 short rounds: a smoke run, not a measurement"
    )
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    ap.add_argument(
        "--policy-dir",
        type=Path,
        default=None,
        help=f"folder with *.rego + data.json (default {DEFAULT_POLICY_DIR.relative_to(REPO)})",
    )
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--batches", type=int, help="timed batches per variant and round")
    ap.add_argument("--batch-size", type=int, help=f"{unit} per batch")
    ap.add_argument("--singles", type=int, help=f"{unit} timed one by one, per variant and round")
    ap.add_argument("--warmup", type=int, help="untimed batches per variant before each round")
    ap.add_argument(
        "--max-entries",
        type=int,
        default=10_000,
        help="regoguard CacheConfig.max_entries and TTLCache maxsize (default 10000, the same for both)",
    )
    ap.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    ap.add_argument("--no-binding", action="store_true", help="skip the regorus-binding variants")
    return ap


def apply_mode(
    args: argparse.Namespace, full: dict[str, int], quick: dict[str, int]
) -> argparse.Namespace:
    """Fills the sizes the user did not give from the full or the quick preset."""
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def binding_or_note(skip: bool) -> tuple[Binding | None, str]:
    """The regorus binding (unless ``skip``) and the line that labels it in every report."""
    binding = None if skip else load_binding()
    if binding is not None:
        return binding, binding.label
    if skip:
        return None, "regorus binding variants skipped (--no-binding)"
    return None, (
        "regorus binding variants skipped: no regorus Python binding installs here "
        "(pip install -r benches/python/requirements.txt)"
    )
