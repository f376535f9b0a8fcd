"""Soak benchmark (issue 16; not CI): mixed load on two uvicorn instances sharing a Redis
while the data, the policy, the caches and Redis itself keep changing underneath.

Two uvicorn subprocesses (instances A and B) serve one Starlette app behind
``RegoGuardMiddleware`` with an ``Authorizer`` on one redis-server (``decisions="always"``,
signed). The driver keeps 16 keep-alive connections busy (8 per instance) with requests
from 300 users over 40 resources (Zipf users, half of them on a resource the user is
granted), and every ``--chaos-every`` seconds does the next of: ``set_data`` (on A; B hears
it over pub/sub), ``invalidate_all``, ``reload`` (A or B), ``CLIENT PAUSE`` 2 s, ``DEBUG
SLEEP`` 1 s, and a kill -9 of redis-server restarted 2 s later.

Every decision names the data version it was made with (the policy's reason is
``v<version>``). At the end an uncached twin ``Authorizer`` (same policy) is loaded with each
version in turn and re-decides every (user, path) seen under it: a different ``allow`` is a
wrong decision. A request to A that started after A acknowledged ``set_data(v)`` and was
decided under an older version is a stale decision. Reported: RSS of each instance over time,
decision errors (status other than 200/403, or a failed connection), wrong and stale
decisions, p50/p99/max latency overall and per minute, and the instances' stats.

    .venv/bin/python benches/python/soak.py --minutes 10      # the reported run
    .venv/bin/python benches/python/soak.py --minutes 1       # a smoke run

Writes ``benches/results/soak.json`` (``--out``) and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

POLICY = """package authz

default ok := false

ok if {
	some r in data.soak.grants[input.user.id]
	r == input.path_segments[0]
}

ok if {
	input.user.id == "admin"
	input.method == "GET"
}

