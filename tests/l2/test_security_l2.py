"""Attacks by someone who can read and write the shared Redis (issue 9, items 1, 2, 3, 4): each
tries to get a decision or result granted that must not be, and shows it fail.

What such an attacker can do (deny service: delete, flush, garble) is not tested here; what
they must not (grant, replay a revoked entry, roll data back) is.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from regoguard import Authorizer, RedisConfig, RegoGuardMiddleware, cached_authorization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ..test_security_cache import ADMIN_DOC, NOT_ADMIN_AREA
from .conftest import RedisServer, _read
from .test_redis import KEY, keys, wait_for

pytestmark = pytest.mark.redis


def config(server: RedisServer, prefix: str, **kwargs: Any) -> RedisConfig:
    """A fresh client: its own connection, counters and epoch memory, as a new process has."""
    return RedisConfig(server.url, key_prefix=prefix, signing_key=KEY, **kwargs)


# --- 1. Input forms through the L2 ----------------------------------------------------------


def test_l2_never_serves_one_input_form_to_the_other(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(NOT_ADMIN_AREA)

    def authz() -> tuple[Authorizer, RedisConfig]:
        cfg = config(redis_server, prefix, decisions="always")
        return Authorizer(folder, redis=cfg), cfg

    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    # The middleware's deny is shared first...
    worker, cfg_w = authz()
    with TestClient(
        RegoGuardMiddleware(Starlette(routes=[Route("/{p:path}", ok)]), authorizer=worker)
    ) as client:
        assert client.get("/admin").status_code == 403
    wait_for(lambda: cfg_w.stats()["writes"] == 1)
    # ...and a plain check of the same bytes elsewhere must not read it.
    other, cfg_o = authz()

    async def main() -> None:
        d = await other.check_async(ADMIN_DOC)
        assert d.allow and d.source == "engine", "the request's deny was read for a plain input"
        wait_for(lambda: cfg_o.stats()["writes"] == 1)
        # The plain allow, now in Redis, never reaches a request either.
        third, _ = authz()
        with TestClient(
            RegoGuardMiddleware(Starlette(routes=[Route("/{p:path}", ok)]), authorizer=third)
        ) as c:
            assert c.get("/admin").status_code == 403
        d = await third.check_async(ADMIN_DOC)
        assert d.allow and d.source == "l2", "the same form still shares"

    asyncio.run(main())
    assert len([k for k in keys(redis_server, f"{prefix}:d")]) == 2


# --- 2. Closures of one factory through Redis ----------------------------------------------

FACTORY = """
import regoguard

ROLES = {"bob": {"viewer"}}

def requires(role, cfg):
    @regoguard.cached_authorization(redis=cfg)
    def check(user: str) -> bool:
        return role in ROLES.get(user, set())
    return check
"""

CHILD = """
import sys, time
sys.path.insert(0, sys.argv[3])
import regoguard
from factory import requires

cfg = regoguard.RedisConfig(sys.argv[1], key_prefix=sys.argv[2], signing_key=b"0123456789abcdef-test-secret")
is_admin = requires("admin", cfg)
print(is_admin("bob"), cfg.stats()["hits"], flush=True)
"""


def test_closures_of_one_factory_never_share_redis_entries(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "factory.py").write_text(textwrap.dedent(FACTORY))
    (tmp_path / "child.py").write_text(textwrap.dedent(CHILD))
    sys.path.insert(0, str(tmp_path))
    try:
        from factory import requires  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    cfg = config(redis_server, prefix)
    is_viewer, is_admin = requires("viewer", cfg), requires("admin", cfg)
    assert is_viewer("bob") is True
    wait_for(lambda: cfg.stats()["writes"] == 1)
    assert is_admin("bob") is False, "the viewer's True was served to the admin check"
    assert cfg.stats()["hits"] == 0
    # A fresh process, the same factory, the same Redis.
    child = subprocess.run(
        [sys.executable, str(tmp_path / "child.py"), redis_server.url, prefix, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["False", "1"], (
        "the admin's own entry is shared, the viewer's is not"
    )
    # The same closure is still shared (equal identity in every process).
    again = config(redis_server, prefix)
    assert requires("viewer", again)("bob") is True and again.stats()["hits"] == 1


# --- 3. Replaying a revoked entry ------------------------------------------------------------

REPLAY_CHILD = """
import sys
import regoguard

