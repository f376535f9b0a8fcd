"""The bench harness: statistics, timing, processes and workload shared by every bench in
``benches/python/``, by ``examples/run_demo.py`` and by the Redis test fixtures
(``tests/l2/conftest.py``).

Why here, and imported by path: the harness is tooling of this repository, not of the
library, so it is not in the ``regoguard`` package (a user's ``pip install regoguard`` must
not ship a bench harness or a redis-server launcher) and it is not an installed package of
its own (the benches, the demo and the tests run from a checkout with nothing else
installed). ``benches/python`` is where the benches already import their shared pieces from
(``_common.py``); the demo and the tests put this folder on ``sys.path`` and import
``harness``. To keep that cheap and safe for the tests, this module uses the standard
library only and imports neither ``regoguard`` nor anything bench-specific (the decision
benches' fixture and the comparison binding stay in ``_common.py``).

- statistics: ``pct``, the one percentile definition (nearest rank);
- timing: ``time_batch``/``time_singles`` and their ``async`` twins;
- processes: ``free_port``, ``RedisServer`` (a real redis-server on loopback);
- workload: ``zipf`` (the seeded Zipf sampler of the demo and the comparison workload).
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

# --------------------------------------------------------------------------- statistics


def pct(sorted_vals: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``q`` in percent, 0-100) of an already sorted
    sequence: the smallest value with at least ``q`` % of the values at or below it; NaN for
    an empty sequence. ``pct(v, 50)`` of an even count is the lower middle value."""
    n = len(sorted_vals)
    if not n:
        return float("nan")
    return sorted_vals[max(0, min(n - 1, math.ceil(q / 100.0 * n) - 1))]


# --------------------------------------------------------------------------- timing


def time_batch(
    fn: Callable[[Any], Any], batch: Iterable[Any], pc: Callable[[], int] = time.perf_counter_ns
) -> int:
    """Nanoseconds to call ``fn`` on every item of ``batch``, one timer pair around the loop."""
    t0 = pc()
    for x in batch:
        fn(x)
    return pc() - t0


def time_singles(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    out: list[int],
    pc: Callable[[], int] = time.perf_counter_ns,
) -> None:
    """Appends to ``out`` the nanoseconds of each call ``fn(item)`` (a timer pair per call)."""
    append = out.append
    for x in items:
        t0 = pc()
        fn(x)
        t1 = pc()
        append(t1 - t0)


async def atime_batch(
    fn: Callable[[Any], Awaitable[Any]],
    batch: Iterable[Any],
    pc: Callable[[], int] = time.perf_counter_ns,
) -> int:
    """``time_batch`` for a coroutine function: ``await fn(item)`` for every item."""
    t0 = pc()
    for x in batch:
        await fn(x)
    return pc() - t0


async def atime_singles(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any],
    out: list[int],
    pc: Callable[[], int] = time.perf_counter_ns,
) -> None:
    """``time_singles`` for a coroutine function."""
    append = out.append
    for x in items:
        t0 = pc()
        await fn(x)
        t1 = pc()
        append(t1 - t0)


# --------------------------------------------------------------------------- processes

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` now (another process may take it before it is bound:
    callers that start a server retry on "address already in use")."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One redis-server subprocess on loopback (no persistence), started and stopped by its
    PID; ``command`` talks RESP2 over a fresh connection, for setting up and inspecting.

    ``start`` raises ``FileNotFoundError`` when redis-server is not installed (the tests skip
    on it) and ``RuntimeError`` when it does not answer ``PING`` within 10 s.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        if not os.path.exists(REDIS_SERVER):
            raise FileNotFoundError(f"redis-server is not installed (looked for {REDIS_SERVER})")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", HOST]
            + ["--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "PONG":
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None

    def command(self, *args: str | bytes | int) -> Any:
        """One command over a fresh connection (RESP2); an error reply raises RuntimeError."""
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            s.sendall(out)
            return read_reply(s.makefile("rb"))


def read_reply(f: Any) -> Any:
    """One RESP2 reply read from the binary file ``f`` (a socket's ``makefile("rb")``)."""
    line = f.readline()
    if not line:
        raise OSError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise OSError(f"unexpected reply {line!r}")


# --------------------------------------------------------------------------- workload

ZIPF_S = 1.1
"""The Zipf exponent of the demo's and the comparison's workloads."""


def zipf(n: int, rng: random.Random, s: float = ZIPF_S) -> Callable[[], int]:
    """A sampler of ranks 0..n-1 with P(rank k) proportional to 1 / (k + 1) ** s, drawing
    from ``rng`` (the same seed gives the same ranks)."""
    cumulative = list(itertools.accumulate(1 / (k + 1) ** s for k in range(n)))
    total = cumulative[-1]
    return lambda: min(bisect.bisect(cumulative, rng.random() * total), n - 1)