allow := {"allow": ok, "reason": sprintf("v%v", [data.soak.version])}
"""

USERS = [f"u{i}" for i in range(300)]
RESOURCES = [f"r{j}" for j in range(40)]
SIGNING_KEY = b"soak-signing-key-0123456789"
CONNECTIONS_PER_INSTANCE = 8


# --------------------------------------------------------------------------- the app (uvicorn)


def identity(scope: dict[str, Any]) -> dict[str, Any] | None:
    for k, v in scope.get("headers", ()):
        if k == b"x-user":
            return {"id": v.decode("latin-1")}
    return None


def app_from_env() -> Any:
    """uvicorn factory: the protected app, configured by SOAK_* environment variables."""
    import regoguard
    from anyio import to_thread
    from regoguard import RegoGuardMiddleware

    policy_dir = Path(os.environ["SOAK_POLICY_DIR"])
    authz = regoguard.Authorizer(
        policy_dir,
        data=json.loads((policy_dir / "data.json").read_text()),
        cache=regoguard.CacheConfig(max_entries=50_000, ttl_seconds=30),
        redis=regoguard.RedisConfig(
            os.environ["SOAK_REDIS_URL"],
            key_prefix="soak",
            signing_key=SIGNING_KEY,
            decisions="always",
            timeout_seconds=0.05,
        ),
    )

    async def body(receive: Any) -> bytes:
        chunks = []
        while True:
            m = await receive()
            chunks.append(m.get("body", b""))
            if not m.get("more_body"):
                return b"".join(chunks)

    async def respond(send: Any, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if not path.startswith("/_soak/"):
            await respond(send, 200, {"reason": scope["regoguard"].reason})
            return
        action = path.removeprefix("/_soak/")
        if action == "set_data":
            value = json.loads(await body(receive))
            revision = await to_thread.run_sync(authz.set_data, "soak", value)
            await respond(send, 200, {"revision": revision})
        elif action == "reload":
            await respond(send, 200, {"revision": await to_thread.run_sync(authz.reload)})
        elif action == "invalidate_all":
            await to_thread.run_sync(authz.invalidate_all)
            await respond(send, 200, {})
        elif action == "stats":
            await respond(send, 200, authz.stats())
        else:
            await respond(send, 200, {"pid": os.getpid()})

    return RegoGuardMiddleware(app, authorizer=authz, identity=identity, exclude_paths=["/_soak/*"])


# --------------------------------------------------------------------------- the driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Redis:
    """The redis-server subprocess: started, killed and restarted on one port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--enable-debug-command", "yes"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def cli(self, *args: str) -> str:
        exe = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        out = subprocess.run(
            [exe, "-p", str(self.port), *args], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def http(
    port: int, method: str, path: str, body: bytes = b"", user: str | None = None
) -> tuple[int, bytes]:
    """One request on its own connection (admin calls)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(method, path, user, body))
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def request_bytes(method: str, path: str, user: str | None, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: soak\r\ncontent-length: {len(body)}\r\n"
    if user is not None:
        head += f"x-user: {user}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, await reader.readexactly(length)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(16)
        self.redis = Redis()
        self.tmp = Path(tempfile.mkdtemp(prefix="regoguard-soak-"))
        self.version = 0
        self.grants: dict[int, dict[str, list[str]]] = {0: self.initial_grants()}
        self.acked_a = 0  # the newest version A acknowledged
        self.instances: list[tuple[str, int, subprocess.Popen[bytes]]] = []
        # (version, user, path) -> the allows seen; and the bookkeeping of every request.
        self.seen: dict[tuple[int, str, str], set[bool]] = {}
        self.latencies: list[tuple[float, float]] = []  # (t since start, seconds)
        self.errors: list[str] = []
        self.stale: list[str] = []
        self.lagging = 0
        self.b_latest = 0  # the newest version B decided with
        self.rss: list[dict[str, Any]] = []
        self.chaos_log: list[tuple[float, str, str]] = []
        self.stop = False
        self.t0 = 0.0

    def initial_grants(self) -> dict[str, list[str]]:
        return {u: sorted(self.rng.sample(RESOURCES, 5)) for u in USERS}

    def data(self, version: int) -> dict[str, Any]:
        return {"version": version, "grants": self.grants[version]}

    # ---------------------------------------------------------------- processes

    def start(self) -> None:
        self.redis.start()
        (self.tmp / "authz.rego").write_text(POLICY)
        (self.tmp / "data.json").write_text(json.dumps({"soak": self.data(0)}))
        env = dict(
            os.environ,
            SOAK_POLICY_DIR=str(self.tmp),
            SOAK_REDIS_URL=f"redis://127.0.0.1:{self.redis.port}/0",
        )
        for name in ("A", "B"):
            port = free_port()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "soak:app_from_env",
                    "--factory",
                    "--app-dir",
                    str(Path(__file__).parent),
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
            )
            self.instances.append((name, port, proc))
        deadline = time.monotonic() + 60
        for _, port, _ in self.instances:
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("uvicorn did not start") from None
                    time.sleep(0.1)

    def close(self) -> None:
        for _, _, proc in self.instances:
            proc.terminate()
        for _, _, proc in self.instances:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.redis.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---------------------------------------------------------------- load

    def pick(self) -> tuple[str, str]:
        user = USERS[min(int(self.rng.paretovariate(1.2)) - 1, len(USERS) - 1)]
        if self.rng.random() < 0.5:
            resource = self.rng.choice(self.grants[self.version][user])
        else:
            resource = self.rng.choice(RESOURCES)
        return user, f"/{resource}/items/{self.rng.randrange(10)}"

    async def worker(self, name: str, port: int) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not self.stop:
            user, path = self.pick()
            acked = self.acked_a
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = conn
                writer.write(request_bytes("GET", path, user))
                await writer.drain()
                status, body = await asyncio.wait_for(read_response(reader), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                self.errors.append(f"{name} {path}: {type(e).__name__} {e}")
                conn = None
                await asyncio.sleep(0.1)
                continue
            took = time.perf_counter() - start
            self.latencies.append((start - self.t0, took))
            if status not in (200, 403):
                self.errors.append(f"{name} {path} as {user}: {status} {body[:200]!r}")
                continue
            payload = json.loads(body)
            reason = payload["reason"] if status == 200 else payload["detail"]
            version = int(reason.removeprefix("v"))
            self.seen.setdefault((version, user, path), set()).add(status == 200)
            if name == "A" and version < acked:
                self.stale.append(f"A {path} as {user}: v{version} after v{acked} was acknowledged")
            elif name == "B":
                self.b_latest = max(self.b_latest, version)
                if version < acked - 1:
                    self.lagging += 1

    # ---------------------------------------------------------------- chaos

    async def chaos(self) -> None:
        actions = [
            self.set_data,
            self.invalidate_all,
            self.set_data,
            self.reload,
            self.client_pause,
            self.set_data,
            self.debug_sleep,
            self.set_data,
            self.restart_redis,
        ]
        i = 0
        while not self.stop:
            await asyncio.sleep(self.args.chaos_every)
            if self.stop:
                break
            action = actions[i % len(actions)]
            i += 1
            try:
                what = await action()
            except Exception as e:  # noqa: BLE001 - reported, the soak goes on
                what = f"failed: {type(e).__name__} {e}"
            self.chaos_log.append((round(time.perf_counter() - self.t0, 1), action.__name__, what))

    async def set_data(self) -> str:
        grants = {u: list(r) for u, r in self.grants[self.version].items()}
        for u in self.rng.sample(USERS, 10):
            grants[u] = sorted(self.rng.sample(RESOURCES, 5))
        version = self.version + 1
        self.grants[version] = grants
        self.version = version
        port = self.instances[0][1]
        status, body = await http(
            port, "POST", "/_soak/set_data", json.dumps(self.data(version)).encode()
        )
        if status != 200:
            raise RuntimeError(f"set_data answered {status}: {body[:200]!r}")
        self.acked_a = version
        return f"v{version}"

    async def invalidate_all(self) -> str:
        status, _ = await http(self.instances[0][1], "POST", "/_soak/invalidate_all")
        return str(status)

    async def reload(self) -> str:
        name, port, _ = self.rng.choice(self.instances)
        status, _ = await http(port, "POST", "/_soak/reload")
        return f"{name} {status}"

    async def client_pause(self) -> str:
        return await asyncio.to_thread(self.redis.cli, "CLIENT", "PAUSE", "2000", "ALL")

    async def debug_sleep(self) -> str:
        return await asyncio.to_thread(self.redis.cli, "DEBUG", "SLEEP", "1")

    async def restart_redis(self) -> str:
        await asyncio.to_thread(self.redis.kill)
        await asyncio.sleep(2)
        await asyncio.to_thread(self.redis.start)
        return "killed, restarted after 2 s"

    # ---------------------------------------------------------------- sampling

    async def sample_rss(self) -> None:
        while not self.stop:
            row: dict[str, Any] = {"t": round(time.perf_counter() - self.t0)}
            row["A_version"], row["B_version"] = self.acked_a, self.b_latest
            for name, _, proc in self.instances:
                row[name] = rss_kib(proc.pid)
            self.rss.append(row)
            for _ in range(int(self.args.rss_every * 10)):
                if self.stop:
                    return
                await asyncio.sleep(0.1)

    async def run(self) -> None:
        self.t0 = time.perf_counter()
        tasks = [
            asyncio.create_task(self.worker(name, port))
            for name, port, _ in self.instances
            for _ in range(CONNECTIONS_PER_INSTANCE)
        ]
        tasks += [asyncio.create_task(self.chaos()), asyncio.create_task(self.sample_rss())]
        await asyncio.sleep(self.args.minutes * 60)
        self.stop = True
        await asyncio.gather(*tasks)
        self.stats = {}
        for name, port, _ in self.instances:
            _, body = await http(port, "GET", "/_soak/stats")
            self.stats[name] = json.loads(body)

    # ---------------------------------------------------------------- the twin

    def wrong_decisions(self) -> tuple[int, int]:
        """(wrong, checked): every (version, user, path) re-decided by an uncached twin."""
        import regoguard

        twin = regoguard.Authorizer(self.tmp, data={"soak": self.data(0)}, cache=None)
        by_version: dict[int, list[tuple[str, str, set[bool]]]] = {}
        for (v, user, path), allows in self.seen.items():
            by_version.setdefault(v, []).append((user, path, allows))
        wrong = checked = 0
        for v, items in sorted(by_version.items()):
            twin.set_data("soak", self.data(v))
            for user, path, allows in items:
                scope = {
                    "type": "http",
                    "method": "GET",
                    "path": path,
                    "query_string": b"",
                    "headers": [(b"x-user", user.encode())],
                }
                doc = regoguard.build_input(scope, identity=identity)
                decision = twin.check(doc)
                checked += 1
                if allows != {decision.allow} or decision.reason != f"v{v}":
                    wrong += 1
                    if wrong <= 10:
                        print(f"wrong: v{v} {user} {path}: saw {allows}, twin {decision.allow}")
        return wrong, checked


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--chaos-every", type=float, default=5.0, help="seconds between disruptions")
    p.add_argument("--rss-every", type=float, default=15.0, help="seconds between RSS samples")
    p.add_argument("--out", type=Path, default=REPO / "benches" / "results" / "soak.json")
    args = p.parse_args()

    soak = Soak(args)
    soak.start()
    try:
        asyncio.run(soak.run())
        wrong, checked = soak.wrong_decisions()
    finally:
        soak.close()

    lat = [s for _, s in soak.latencies]
    minutes = int(args.minutes + 0.999)
    per_minute = []
    for m in range(minutes):
        window = [s for t, s in soak.latencies if m * 60 <= t < (m + 1) * 60]
        per_minute.append(
            {"minute": m + 1, "requests": len(window), "p99_ms": pct(window, 0.99) * 1e3}
        )
    warm = [r for r in soak.rss if r["t"] >= 60] or soak.rss
    result = {
        "minutes": args.minutes,
        "requests": len(lat),
        "rps": len(lat) / (args.minutes * 60),
        "decision_errors": len(soak.errors),
        "errors_sample": soak.errors[:20],
        "wrong_decisions": wrong,
        "decisions_checked_by_twin": checked,
        "stale_decisions_on_A": len(soak.stale),
        "stale_sample": soak.stale[:10],
        "B_lagging_more_than_one_version": soak.lagging,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "max_ms": max(lat, default=float("nan")) * 1e3,
        "per_minute": per_minute,
        "rss_kib": soak.rss,
        "rss_after_warmup_kib": {
            name: {
                "first": warm[0][name],
                "last": warm[-1][name],
                "max": max(r[name] for r in warm),
            }
            for name in ("A", "B")
        }
        if warm
        else {},
        "chaos": soak.chaos_log,
        "versions": soak.version,
        "stats": soak.stats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))

    print(f"## soak, {args.minutes:g} min (`benches/python/soak.py --minutes {args.minutes:g}`)\n")
    print("| figure | value |\n|---|---:|")
    for k in (
        "requests",
        "rps",
        "decision_errors",
        "wrong_decisions",
        "decisions_checked_by_twin",
        "stale_decisions_on_A",
        "B_lagging_more_than_one_version",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "versions",
    ):
        v = result[k]
        print(f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |")
    for name, r in result["rss_after_warmup_kib"].items():
        print(
            f"| RSS {name} after 1 min: first / last / max (MiB) | "
            f"{r['first'] / 1024:.1f} / {r['last'] / 1024:.1f} / {r['max'] / 1024:.1f} |"
        )
    print("\np99 per minute (ms):", ", ".join(f"{m['p99_ms']:.1f}" for m in per_minute))
    print(
        "chaos actions:",
        len(soak.chaos_log),
        "failed:",
        sum(1 for c in soak.chaos_log if c[2].startswith("failed")),
    )
    for e in soak.errors[:5]:
        print("error:", e)
    ok = not soak.errors and wrong == 0 and not soak.stale
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
