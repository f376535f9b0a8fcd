"""``python -m regoguard``: Rego unit tests, queries and "would this be allowed" on the engine
that decides in production.

    python -m regoguard test PATH... [--data F] [--run REGEX] [--coverage] [--format json] [-v]
    python -m regoguard eval -d PATH [-d PATH...] [-i input.json] QUERY
    python -m regoguard check -d PATH [-e ENTRYPOINT] (-i input.json | --method M --path P ...)

Exit codes: 0 success (every test passed; the query was defined; the request was allowed),
1 the negative answer (a test failed or errored; the query was undefined; the request was
denied), 2 a usage or loading error (bad path, policy or JSON, unknown query or entrypoint),
with the cause on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from regoguard._input import build_input
from regoguard._regoguard import Authorizer, RegoguardError, _Workspace

_DATA_EXTENSIONS = (".json", ".yaml", ".yml")


class _Fail(Exception):
    """A usage or loading error: printed as ``regoguard: error: ...``, exit 2."""


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Runs the command line; returns the exit code (``python -m regoguard`` exits with it)."""
    stdout = out if out is not None else sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run_command(args, stdout)
        return code
    except _Fail as exc:
        print(f"regoguard: error: {exc}", file=sys.stderr)
        return 2
    except RegoguardError as exc:
        print(f"regoguard: error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m regoguard",
        description="Rego tooling on regoguard's engine (the one that decides in production).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{test,eval,check}")

    t = sub.add_parser("test", help="run every test_* rule, like `opa test`")
    t.add_argument(
        "paths", nargs="+", metavar="PATH", help=".rego files or folders (and data files)"
    )
    t.add_argument(
        "--data", action="append", default=[], metavar="F", help="a .json/.yaml base document"
    )
    t.add_argument(
        "--run", "-r", metavar="REGEX", help="only tests whose name (data.pkg.test_x) matches"
    )
    t.add_argument("--coverage", action="store_true", help="report per-file line coverage")
    t.add_argument("--format", choices=("pretty", "json"), default="pretty")
    t.add_argument(
        "-v", "--verbose", action="store_true", help="every test, failing expressions, prints"
    )
    t.add_argument("--rego-v0", action="store_true", help="parse the policies as Rego v0")
    t.set_defaults(run_command=_test)

    e = _data_parser(sub, "eval", "print the JSON value of a query, like `opa eval`")
    e.add_argument("-i", "--input", metavar="FILE", help="the input document (JSON; - for stdin)")
    e.add_argument("--rego-v0", action="store_true")
    e.add_argument("query", metavar="QUERY")
    e.set_defaults(run_command=_eval)

    c = _data_parser(sub, "check", "would this request be allowed, and why")
    c.add_argument("-e", "--entrypoint", default="data.authz.allow")
    c.add_argument(
        "-i", "--input", metavar="FILE", help="the whole input document (JSON; - for stdin)"
    )
    c.add_argument("--method", help="build the input as the middleware does: the HTTP method")
    c.add_argument("--path", help="the request path, with ?query if any")
    c.add_argument("--user", metavar="JSON", help="the user (what identity= returns), as JSON")
    c.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a header the policy sees (include_headers)",
    )
    c.add_argument("--format", choices=("pretty", "json"), default="pretty")
    c.add_argument("--rego-v0", action="store_true")
    c.set_defaults(run_command=_check)
    return parser


def _data_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse.ArgumentParser:
    """A subcommand that loads policies and documents from repeatable ``-d/--data`` paths."""
    p = sub.add_parser(name, help=help)
    p.add_argument(
        "-d",
        "--data",
        action="append",
        default=[],
        required=True,
        metavar="PATH",
        help=".rego files or folders, or .json/.yaml documents (repeatable)",
    )
    return p


