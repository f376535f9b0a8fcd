"""The Redis L2 against a real redis-server (see conftest.py): sharing, promotion, TTLs,
signing, revisions, failures, two OS processes and clean exits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regoguard
from regoguard import Authorizer, ConfigError, RedisConfig, cached_authorization

from .conftest import RedisServer, free_port

pytestmark = pytest.mark.redis

KEY = b"0123456789abcdef-test-secret"
POLICY = """
package authz

default allow := false

allow if input.user == "alice"
"""


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def make_shared(cfg: RedisConfig, result: Any = True, **kwargs: Any) -> tuple[Any, list[int]]:
    """A decorated function of a fixed qualname (as a second process would define it) and the
    list of the user ids it was called with. ``result`` may have no JSON form, so the key space
    is named (every call of this helper stands for the same function)."""
    calls: list[int] = []

    @cached_authorization(redis=cfg, name="tests.l2.can_read", **kwargs)
    def can_read(user_id: int) -> Any:
        calls.append(user_id)
        return result

    return can_read, calls


def keys(server: RedisServer, prefix: str) -> list[bytes]:
    found: list[bytes] = server.command("KEYS", f"{prefix}:*")
    return found


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("http://localhost",), {}),
        (("not a url",), {}),
        (("redis://localhost",), {"ttl_seconds": 0.0}),
        (("redis://localhost",), {"ttl_seconds": float("nan")}),
        (("redis://localhost",), {"timeout_seconds": 0.0}),
        (("redis://localhost",), {"timeout_seconds": -1.0}),
        (("redis://localhost",), {"timeout_seconds": 61.0}),
        (("redis://localhost",), {"key_prefix": ""}),
        (("redis://localhost",), {"key_prefix": "a b"}),
        (("redis://localhost",), {"signing_key": b"short"}),
        (("redis://localhost",), {"signing_key": 12345}),
        (("redis://localhost",), {"channel": ""}),
        (("redis://localhost",), {"decisions": "sometimes"}),
        ((42,), {}),
    ],
)
def test_bad_config_is_a_config_error(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RedisConfig(*args, **kwargs)


def test_config_defaults_and_repr_hide_the_key() -> None:
    cfg = RedisConfig("redis://localhost:6379/0", signing_key="a-secret-of-16-bytes+")
    assert (cfg.ttl_seconds, cfg.timeout_seconds, cfg.key_prefix) == (300.0, 0.05, "regoguard")
    assert (cfg.channel, cfg.decisions, cfg.signed) == ("regoguard:events", "auto", True)
    assert "a-secret" not in repr(cfg)
    assert regoguard.RedisConfig is RedisConfig
    assert cfg.stats()["hits"] == 0


def test_authorizer_needs_a_signing_key(policy_dir: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match="signing_key"):
        Authorizer(policy_dir(POLICY), redis=RedisConfig("redis://localhost"))
    with pytest.raises(ConfigError):
        Authorizer(policy_dir(POLICY), redis="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        cached_authorization(redis="redis://localhost")  # type: ignore[arg-type]


# -- decorated functions ---------------------------------------------------------------------


def test_sync_result_is_shared_and_promoted_with_the_remaining_ttl(
    redis_server: RedisServer, prefix: str
) -> None:
    cfg_a = RedisConfig(redis_server.url, key_prefix=prefix)
    cfg_b = RedisConfig(redis_server.url, key_prefix=prefix)
    a, calls_a = make_shared(cfg_a, {"allow": True, "roles": ["x"]})
    b, calls_b = make_shared(cfg_b, {"allow": True, "roles": ["x"]})
    assert a(1) == {"allow": True, "roles": ["x"]}
    wait_for(lambda: cfg_a.stats()["writes"] == 1)
    (key,) = keys(redis_server, f"{prefix}:r1")
    assert 299_000 < redis_server.command("PTTL", key) <= 300_000
    # Another instance gets it from Redis without calling its function.
    assert b(1) == {"allow": True, "roles": ["x"]}
    assert calls_b == [] and cfg_b.stats()["hits"] == 1
    assert b.cache_info().entries == 1
    assert (b.cache_info().hits, b.cache_info().misses) == (1, 0), "answered without a call"
    # Promotion keeps the remaining TTL: shorten it in Redis, and a fresh instance's L1 entry
    # expires with it.
    redis_server.command("PEXPIRE", key, 300)
    c, calls_c = make_shared(
        RedisConfig(redis_server.url, key_prefix=prefix), {"allow": True, "roles": ["x"]}
    )
    c(1)
    assert calls_c == []
    time.sleep(0.4)
    c(1)
    assert calls_c == [1], "the promoted entry expired with its Redis TTL"
    assert calls_a == [1]


def test_l2_ttl_is_capped_by_the_l1_ttl(redis_server: RedisServer, prefix: str) -> None:
    cfg = RedisConfig(redis_server.url, key_prefix=prefix, ttl_seconds=300.0)
    f, _ = make_shared(cfg, False, ttl_seconds=60.0, deny_ttl_seconds=5.0)
    f(1)
    wait_for(lambda: cfg.stats()["writes"] == 1)
    (key,) = keys(redis_server, f"{prefix}:r1")
    assert 0 < redis_server.command("PTTL", key) <= 5000
    g, _ = make_shared(cfg, False, deny_ttl_seconds=0.0)
    g(2)
    time.sleep(0.05)
    assert cfg.stats()["writes"] == 1, "never cached in L1: never shared"


def test_async_result_is_shared_without_blocking(redis_server: RedisServer, prefix: str) -> None:
    cfg_a = RedisConfig(redis_server.url, key_prefix=prefix)
    cfg_b = RedisConfig(redis_server.url, key_prefix=prefix)

    def make(cfg: RedisConfig) -> tuple[Any, list[int]]:
        calls: list[int] = []

        @cached_authorization(redis=cfg, tags=lambda user_id: [f"user:{user_id}"])
        async def can_write(user_id: int) -> bool:
            calls.append(user_id)
            await asyncio.sleep(0.001)
            return True

        return can_write, calls

    a, calls_a = make(cfg_a)
    b, calls_b = make(cfg_b)

    async def main() -> None:
        assert await a(7) is True
        wait_for(lambda: cfg_a.stats()["writes"] == 1)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.ensure_future(ticker())
        results = await asyncio.gather(*(b(7) for _ in range(5)))
        t.cancel()
        assert results == [True] * 5
        assert calls_b == [], "served from Redis"
        assert ticks > 0, "the loop kept running while Redis was read"
        # Tag invalidation deletes the shared entry too.
        a.invalidate_tags(["user:7"])
        b.invalidate_tags(["user:7"])
        assert keys(redis_server, f"{prefix}:r1") == []
        assert await b(7) is True
        assert calls_b == [7]

    asyncio.run(main())
    assert calls_a == [7]
    assert cfg_b.stats()["hits"] == 1, "one read for five concurrent callers (single flight)"


def test_unshareable_results_stay_l1_only(redis_server: RedisServer, prefix: str) -> None:
    cfg = RedisConfig(redis_server.url, key_prefix=prefix)
    marker = object()
    f, calls = make_shared(cfg, marker)
    assert f(1) is marker and f(1) is marker
    assert calls == [1]
    assert cfg.stats()["unshareable"] == 1 and cfg.stats()["writes"] == 0


def test_invalidate_deletes_from_redis(redis_server: RedisServer, prefix: str) -> None:
    cfg = RedisConfig(redis_server.url, key_prefix=prefix)
    a, _ = make_shared(cfg)
    a(1), a(2)
    wait_for(lambda: cfg.stats()["writes"] == 2)
    assert a.invalidate(1) is True
    assert len(keys(redis_server, f"{prefix}:r1")) == 1
    a.invalidate_all()
    assert keys(redis_server, f"{prefix}:r1") == []
    b, calls_b = make_shared(RedisConfig(redis_server.url, key_prefix=prefix))
    b(2)
    assert calls_b == [2]


def test_signed_entries_and_a_forged_one(redis_server: RedisServer, prefix: str) -> None:
    signed = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY)
    a, _ = make_shared(signed, True)
    a(1)
    wait_for(lambda: signed.stats()["writes"] == 1)
    (key,) = keys(redis_server, f"{prefix}:r1")
    entry = redis_server.command("GET", key)
    # Forge: same layout, a value of the attacker's choosing, the old signature.
    forged = entry.replace(b'"v":true', b'"v":"root"')
    assert forged != entry
    redis_server.command("SET", key, forged)
    checker = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY)
    b, calls_b = make_shared(checker, True)
    assert b(1) is True and calls_b == [1], "a forged entry is a miss"
    assert checker.stats()["bad_entries"] == 1
    # Readers with another key, or none, do not accept signed entries either.
    redis_server.command("SET", key, entry)
    other = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=b"another-secret-16+bytes")
    c, calls_c = make_shared(other, True)
    c(1)
    assert calls_c == [1] and other.stats()["bad_entries"] == 1
    redis_server.command("SET", key, entry)
    plain = RedisConfig(redis_server.url, key_prefix=prefix)
    d, calls_d = make_shared(plain, True)
    d(1)
    assert calls_d == [1] and plain.stats()["bad_entries"] == 1
    # Garbage is a miss too.
    redis_server.command("SET", key, b"\x00garbage")
    e, calls_e = make_shared(
        RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY), True
    )
    e(1)
    assert calls_e == [1]


# -- the Authorizer --------------------------------------------------------------------------


def test_decisions_are_shared_per_revision(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(POLICY)

    def authz(data: dict[str, Any] | None = None) -> tuple[Authorizer, RedisConfig]:
        cfg = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY, decisions="always")
        return Authorizer(folder, data=data, redis=cfg), cfg

    a, cfg_a = authz()
    b, _ = authz()
    other, _ = authz({"x": 1})
    assert a.revision == b.revision != other.revision

    async def main() -> None:
        d = await a.check_async({"user": "alice"})
        assert d.allow and d.source == "engine"
        wait_for(lambda: cfg_a.stats()["writes"] == 1)
        d = await b.check_async({"user": "alice"})
        assert d.allow and d.source == "l2"
        d = await b.check_async({"user": "alice"})
        assert d.source == "l1", "promoted"
        d = await other.check_async({"user": "alice"})
        assert d.source == "engine", "another revision never sees it"
        # A deny is shared too.
        assert not (await a.check_async({"user": "bob"})).allow
        wait_for(lambda: cfg_a.stats()["writes"] == 2)
        d = await b.check_async({"user": "bob"})
        assert not d.allow and d.source == "l2"

    asyncio.run(main())
    assert b.stats()["l2"]["hits"] == 2
    # The authorizer's own counters and exposition see the L2 answers too.
    s = b.stats()
    assert (s["l2_hits"], s["decision_seconds"]["l2"]["count"]) == (2, 2)
    assert s["l2_misses"] == 0 and other.stats()["l2_misses"] == 1
    assert 'regoguard_cache_hits_total{layer="l2"} 2' in b.metrics_text()
    assert "regoguard_l2_errors_total 0" in b.metrics_text()
    assert all(
        k.startswith(f"{prefix}:d:".encode()) or b":t:" in k for k in keys(redis_server, prefix)
    )


def test_check_async_without_redis_is_check(policy_dir: Callable[..., Path]) -> None:
    a = Authorizer(policy_dir(POLICY))

    async def main() -> None:
        d = await a.check_async({"user": "alice"})
        assert d.allow and d.source == "engine"
        d = await a.check_async({"user": "alice"})
        assert d.source == "l1"
        assert not (await a.check_async({"user": "bob"}, entrypoint="data.authz.allow")).allow

    asyncio.run(main())
    assert "l2" not in a.stats()


def test_sync_check_never_waits_for_redis(
    own_redis: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    cfg = RedisConfig(own_redis.url, key_prefix=prefix, signing_key=KEY, decisions="always")
    a = Authorizer(policy_dir(POLICY), redis=cfg)
    own_redis.command("CLIENT", "PAUSE", "1000", "ALL")
    started = time.perf_counter()
    for i in range(50):
        assert a.check({"user": "alice", "i": i}).allow
    assert time.perf_counter() - started < 0.5


def test_auto_policy_skips_redis_for_cheap_evaluations(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    cfg = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY)
    a = Authorizer(policy_dir(POLICY), redis=cfg)

    async def main() -> None:
        for i in range(20):
            d = await a.check_async({"user": "alice", "i": i})
            assert d.source == "engine"
        assert (await a.check_async({"user": "alice", "i": 0})).source == "l1"

    asyncio.run(main())
    assert cfg.stats()["hits"] + cfg.stats()["misses"] == 0, "an evaluation is cheaper than Redis"


# -- failures --------------------------------------------------------------------------------


def test_redis_absent_at_startup_then_appearing(
    prefix: str, policy_dir: Callable[..., Path]
) -> None:
    server = RedisServer(free_port())
    cfg = RedisConfig(server.url, key_prefix=prefix, signing_key=KEY, decisions="always")
    f, calls = make_shared(cfg)
    a = Authorizer(policy_dir(POLICY), redis=cfg)

    async def checks(n: int) -> None:
        for i in range(n):
            started = time.perf_counter()
            assert (await a.check_async({"user": "alice", "n": n, "i": i})).allow
            assert time.perf_counter() - started < 0.2

    for i in range(20):
        started = time.perf_counter()
        assert f(i) is True
        assert time.perf_counter() - started < 0.2
    asyncio.run(checks(20))
    assert len(calls) == 20
    stats = cfg.stats()
    assert stats["errors"] >= 1 and stats["skipped"] >= 1 and stats["healthy"] is False
    server.start()
    try:
        # Reconnects after the backoff (at most 5 s) on its own.
        def shares() -> bool:
            f(len(calls) + 1000)
            return cfg.stats()["writes"] > 0

        wait_for(shares, timeout=15)
        assert cfg.stats()["healthy"] is True
    finally:
        server.stop()


def test_redis_killed_during_load(
    own_redis: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    cfg = RedisConfig(own_redis.url, key_prefix=prefix, signing_key=KEY, decisions="always")
    f, _ = make_shared(cfg)
    a = Authorizer(policy_dir(POLICY), redis=cfg)
    worst: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = time.perf_counter()
            try:
                assert f(n * 1_000_000 + i) is True
                assert a.check({"user": "alice", "n": n, "i": i}).allow
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
            worst.append(time.perf_counter() - started)

    async def async_load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            started = time.perf_counter()
            d = await a.check_async({"user": "alice", "async": i})
            assert d.allow
            worst.append(time.perf_counter() - started)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(2)]
    aio = threading.Thread(target=lambda: asyncio.run(async_load()))
    for t in [*threads, aio]:
        t.start()
    time.sleep(0.5)
    own_redis.kill()
    time.sleep(1.0)
    stop.set()
    for t in [*threads, aio]:
        t.join(timeout=10)
    assert errors == []
    assert cfg.stats()["errors"] >= 1
    # Bounded by the timeout (0.05 s) plus scheduling on two shared cores.
    assert max(worst) < 0.25, max(worst)


def test_client_pause_is_bounded_by_the_timeout(own_redis: RedisServer, prefix: str) -> None:
    cfg = RedisConfig(own_redis.url, key_prefix=prefix, timeout_seconds=0.05)
    f, calls = make_shared(cfg)
    f(0)  # connected
    own_redis.command("CLIENT", "PAUSE", "3000", "ALL")
    started = time.perf_counter()
    assert f(1) is True
    took = time.perf_counter() - started
    assert took < 0.3, took
    assert calls == [0, 1]
    assert cfg.stats()["errors"] >= 1

    async def main() -> float:
        @cached_authorization(redis=cfg)
        async def g(x: int) -> bool:
            return True

        started = time.perf_counter()
        assert await g(1) is True
        return time.perf_counter() - started

    assert asyncio.run(main()) < 0.3


# -- processes -------------------------------------------------------------------------------

CHILD = """
import asyncio, sys
import regoguard

