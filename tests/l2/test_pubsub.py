"""Cross-instance messages over Redis pub/sub, against a real redis-server (see conftest.py).

Two ``RedisConfig`` objects with one prefix behave as two processes: each has its own
connection, subscriber and L1. ``test_two_processes_see_each_others_invalidations`` uses real
OS processes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from regoguard import Authorizer, RedisConfig, cached_authorization

from .conftest import RedisServer
from .test_redis import KEY, POLICY, make_shared, wait_for

pytestmark = pytest.mark.redis


def subscribed(*configs: RedisConfig) -> None:
    wait_for(lambda: all(c.stats()["subscribed"] for c in configs))


def config(server: RedisServer, prefix: str, **kwargs: Any) -> RedisConfig:
    return RedisConfig(server.url, key_prefix=prefix, signing_key=KEY, **kwargs)


def test_decorator_invalidations_reach_the_other_instance(
    redis_server: RedisServer, prefix: str
) -> None:
    cfg_a, cfg_b = config(redis_server, prefix), config(redis_server, prefix)
    a, _ = make_shared(cfg_a, True, tags=lambda user_id: [f"user:{user_id}"])
    b, calls_b = make_shared(cfg_b, True, tags=lambda user_id: [f"user:{user_id}"])
    subscribed(cfg_a, cfg_b)
    for i in range(3):
        b(i)
    assert b.cache_info().entries == 3
    a.invalidate(0)
    wait_for(lambda: b.cache_info().entries == 2)
    a.invalidate_tags(["user:1"])
    wait_for(lambda: b.cache_info().entries == 1)
    a.invalidate_all()
    wait_for(lambda: b.cache_info().entries == 0)
    assert cfg_b.stats()["messages_received"] == 3
    assert cfg_a.stats()["messages_sent"] == 3
    b(0)
    assert calls_b == [0, 1, 2, 0]


def test_authorizer_messages_reach_the_other_instance(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(POLICY)
    cfg_a, cfg_b = config(redis_server, prefix), config(redis_server, prefix)
    a = Authorizer(folder, data={"roles": {}}, redis=cfg_a)
    b = Authorizer(folder, data={"roles": {}}, redis=cfg_b)
    subscribed(cfg_a, cfg_b)
    assert a.revision == b.revision
    # set_data: the same change, so the same revision, everywhere.
    revision = a.set_data("roles/alice", ["admin"])
    wait_for(lambda: b.revision == revision)
    assert b.check({"user": "alice"}).allow
    # reload: every instance re-reads its own sources.
    (folder / "authz.rego").write_text(POLICY.replace('"alice"', '"carol"'))
    revision = a.reload()
    wait_for(lambda: b.revision == revision)
    assert not b.check({"user": "alice"}).allow and b.check({"user": "carol"}).allow
    # invalidations
    assert b.stats()["entries"] == 2
    a.invalidate(tags=["nothing-tagged"])
    a.invalidate_all()
    wait_for(lambda: b.stats()["entries"] == 0)
    assert cfg_b.stats()["messages_received"] == 4


def test_forged_messages_are_ignored(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    cfg = config(redis_server, prefix)
    b = Authorizer(policy_dir(POLICY), redis=cfg)
    subscribed(cfg)
    before = b.revision
    forged = (
        '0000 {"v":1,"from":"x","scope":"a","kind":"set_data","path":["allow_all"],"value":"true"}'
    )
    redis_server.command("PUBLISH", cfg.channel, forged)
    redis_server.command("PUBLISH", cfg.channel, "garbage")
    wait_for(lambda: cfg.stats()["messages_rejected"] == 2)
    assert b.revision == before


def test_a_lost_subscription_drops_l1_and_recovers(own_redis: RedisServer, prefix: str) -> None:
    cfg_a, cfg_b = config(own_redis, prefix), config(own_redis, prefix)
    a, _ = make_shared(cfg_a, True)
    b, _ = make_shared(cfg_b, True)
    subscribed(cfg_a, cfg_b)
    b(1), b(2)
    assert b.cache_info().entries == 2
    own_redis.kill()
    # Messages may be missed from now on: the L1 is dropped at once...
    wait_for(lambda: cfg_b.stats()["subscription_gaps"] >= 1)
    assert b.cache_info().entries == 0
    assert b(3) is True, "still served (from the function) while Redis is down"
    own_redis.start()
    # ... and again when the subscription is back, before it is trusted.
    wait_for(lambda: cfg_b.stats()["subscribed"] and cfg_a.stats()["subscribed"], timeout=15)
    assert cfg_b.stats()["subscription_gaps"] >= 2
    assert b.cache_info().entries == 0
    b(4)

    def propagated() -> bool:
        a.invalidate(4)
        return b.cache_info().entries == 0

    wait_for(propagated, timeout=10)


CHILD = """
import sys, time
import regoguard

url, prefix = sys.argv[1:3]
cfg = regoguard.RedisConfig(url, key_prefix=prefix, signing_key=b"0123456789abcdef-test-secret")

@regoguard.cached_authorization(redis=cfg)
def can_read(user_id: int) -> bool:
    return True

deadline = time.monotonic() + 10
while not cfg.stats()["subscribed"] and time.monotonic() < deadline:
    time.sleep(0.005)
can_read(1)
print("ready", flush=True)
sys.stdin.readline()  # the parent invalidated
deadline = time.monotonic() + 10
while can_read.cache_info().entries and time.monotonic() < deadline:
    time.sleep(0.001)
print("dropped" if not can_read.cache_info().entries else "kept", flush=True)
"""


def test_two_processes_see_each_others_invalidations(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    child = subprocess.Popen(
        [sys.executable, str(script), redis_server.url, prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        cfg = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY)

        def fn(user_id: int) -> bool:
            return True

        # The child's function: the same module.qualname, so the same keys.
        fn.__module__, fn.__qualname__ = "__main__", "can_read"
        can_read = cached_authorization(redis=cfg)(fn)
        subscribed(cfg)
        started = time.perf_counter()
        can_read.invalidate(1)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "dropped"
        assert time.perf_counter() - started < 5
    finally:
        child.kill()
        child.communicate(timeout=10)  # also closes the pipes