def _split_paths(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    policies: list[str] = []
    data: list[str] = []
    for p in paths:
        if not os.path.exists(p):
            raise _Fail(f"{p}: no such file or directory")
        (data if p.endswith(_DATA_EXTENSIONS) and os.path.isfile(p) else policies).append(p)
    if not policies:
        raise _Fail("no policy given: name at least one .rego file or folder")
    return policies, data


def _read_json(path: str) -> Any:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise _Fail(f"{path}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Fail(f"{path}: not JSON: {exc}") from exc


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _duration(ns: int) -> str:
    if ns >= 1_000_000:
        return f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e3:.0f}µs"


def _test(args: argparse.Namespace, out: TextIO) -> int:
    policies, data = _split_paths(args.paths)
    for f in args.data:
        if not os.path.isfile(f):
            raise _Fail(f"{f}: no such file")
    ws = _Workspace(policies, data_files=data + list(args.data), rego_v0=args.rego_v0)
    cases = ws.tests()
    if args.run:
        try:
            pattern = re.compile(args.run)
        except re.error as exc:
            raise _Fail(f"--run {args.run!r} is not a regular expression: {exc}") from exc
        cases = [c for c in cases if pattern.search(c["name"])]
    if not cases:
        raise _Fail("no test_* rules found" + (f" matching {args.run!r}" if args.run else ""))
    results, coverage = ws.run_tests(
        [c["name"] for c in cases],
        coverage=args.coverage,
        explain=args.verbose or args.format == "json",
    )
    counts = {
        k: sum(1 for r in results if r["outcome"] == k) for k in ("pass", "fail", "error", "skip")
    }
    if args.format == "json":
        report: dict[str, Any] = {"tests": results, "summary": dict(counts, total=len(results))}
        if coverage is not None:
            report["coverage"] = coverage
        print(_json(report), file=out)
    else:
        _print_tests(results, counts, coverage, verbose=args.verbose, out=out)
    return 1 if counts["fail"] or counts["error"] else 0


def _print_tests(
    results: list[dict[str, Any]],
    counts: dict[str, int],
    coverage: list[dict[str, Any]] | None,
    *,
    verbose: bool,
    out: TextIO,
) -> None:
    shown_file = None
    for r in results:
        if not verbose and r["outcome"] in ("pass", "skip"):
            continue
        if r["file"] != shown_file:
            shown_file = r["file"]
            print(f"{shown_file}:", file=out)
        label = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skip": "SKIPPED"}[r["outcome"]]
        print(f"{r['name']}: {label} ({_duration(r['duration_ns'])})", file=out)
        if r["outcome"] == "fail":
            got = "undefined" if r.get("undefined") else json.dumps(r.get("value"))
            where = r.get("failed_at")
            if where:
                print(
                    f"  {r['file']}:{where[0]}: {where[1]}  (the last expression evaluated)",
                    file=out,
                )
            print(f"  {r['file']}:{r['line']}: {r['rule']} was {got}", file=out)
        elif r["outcome"] == "error":
            print(f"  {r['error']}", file=out)
        if verbose:
            for line in r["prints"]:
                print(f"  print: {line}", file=out)
    print("-" * 80, file=out)
    total = len(results)
    for key, label in (("pass", "PASS"), ("fail", "FAIL"), ("error", "ERROR"), ("skip", "SKIPPED")):
        if counts[key]:
            print(f"{label}: {counts[key]}/{total}", file=out)
    if coverage is not None:
        print("-" * 80, file=out)
        print("COVERAGE:", file=out)
        for f in coverage:
            lines = len(f["covered"]) + len(f["not_covered"])
            line = f"{f['file']}: {f['percent']:.2f}% ({len(f['covered'])}/{lines} lines)"
            if f["not_covered"]:
                line += " not covered: " + ", ".join(str(n) for n in f["not_covered"])
            print(line, file=out)


def _workspace(paths: Sequence[str], rego_v0: bool) -> tuple[_Workspace, list[str], list[str]]:
    policies, data = _split_paths(paths)
    return _Workspace(policies, data_files=data, rego_v0=rego_v0), policies, data


def _eval(args: argparse.Namespace, out: TextIO) -> int:
    ws, _, _ = _workspace(args.data, args.rego_v0)
    has_input = args.input is not None
    value = _read_json(args.input) if has_input else None
    results = ws.eval_query(args.query, value, has_input=has_input)
    if not results:
        print("undefined", file=sys.stderr)
        return 1
    if len(results) == 1 and not results[0][1]:
        values = results[0][0]
        print(_json(values[0] if len(values) == 1 else values), file=out)
    elif all(bindings for _, bindings in results):
        print(_json([bindings for _, bindings in results]), file=out)
    else:
        print(_json([{"expressions": v, "bindings": b} for v, b in results]), file=out)
    return 0


def _request_input(args: argparse.Namespace) -> dict[str, Any]:
    if args.method is None or args.path is None:
        raise _Fail("give -i input.json, or --method and --path to build the input")
    path, _, query = args.path.partition("?")
    if not path.startswith("/"):
        raise _Fail(f"--path must start with '/', got {args.path!r}")
    headers, names = [], []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise _Fail(f"--header must be NAME:VALUE, got {h!r}")
        headers.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
        names.append(name.strip())
    user = None
    if args.user is not None:
        try:
            user = json.loads(args.user)
        except ValueError as exc:
            raise _Fail(f"--user is not JSON: {exc}") from exc
    scope = {
        "type": "http",
        "method": args.method.upper(),
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
    }
    return build_input(scope, include_headers=names, identity=lambda _scope: user)


def _check(args: argparse.Namespace, out: TextIO) -> int:
    ws, policies, data = _workspace(args.data, args.rego_v0)
    doc = _read_json(args.input) if args.input is not None else _request_input(args)
    if not isinstance(doc, dict):
        raise _Fail("the input must be a JSON object")
    if len(data) > 1:
        raise _Fail("check takes at most one data document (merge them first)")
    authz = Authorizer(
        policies,
        entrypoint=args.entrypoint,
        data=data[0] if data else None,
        cache=None,
        rego_v0=args.rego_v0,
    )
    decision = authz.check(doc)
    package = _package_of(ws, args.entrypoint)
    rules: dict[str, Any] = {}
    rules_error = None
    try:
        found = ws.eval_query(package, doc, has_input=True)
        if found and isinstance(found[0][0][0], dict):
            rules = found[0][0][0]
    except RegoguardError as exc:
        rules_error = str(exc)
    true_rules = sorted(k for k, v in rules.items() if v is True)
    report = {
        "allow": decision.allow,
        "reason": decision.reason,
        "status": decision.status,
        "headers": decision.headers,
        "result": decision.result,
        "revision": decision.revision,
        "input": doc,
        "package": package,
        "true_rules": true_rules,
        "rules": rules,
    }
    if args.format == "json":
        print(_json(report), file=out)
    else:
        verdict = "ALLOWED" if decision.allow else "DENIED"
        print(f"{verdict} by {args.entrypoint} (revision {decision.revision})", file=out)
        if decision.reason is not None:
            print(f"reason: {decision.reason}", file=out)
        if decision.status is not None:
            print(f"status: {decision.status}", file=out)
        print(f"result: {json.dumps(decision.result, sort_keys=True)}", file=out)
        print(f"rules true in {package}: {', '.join(true_rules) or '(none)'}", file=out)
        others = {k: v for k, v in rules.items() if v is not True and v is not False}
        for k in sorted(others):
            print(f"  {k} = {json.dumps(others[k], sort_keys=True)[:200]}", file=out)
        if rules_error:
            print(f"(the package document failed to evaluate: {rules_error})", file=out)
        print(f"input: {json.dumps(doc, sort_keys=True)}", file=out)
    return 0 if decision.allow else 1


def _package_of(ws: _Workspace, entrypoint: str) -> str:
    """The package an entrypoint's rules live in (the entrypoint itself when it names one)."""
    packages = {p if p.startswith("data.") else f"data.{p}" for p in ws.packages()}
    if entrypoint in packages:
        return entrypoint
    return entrypoint.rpartition(".")[0]
