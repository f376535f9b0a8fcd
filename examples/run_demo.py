"""The regoguard demo: the example service under uvicorn with a short, bounded, seeded load.

    .venv/bin/python examples/run_demo.py            # ~10 s of load per server, ~30 s in all
    .venv/bin/python examples/run_demo.py --quick    # 300 requests, a few seconds

It starts ``examples/basic_fastapi`` twice under uvicorn on 127.0.0.1 (one worker each, free
ports): once as written and once with ``REGOGUARD_DEMO_BARE=1`` (no ``RegoGuardMiddleware``).
It sends both the same seeded mix of requests from Zipf-distributed users (s = 1.1 over the
2,000 users of data.json) to Zipf-distributed projects, mostly their own, over
``--concurrency`` keep-alive connections, until ``--seconds`` have passed or ``--requests``
were sent (in alternating one-second slices, so the rest of the machine slows both alike).
Then it compares them one request at a time, where the difference is the time the middleware
adds to a request rather than to a queue.

It prints what it did: requests, statuses (allow = 2xx, deny = 401/403), req/s, client-side
p50/p99, the server's cache hit ratio and evaluations (from ``/stats``), and the added
latency. Every server it started is stopped on the way out, also on Ctrl-C and on errors.

Exit status: 0 when all went well; 1 when a request got a 5xx, another unexpected status or a
connection error; 2 when a server did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

# The bench harness (benches/python/harness.py: percentiles, free ports, the Zipf sampler),
# imported from the checkout; it says why it lives there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches" / "python"))
from harness import HOST, free_port, pct, zipf

APP_DIR = Path(__file__).resolve().parent / "basic_fastapi"

# (kind, share of the requests); the kinds are also the rows of the summary.
MIX = [
    ("GET /projects/{id}", 0.55),
    ("GET /projects/{id}/billing  (@cached_authorization)", 0.15),
    ("PUT /projects/{id}  (Authorize: owners)", 0.10),
    ("GET /public/{page}", 0.15),
    ("GET /projects/{id} without a token", 0.05),
]
OWN_PROJECT = 0.95  # how often a user asks about one of their own projects
STRAY = 0.10  # how often a bill or a rename is asked for by someone who may not
PUBLIC_PAGES = ["status", "docs", "pricing"]


class ServerError(Exception):
    """A server did not start."""


# --- the workload -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    kind: int  # index into MIX
    raw: bytes  # the whole HTTP/1.1 request


def workload(count: int, seed: int) -> list[Request]:
    """``count`` requests, byte for byte the same for the same seed."""
    data = json.loads((APP_DIR / "data.json").read_text())
    rng = random.Random(seed)
    # Zipf ranks map to users through a seeded shuffle, so the busiest users are ordinary
    # users, not the admins u1..u5. Projects keep their order: p1 is the biggest and busiest.
    users = list(data["users"])
    rng.shuffle(users)
    projects: list[str] = list(data["projects"])
    mine: dict[str, list[str]] = {u: [] for u in users}
    owned: dict[str, list[str]] = {u: [] for u in users}
    for project, doc in data["projects"].items():
        for user, role in doc["members"].items():
            mine[user].append(project)
            if role == "owner":
                owned[user].append(project)
    # Bills are mostly looked at by those who may (owners, finance, admins), projects mostly
    # renamed by their owners; each group in the same Zipf order as everyone.
    owners = [u for u in users if owned[u]]
    readers = [u for u in users if owned[u] or data["users"][u]["roles"] != ["user"]]
    pick_user, pick_project = zipf(len(users), rng), zipf(len(projects), rng)
    pick_owner, pick_reader = zipf(len(owners), rng), zipf(len(readers), rng)
    kinds, weights = range(len(MIX)), [share for _, share in MIX]
    host = f"Host: {HOST}\r\n".encode()

    def project_of(user: str) -> str:
        if mine[user] and rng.random() < OWN_PROJECT:
            return rng.choice(mine[user])
        return projects[pick_project()]

    out = []
    for kind in rng.choices(kinds, weights, k=count):
        user = users[pick_user()]
        project = project_of(user)
        body = b""
        if kind == 0:
            head = f"GET /projects/{project}"
        elif kind == 1:
            if rng.random() > STRAY:
                user = readers[pick_reader()]
                project = rng.choice(owned[user]) if owned[user] else project_of(user)
            head = f"GET /projects/{project}/billing"
        elif kind == 2:
            if rng.random() > STRAY:
                user = owners[pick_owner()]
                project = rng.choice(owned[user])
            head = f"PUT /projects/{project}"
            body = json.dumps({"name": f"project {project[1:]}, renamed by {user}"}).encode()
        elif kind == 3:
            head = f"GET /public/{rng.choice(PUBLIC_PAGES)}"
        else:
            head, user = f"GET /projects/{projects[pick_project()]}", ""
        raw = head.encode() + b" HTTP/1.1\r\n" + host
        if user:
            raw += f"Authorization: Bearer {user}\r\n".encode()
        if body:
            raw += b"Content-Type: application/json\r\n"
            raw += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        out.append(Request(kind, raw + b"\r\n" + body))
    return out


# --- a small HTTP/1.1 keep-alive client -----------------------------------------------------
# httpx.AsyncClient spends more CPU per request than the server under test does, and both
# share two cores; raw streams keep the client out of the measurement.


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Reads one response; returns its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, keep = -1, False, True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep = value.strip().lower() != b"close"
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        await reader.readexactly(length)
    else:
        await reader.read()
        keep = False
    return status, keep


@dataclass
class Results:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    by_kind: dict[int, Counter[int]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)  # connection errors by type

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def record(self, kind: int, status: int, latency: float) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1

    def merge(self, other: Results) -> None:
        self.seconds += other.seconds
        self.latencies += other.latencies
        self.statuses += other.statuses
        for kind, counts in other.by_kind.items():
            self.by_kind.setdefault(kind, Counter()).update(counts)
        self.errors += other.errors

    def percentile(self, p: float) -> float:
        """The nearest-rank ``p``-th percentile of the latencies (NaN without any)."""
        return pct(sorted(self.latencies), p)

    def failures(self) -> int:
        """5xx, statuses no request of the mix should get, and connection errors."""
        expected = {200, 401, 403}
        bad = sum(n for status, n in self.statuses.items() if status not in expected)
        return bad + sum(self.errors.values())


class Connection:
    """One keep-alive connection, reopened after a close or an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, request: Request, into: Results) -> None:
        """Sends ``request``, reads the response and records it (or the error) in ``into``."""
        keep = False
        try:
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
            t0 = time.perf_counter()
            self.writer.write(request.raw)
            status, keep = await read_response(self.reader)
            into.record(request.kind, status, time.perf_counter() - t0)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            IndexError,
        ) as exc:
            into.errors[type(exc).__name__] += 1
        finally:
            if not keep:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def drive(
    port: int, requests: Sequence[Request], concurrency: int, seconds: float
) -> Results:
    """Sends ``requests`` in order over ``concurrency`` keep-alive connections until all were
    sent or ``seconds`` have passed."""
    results = Results()
    queue: Iterator[Request] = iter(requests)
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        connection = Connection(port)
        try:
            for request in queue:
                if time.perf_counter() > deadline:
                    break
                await connection.send(request, results)
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    results.seconds = time.perf_counter() - start
    return results