cfg = regoguard.RedisConfig(sys.argv[1], key_prefix=sys.argv[2], signing_key=b"0123456789abcdef-test-secret")
calls = []

@regoguard.cached_authorization(redis=cfg, name="tests.can_read")
def can_read(user: str) -> bool:
    calls.append(user)
    return False  # what the source of truth says now

s = cfg.stats()
print(can_read("bob"), bool(calls), cfg.stats()["stale_entries"], cfg.stats()["hits"], flush=True)
"""


#: The source of truth of the functions below. Module state, not a closure cell: the
#: functions must have the same identity in every process (and before and after a change).
GRANTED: dict[str, bool] = {}
CALLS: list[str] = []


def _capture(server: RedisServer, prefix: str, space: str) -> tuple[bytes, bytes]:
    (key,) = keys(server, f"{prefix}:{space}")
    entry = server.command("GET", key)
    assert isinstance(entry, bytes)
    return key, entry


def test_a_revoked_entry_set_back_without_expiry_is_refused_by_a_fresh_process(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    cfg = config(redis_server, prefix)
    GRANTED.update(bob=True)

    @cached_authorization(redis=cfg, name="tests.can_read")
    def can_read(user: str) -> bool:
        return GRANTED[user]

    assert can_read("bob") is True
    wait_for(lambda: cfg.stats()["writes"] == 1)
    key, entry = _capture(redis_server, prefix, "r1")
    # Revoked: the source of truth changes and the result is invalidated everywhere.
    GRANTED["bob"] = False
    can_read.invalidate_all()
    assert redis_server.command("GET", key) is None
    # The attacker writes the saved bytes back, with no expiry at all.
    redis_server.command("SET", key, entry)
    assert redis_server.command("PTTL", key) == -1
    script = tmp_path / "replay.py"
    script.write_text(textwrap.dedent(REPLAY_CHILD))
    child = subprocess.run(
        [sys.executable, str(script), redis_server.url, prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["False", "True", "1", "0"], "replayed: " + child.stdout
    # This process refuses it too (it remembers the epoch it raised).
    redis_server.command("SET", key, entry)
    assert can_read("bob") is False


@pytest.mark.parametrize("how", ["key", "tag"])
def test_a_revoked_entry_is_refused_after_invalidating_its_key_or_tag(
    redis_server: RedisServer, prefix: str, how: str
) -> None:
    cfg = config(redis_server, prefix)
    GRANTED.update(bob=True, eve=True)

    def make(c: RedisConfig) -> Any:
        @cached_authorization(redis=c, name="tests.tagged", tags=lambda user: [f"user:{user}"])
        def can(user: str) -> bool:
            return GRANTED[user]

        return can

    can = make(cfg)
    assert can("bob") and can("eve")
    wait_for(lambda: cfg.stats()["writes"] == 2)
    saved = {k: redis_server.command("GET", k) for k in keys(redis_server, f"{prefix}:r1")}
    GRANTED["bob"] = False
    if how == "key":
        can.invalidate("bob")
    else:
        can.invalidate_tags(["user:bob"])
    for k, v in saved.items():
        redis_server.command("SET", k, v)
    fresh_cfg = config(redis_server, prefix)
    fresh = make(fresh_cfg)
    assert fresh("bob") is False, f"replayed after invalidating its {how}"
    assert fresh("eve") is True and fresh_cfg.stats()["hits"] == 1, "eve's entry was not revoked"
    assert fresh_cfg.stats()["stale_entries"] == 1


def test_an_entry_is_refused_after_its_sealed_expiry_whatever_redis_says(
    redis_server: RedisServer, prefix: str
) -> None:
    cfg = config(redis_server, prefix, ttl_seconds=0.3)

    @cached_authorization(redis=cfg, name="tests.short")
    def short(user: str) -> bool:
        CALLS.append(user)
        return True

    short("bob")
    wait_for(lambda: cfg.stats()["writes"] == 1)
    key, entry = _capture(redis_server, prefix, "r1")
    time.sleep(0.4)
    redis_server.command("SET", key, entry)  # no expiry
    late = config(redis_server, prefix, ttl_seconds=0.3)
    CALLS.clear()

    @cached_authorization(redis=late, name="tests.short")
    def short(user: str) -> bool:  # the same function, in a later process
        CALLS.append(user)
        return True

    short("bob")
    assert CALLS == ["bob"] and late.stats()["stale_entries"] == 1


def test_a_revoked_decision_is_refused(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(
        """