url, prefix, policies, action = sys.argv[1:5]
cfg = regoguard.RedisConfig(url, key_prefix=prefix, signing_key=b"0123456789abcdef-test-secret",
                            decisions="always")
calls = []

@regoguard.cached_authorization(redis=cfg)
def can_read(user_id: int) -> bool:
    calls.append(user_id)
    return True

authz = regoguard.Authorizer(policies, redis=cfg)

async def main() -> None:
    d = await authz.check_async({"user": "alice"})
    r = can_read(1)
    if action == "invalidate":
        can_read.invalidate(1)
        authz.invalidate_all()
    print(d.source, "called" if calls else "shared", r)

asyncio.run(main())
"""


def run_child(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_two_processes_share_one_redis(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path], tmp_path: Path
) -> None:
    folder = str(policy_dir(POLICY))
    first = run_child(tmp_path, redis_server.url, prefix, folder, "read")
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ["engine", "called", "True"]
    second = run_child(tmp_path, redis_server.url, prefix, folder, "invalidate")
    assert second.returncode == 0, second.stderr
    assert second.stdout.split() == ["l2", "shared", "True"], "computed in the other process"
    third = run_child(tmp_path, redis_server.url, prefix, folder, "read")
    assert third.stdout.split()[1] == "called", "the invalidation in the second reached Redis"


EXIT_SCRIPT = """
import asyncio, sys
import regoguard