async def interleave(
    ports: tuple[int, int],
    requests: Sequence[Request],
    concurrency: int,
    seconds: float,
    slice_seconds: float = 1.0,
) -> tuple[Results, Results]:
    """The same load on both servers, in alternating slices of ``slice_seconds``, so that what
    else runs on the shared machine slows both alike; each server gets ``seconds`` in all and
    the requests in the same order."""
    results = Results(), Results()
    sent = [0, 0]
    n = 0
    while True:
        busy = False
        for side in (0, 1) if n % 2 == 0 else (1, 0):
            left = seconds - results[side].seconds
            if left <= 0 or sent[side] >= len(requests):
                continue
            busy = True
            # Workers take requests in order and all that are taken before the deadline are
            # sent, so what was sent is a prefix: the next slice goes on after it.
            got = await drive(
                ports[side], requests[sent[side] :], concurrency, min(slice_seconds, left)
            )
            sent[side] += got.requests
            results[side].merge(got)
        n += 1
        if not busy:
            return results


async def alternate(
    ports: tuple[int, int], requests: Sequence[Request], block: int = 50
) -> tuple[Results, Results]:
    """The same requests one at a time to both servers, over one connection each, in
    alternating blocks (which server goes first alternates too), so that drift of the shared
    machine hits both alike."""
    results = Results(), Results()
    connections = Connection(ports[0]), Connection(ports[1])
    try:
        for n, i in enumerate(range(0, len(requests), block)):
            for side in (0, 1) if n % 2 == 0 else (1, 0):
                start = time.perf_counter()
                for request in requests[i : i + block]:
                    await connections[side].send(request, results[side])
                results[side].seconds += time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    return results