package authz

default allow := {"allow": false}

allow := {"allow": true, "tags": [sprintf("user:%s", [input.user])]} if input.user == "bob"
"""
    )

    def authz() -> tuple[Authorizer, RedisConfig]:
        cfg = config(redis_server, prefix, decisions="always")
        return Authorizer(folder, redis=cfg), cfg

    a, cfg_a = authz()

    async def main() -> None:
        assert (await a.check_async({"user": "bob"})).allow
        wait_for(lambda: cfg_a.stats()["writes"] == 1)
        key, entry = _capture(redis_server, prefix, "d")
        a.invalidate(tags=["user:bob"])
        redis_server.command("SET", key, entry)
        b, cfg_b = authz()
        d = await b.check_async({"user": "bob"})
        assert d.source == "engine", "a decision revoked by its tag was read back"
        assert cfg_b.stats()["stale_entries"] == 1
        redis_server.command("SET", key, entry)
        a.invalidate_all()
        redis_server.command("SET", key, entry)
        c, cfg_c = authz()
        assert (await c.check_async({"user": "bob"})).source == "engine"
        assert cfg_c.stats()["stale_entries"] == 1

    asyncio.run(main())


def test_a_result_computed_across_an_invalidation_is_not_shared(
    redis_server: RedisServer, prefix: str
) -> None:
    cfg = config(redis_server, prefix)
    # Another channel: the message of the invalidation never arrives here, so only the epochs
    # in Redis can tell the writer that its result is stale.
    other = config(redis_server, prefix, channel=f"{prefix}:elsewhere")
    started, release = threading.Event(), threading.Event()

    @cached_authorization(redis=cfg, name="tests.slow")
    def slow(user: str) -> bool:
        started.set()
        release.wait(5)
        return True  # computed from the state before the invalidation

    @cached_authorization(redis=other, name="tests.slow")
    def slow_elsewhere(user: str) -> bool:
        return False

    t = threading.Thread(target=slow, args=("bob",))
    t.start()
    assert started.wait(5)
    slow_elsewhere.invalidate_all()  # another instance revokes while bob is being computed
    release.set()
    t.join(5)
    wait_for(lambda: cfg.stats()["stale_writes"] == 1)
    assert keys(redis_server, f"{prefix}:r1") == [] and cfg.stats()["writes"] == 0
    assert slow_elsewhere("bob") is False, "the next reader computes"


# --- 4. Replaying pub/sub messages ------------------------------------------------------------


class Subscriber:
    """A raw subscriber (what an attacker on the network or with Redis access sees)."""

    def __init__(self, server: RedisServer, channel: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.messages: list[bytes] = []
        ch = channel.encode()
        self.sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(ch), ch))
        _read(self.file)  # the subscribe confirmation
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                reply = _read(self.file)
                # Heartbeats (one per instance per interval) are not what these tests replay.
                if (
                    isinstance(reply, list)
                    and reply[0] == b"message"
                    and b'"kind":"heartbeat"' not in reply[2]
                ):
                    self.messages.append(reply[2])
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sniffer(redis_server: RedisServer, prefix: str) -> Iterator[Subscriber]:
    s = Subscriber(redis_server, f"{prefix}:events")
    yield s
    s.close()


BOB_POLICY = """
package authz

