"""The core's one decision pipeline behind every entry point (ARCHITECTURE.md, "A request's way
through the code"): ``check``, ``check_many`` and ``check_async`` share one L1 and one L2
policy, and an answer from Redis is only ever one this revision sealed and signed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from regoguard import Authorizer, RedisConfig

from .conftest import RedisServer
from .test_redis import KEY, POLICY, wait_for

pytestmark = pytest.mark.redis


def test_every_entry_point_shares_through_one_pipeline(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(POLICY)

    def authz() -> tuple[Authorizer, RedisConfig]:
        cfg = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY, decisions="always")
        return Authorizer(folder, redis=cfg), cfg

    a, cfg_a = authz()
    b, _ = authz()
    # check_many's evaluations are written back like check's.
    many = a.check_many([{"user": "alice"}, {"user": "bob"}])
    assert [(d.allow, d.source) for d in many] == [(True, "engine"), (False, "engine")]
    wait_for(lambda: cfg_a.stats()["writes"] == 2)
    assert a.check({"user": "bob"}).source == "l1"

    async def main() -> None:
        for user, allow in (("alice", True), ("bob", False)):
            d = await b.check_async({"user": user})
            assert (d.allow, d.source) == (allow, "l2")
            d = await b.check_async({"user": user})
            assert d.source == "l1", "promoted"

    asyncio.run(main())
    assert b.check_many([{"user": "alice"}])[0].source == "l1"
    assert b.stats()["l2_hits"] == 2


def test_an_invalidation_reaches_what_check_many_shared(
    redis_server: RedisServer, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    folder = policy_dir(POLICY)

    def cfg() -> RedisConfig:
        return RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY, decisions="always")

    cfg_a = cfg()
    a, b = Authorizer(folder, redis=cfg_a), Authorizer(folder, redis=cfg())
    a.check_many([{"user": "alice"}])
    wait_for(lambda: cfg_a.stats()["writes"] == 1)
    a.invalidate_all()

    async def main() -> None:
        d = await b.check_async({"user": "alice"})
        assert d.source == "engine", "a revoked shared decision is never served"
        assert (await b.check_async({"user": "alice"})).source == "l1"

    asyncio.run(main())