# --- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    bare: bool
    log: TextIO  # uvicorn's output, shown when the server fails
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = free_port()
        env = dict(os.environ, REGOGUARD_DEMO_BARE="1" if self.bare else "0")
        command = [
            *(sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(APP_DIR)),
            *("--host", HOST, "--port", str(self.port), "--workers", "1"),
            *("--no-access-log", "--log-level", "warning"),
        ]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, timeout: float = 5.0) -> None:
        """terminate, then kill after ``timeout``."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=f"http://{HOST}:{self.port}", trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"the {self.name} server exited with status {self.process.returncode}:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get("/health", timeout=1.0).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise ServerError(f"the {self.name} server was not healthy after {timeout:.0f} s")

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])


@contextmanager
def servers(*specs: tuple[str, bool]) -> Iterator[list[Server]]:
    """Starts the servers (all at once: they import in parallel), waits until each answers
    ``/health`` (once more on a new port if another process took it in between), and stops
    every one of them on the way out, however it is left."""
    with ExitStack() as stack:
        started = []
        for name, bare in specs:
            server = Server(name, bare, stack.enter_context(tempfile.TemporaryFile("w+")))
            stack.callback(server.stop)
            server.start()
            started.append(server)
        for server in started:
            try:
                server.wait_healthy()
            except ServerError:
                if "address already in use" not in server.log_tail().lower():
                    raise
                server.stop()
                server.start()
                server.wait_healthy()
        yield started


def metrics(port: int) -> dict[str, Any]:
    with httpx.Client(trust_env=False) as client:
        reply = client.get(f"http://{HOST}:{port}/stats", timeout=5.0)
        reply.raise_for_status()
        doc: dict[str, Any] = reply.json()
        return doc


# --- report -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def describe_load(results: Results, label: str) -> list[str]:
    allowed = sum(n for s, n in results.statuses.items() if 200 <= s < 300)
    denied = results.statuses[401] + results.statuses[403]
    total = max(results.requests, 1)
    rate = results.requests / results.seconds
    p50, p99 = ms(results.percentile(50)), ms(results.percentile(99))
    statuses = "  ".join(f"{s}: {n:,}" for s, n in sorted(results.statuses.items()))
    lines = [
        label,
        f"  requests   {results.requests:,} in {results.seconds:.1f} s = {rate:,.0f} req/s",
        f"  allowed    {allowed:,} ({100 * allowed / total:.1f} %, 2xx)",
        f"  denied     {denied:,} ({100 * denied / total:.1f} %, 401/403)",
        f"  statuses   {statuses}",
        f"  latency    p50 {p50}   p99 {p99}   (client side)",
    ]
    if results.errors:
        lines.append("  errors     " + ", ".join(f"{k}: {n}" for k, n in results.errors.items()))
    return lines


def describe_mix(results: Results) -> list[str]:
    statuses = sorted({s for c in results.by_kind.values() for s in c})
    width = max(len(name) for name, _ in MIX)
    lines = [f"  {'':{width}}  {'sent':>6}" + "".join(f"  {s:>6}" for s in statuses)]
    for kind, (name, _) in enumerate(MIX):
        counts = results.by_kind.get(kind, Counter())
        cells = "".join(f"  {counts[s]:>6,}" for s in statuses)
        lines.append(f"  {name:{width}}  {sum(counts.values()):>6,}{cells}")
    return lines


def describe_server(doc: dict[str, Any]) -> list[str]:
    stats = doc["authorizer"]
    billing = doc["cached_authorization"]["may_see_billing"]
    ratio = billing["hits"] / max(billing["hits"] + billing["misses"], 1)
    counts = f"{stats['l1_hits']:,} hits, {stats['l1_misses']:,} misses"
    work = f"{stats['evaluations']:,} evaluations, {stats['entries']:,} cached decisions"
    lookups = f"{billing['hits']:,} hits, {billing['misses']:,} lookups"
    return [
        f"  server     authorizer: hit ratio {stats['hit_ratio']:.3f} ({counts}), {work}",
        f"             @cached_authorization (2 ms lookup): hit ratio {ratio:.3f} ({lookups})",
    ]


def compare(rows: list[tuple[str, Results, Results]]) -> list[str]:
    lines = [f"  {'':38}{'guarded':>11}{'bare':>11}{'added':>11}"]
    for label, guarded, bare in rows:
        for p in (50, 99):
            g, b = guarded.percentile(p), bare.percentile(p)
            lines.append(f"  {label + f', p{p}':38}{ms(g):>11}{ms(b):>11}{ms(g - b):>11}")
    # Under a saturating load, 1 / throughput is the server's time per request.
    load, base = rows[0][1], rows[0][2]
    g, b = load.seconds / max(load.requests, 1), base.seconds / max(base.requests, 1)
    lines.append(
        f"  {'server time per request (1 / req/s)':38}{ms(g):>11}{ms(b):>11}{ms(g - b):>11}"
    )
    return lines


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per server (10)")
    parser.add_argument("--requests", type=int, default=100_000, help="at most (100,000)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (32)")
    parser.add_argument("--seed", type=int, default=1, help="of the workload (1)")
    parser.add_argument(
        "--sequential",
        type=int,
        default=2_000,
        help="GET requests per server, one at a time, for the added latency (2,000)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 300 requests, concurrency 16, 200 sequential",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.sequential = 300, 16, 200
        args.seconds = min(args.seconds, 5.0)
    if args.requests < 1 or args.concurrency < 1 or args.seconds <= 0 or args.sequential < 0:
        parser.error("--requests, --concurrency and --seconds must be positive")
    return args


# The kinds sent one at a time: what the middleware alone decides, without the 2 ms lookup
# behind the billing route, whose cache misses would be most of the tail in both apps.
ONE_AT_A_TIME = {0, 3}

NOTE = """\
  At concurrency {concurrency} a request mostly waits for the ones ahead of it, so its
  latency grows with the middleware's cost times the queue; one at a time (GET project and
  public pages only) it is the cost per request. Denials end early in the guarded app, so
  they cost less than the bare app's handler. A loopback measurement on a shared 2-core
  machine, client and server on the same cores: expect tens of percent of noise."""


def run(args: argparse.Namespace) -> list[Results]:
    with servers(("guarded", False), ("bare", True)) as (guarded, bare):
        print(
            f"servers up on ports {guarded.port} (guarded) and {bare.port} "
            "(bare: REGOGUARD_DEMO_BARE=1, no RegoGuardMiddleware)\n"
        )
        requests = workload(args.requests, args.seed)
        ports = guarded.port, bare.port
        load, base = asyncio.run(interleave(ports, requests, args.concurrency, args.seconds))

        title = "load: RegoGuardMiddleware on every request, Authorize on PUT, cached billing"
        report = describe_load(load, title) + describe_server(metrics(guarded.port))
        report += ["", "  by request (statuses):", *describe_mix(load), ""]
        report += describe_load(base, "the same load without RegoGuardMiddleware")
        print("\n".join(report) + "\n")

        rows = [(f"concurrency {args.concurrency}", load, base)]
        if args.sequential:
            sequence = [r for r in requests if r.kind in ONE_AT_A_TIME][: args.sequential]
            one_guarded, one_bare = asyncio.run(alternate(ports, sequence))
            rows.append(("one at a time", one_guarded, one_bare))
        print("added latency (guarded - bare, the same seeded requests, client side):")
        print("\n".join(compare(rows)))
        print(NOTE.format(concurrency=args.concurrency) + "\n")
        for server, side in ((guarded, 1), (bare, 2)):
            if any(row[side].failures() for row in rows):
                # Why a request failed is in the server's log: show it before it is gone.
                print(f"the {server.name} server's log, last lines:\n{server.log_tail()}")
        return [r for _, *pair in rows for r in pair]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress through a pipe (tee, CI)
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    print(
        f"regoguard demo: examples/basic_fastapi under uvicorn, 1 worker on {HOST}; "
        f"seed {args.seed}, concurrency {args.concurrency}, "
        f"{args.seconds:g} s or {args.requests:,} requests per server"
    )
    try:
        results = run(args)
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the servers were stopped", file=sys.stderr)
        return 130
    total = sum(r.requests for r in results)
    failures = sum(r.failures() for r in results)
    print(
        f"done in {time.perf_counter() - began:.1f} s: {total:,} requests, {failures:,} failed "
        "(5xx, unexpected status or connection error)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