cfg = regoguard.RedisConfig(sys.argv[1], key_prefix=sys.argv[2], signing_key=b"0123456789abcdef-test-secret",
                            decisions="always")

@regoguard.cached_authorization(redis=cfg)
async def can(x: int) -> bool:
    return True

authz = regoguard.Authorizer(sys.argv[3], redis=cfg)

async def main() -> None:
    await asyncio.gather(*(can(i) for i in range(20)))
    await asyncio.gather(*(authz.check_async({"user": "alice", "i": i}) for i in range(20)))
    # Leave reads in flight at exit on purpose.
    asyncio.ensure_future(can(999))

asyncio.run(main())
"""


def test_interpreter_exit_is_clean(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path], tmp_path: Path
) -> None:
    script = tmp_path / "exit.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    folder = str(policy_dir(POLICY))
    cmd = [sys.executable, str(script), redis_server.url, prefix, folder]
    codes: list[int] = []
    for _ in range(5):
        batch = [subprocess.Popen(cmd, stderr=subprocess.PIPE) for _ in range(4)]
        for p in batch:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err.decode()
            codes.append(p.returncode)
    assert codes == [0] * 20


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_uses_its_own_runtime_and_connection(
    redis_server: RedisServer, prefix: str
) -> None:
    """A pre-forking server may build the L2 before fork(): the child's L2 still works."""
    cfg = RedisConfig(redis_server.url, key_prefix=prefix)
    f, _ = make_shared(cfg, True)
    f(1)
    wait_for(lambda: cfg.stats()["writes"] == 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 3
        try:
            f(2)  # computed here, written by the child's own runtime
            deadline = time.monotonic() + 5
            while cfg.stats()["writes"] < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            code = 0 if cfg.stats()["writes"] == 2 else 4
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    g, calls = make_shared(RedisConfig(redis_server.url, key_prefix=prefix), True)
    g(2)
    assert calls == [], "the child's write reached Redis"
    f(3)
    wait_for(lambda: cfg.stats()["writes"] == 2, timeout=5)


SLOW_POLICY = """
package authz

default allow := false

allow if {
    count([x | some x in data.items; x >= 0]) > 0
    input.user == "alice"
}
"""


def test_auto_policy_uses_redis_for_slow_evaluations(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(SLOW_POLICY)
    data = {"items": list(range(100_000))}

    def make() -> tuple[Authorizer, RedisConfig]:
        cfg = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY)
        return Authorizer(folder, data=data, redis=cfg, eval_timeout_seconds=5.0), cfg

    a, cfg_a = make()
    b, cfg_b = make()

    async def main() -> None:
        assert (await a.check_async({"user": "alice", "i": 1})).source == "engine"
        wait_for(lambda: cfg_a.stats()["writes"] == 1)
        # b has not measured a miss yet: it evaluates once, learns that misses are slow...
        assert (await b.check_async({"user": "alice", "i": 2})).source == "engine"
        # ... and from then on asks Redis first.
        d = await b.check_async({"user": "alice", "i": 1})
        assert d.allow and d.source == "l2"

    asyncio.run(main())
    assert cfg_b.stats()["hits"] == 1
