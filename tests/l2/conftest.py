"""A real redis-server for the L2 tests: started on a free loopback port, stopped by its PID.

No fakeredis: the failure tests need a server that can be killed, restarted and paused. The
launcher is the bench harness's (``benches/python/harness.py``, which says why it lives
there), shared with the benches and the demo.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches" / "python"))
from harness import REDIS_SERVER, free_port
from harness import RedisServer as _Launcher
from harness import read_reply as _read

__all__ = ["REDIS_SERVER", "RedisServer", "_read", "free_port"]


class RedisServer(_Launcher):
    """One redis-server subprocess on ``port``; ``start``/``kill``/``command`` for the tests
    (skipped when redis-server is not installed)."""

    def start(self) -> RedisServer:
        try:
            super().start()
        except FileNotFoundError:
            pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
        return self


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the whole session; tests isolate themselves with a fresh key prefix."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, for tests that kill, restart or pause it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"
