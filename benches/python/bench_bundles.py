"""Bundles: activation time and peak memory for 10, 1,000 and 100,000 data entries, and
decisions per second while a remote bundle swaps under load.

    .venv/bin/python benches/python/bench_bundles.py            # full run (about a minute)
    .venv/bin/python benches/python/bench_bundles.py --quick    # smoke run

Activation is measured two ways, each the median of several rounds: ``Authorizer(path)``
(read, decompress, parse, compile) and ``reload()`` of a changed bundle (the same plus the
swap). Peak memory is the peak RSS (``VmHWM``, reset just before) of a fresh child process while
it builds the Authorizer, less its RSS before (Linux only). Decisions per second: 4 threads call
``check`` with 64 distinct inputs against an HTTP server on 127.0.0.1, once with a poll
interval of an hour (steady state) and once with the server alternating two versions and
a poll every 20-50 ms (every swap empties the reachable cache). A shared 2-core box: read
the ratio between the two decision rates, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

POLICY = """package authz
default allow := false
allow if "admin" in data.authz.users[input.user].roles
"""


def bundle(entries: int, revision: str) -> bytes:
    users = {f"u{i}": {"roles": ["admin" if i % 2 == 0 else "user"]} for i in range(entries)}
    files = {
        "/.manifest": json.dumps({"revision": revision, "roots": ["authz"]}).encode(),
        "/authz/policy.rego": POLICY.encode(),
        "/authz/data.json": json.dumps({"users": users}).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


CHILD = """
import sys, time
import regoguard

def kib(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field))

path = sys.argv[1]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
before = kib("VmRSS:")
t = time.perf_counter()
a = regoguard.Authorizer(path)
took = time.perf_counter() - t
peak = kib("VmHWM:")
assert a.check({"user": "u0"}).allow
print(took, (peak - before) / 1024)
"""


def activation(entries: int, rounds: int, tmp: Path) -> dict[str, Any]:
    import regoguard

    path = tmp / f"b{entries}.tar.gz"
    path.write_bytes(bundle(entries, "r0"))
    size = path.stat().st_size
    builds, peaks = [], []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], check=True, capture_output=True, text=True
        ).stdout.split()
        builds.append(float(out[0]))
        peaks.append(float(out[1]))
    authz = regoguard.Authorizer(path)
    reloads = []
    for r in range(rounds):
        path.write_bytes(bundle(entries, f"r{r + 1}"))
        t = time.perf_counter()
        authz.reload()
        reloads.append(time.perf_counter() - t)
    return {
        "entries": entries,
        "bundle_bytes": size,
        "build_s": statistics.median(builds),
        "reload_s": statistics.median(reloads),
        "peak_rss_mib": statistics.median(peaks),
    }


class Server:
    def __init__(self, versions: list[bytes]) -> None:
        self.versions = versions
        self.n = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = server.versions[server.n % len(server.versions)]
                server.n += 1
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/b.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rate(swapping: bool, seconds: float, entries: int) -> dict[str, Any]:
    import regoguard

    versions = [bundle(entries, "a"), bundle(entries, "b")] if swapping else [bundle(entries, "a")]
    srv = Server(versions)
    poll = (0.02, 0.05) if swapping else (3600.0, 3600.0)
    authz = regoguard.Authorizer(
        regoguard.Bundle(srv.url, poll_min_seconds=poll[0], poll_max_seconds=poll[1])
    )
    counts = [0] * 4
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        rng = random.Random(i)
        n = 0
        while time.monotonic() < stop:
            authz.check({"user": f"u{rng.randrange(64)}"})
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    name = next(iter(authz.bundles))
    loaded = authz.bundles[name]["loaded"]
    srv.close()
    return {
        "swapping": swapping,
        "decisions_per_s": sum(counts) / seconds,
        "activations": loaded,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 1 if args.quick else 3
    seconds = 1.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory() as d:
        rows = [activation(n, rounds, Path(d)) for n in (10, 1_000, 100_000)]
    print("| data entries | bundle (gzip) | Authorizer(path) | reload() swap | peak RSS growth |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['entries']:,} | {r['bundle_bytes'] / 1024:.1f} KiB | {r['build_s'] * 1e3:.1f} ms"
            f" | {r['reload_s'] * 1e3:.1f} ms | {r['peak_rss_mib']:.1f} MiB |"
        )
    steady = rate(False, seconds, 1_000)
    swap = rate(True, seconds, 1_000)
    print()
    print("| 4 threads, 1,000-entry bundle | decisions/s | activations during the run |")
    print("|---|---:|---:|")
    print(
        f"| steady (no new version) | {steady['decisions_per_s']:,.0f} | {steady['activations'] - 1} |"
    )
    print(
        f"| swapping every 20-50 ms | {swap['decisions_per_s']:,.0f} | {swap['activations'] - 1} |"
    )


if __name__ == "__main__":
    main()