default allow := false

allow if data.users[input.user]
"""


def test_a_replayed_set_data_never_rolls_an_instance_back(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path], sniffer: Subscriber
) -> None:
    folder = policy_dir(BOB_POLICY)
    cfg_admin, cfg_worker = config(redis_server, prefix), config(redis_server, prefix)
    admin = Authorizer(folder, data={"users": {}}, redis=cfg_admin)
    worker = Authorizer(folder, data={"users": {}}, redis=cfg_worker)
    wait_for(lambda: cfg_admin.stats()["subscribed"] and cfg_worker.stats()["subscribed"])
    bob = {"user": "bob"}
    admin.set_data("users/bob", True)
    wait_for(lambda: worker.revision == admin.revision)
    assert worker.check(bob).allow
    wait_for(lambda: len(sniffer.messages) == 1)
    grant = sniffer.messages[0]
    admin.set_data("users/bob", False)  # revoked
    wait_for(lambda: worker.revision == admin.revision)
    assert not worker.check(bob).allow
    revoked = worker.revision
    rejected = cfg_worker.stats()["messages_rejected"]
    # The attacker re-publishes the captured, validly signed grant.
    assert redis_server.command("PUBLISH", f"{prefix}:events", grant) >= 2
    wait_for(lambda: cfg_worker.stats()["messages_rejected"] == rejected + 1)
    time.sleep(0.1)  # a set_data applies on a blocking thread: give a wrong one time to land
    assert worker.revision == revoked and admin.revision == revoked
    assert not worker.check(bob).allow and not admin.check(bob).allow
    # A second replay of the newest message is a duplicate too.
    redis_server.command("PUBLISH", f"{prefix}:events", sniffer.messages[-1])
    wait_for(lambda: cfg_worker.stats()["messages_rejected"] == rejected + 2)


def test_a_replayed_invalidation_is_counted_and_ignored(
    redis_server: RedisServer, prefix: str, sniffer: Subscriber
) -> None:
    cfg_a, cfg_b = config(redis_server, prefix), config(redis_server, prefix)

    def make(c: RedisConfig) -> Any:
        @cached_authorization(redis=c, name="tests.inv")
        def f(x: int) -> bool:
            return True

        return f

    a, b = make(cfg_a), make(cfg_b)
    wait_for(lambda: cfg_a.stats()["subscribed"] and cfg_b.stats()["subscribed"])
    a.invalidate_all()
    wait_for(lambda: cfg_b.stats()["messages_received"] == 1)
    b(1)
    wait_for(lambda: len(sniffer.messages) == 1)
    redis_server.command("PUBLISH", f"{prefix}:events", sniffer.messages[0])
    wait_for(lambda: cfg_b.stats()["messages_rejected"] == 1)
    assert b.cache_info().entries == 1, "a replayed invalidation still dropped L1"


def test_every_config_of_a_process_is_its_own_sender(
    redis_server: RedisServer, prefix: str
) -> None:
    # The replay check must not mistake two configs' first messages for one message twice.
    cfgs = [config(redis_server, prefix) for _ in range(3)]

    def make(c: RedisConfig) -> Any:
        @cached_authorization(redis=c, name="tests.senders")
        def f(x: int) -> bool:
            return True

        return f

    fns = [make(c) for c in cfgs]
    wait_for(lambda: all(c.stats()["subscribed"] for c in cfgs))
    fns[0].invalidate_all()
    fns[1].invalidate_all()
    wait_for(lambda: cfgs[2].stats()["messages_received"] == 2)
    assert cfgs[2].stats()["messages_rejected"] == 0
