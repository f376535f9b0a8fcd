"""Bundles across instances sharing one Redis (README "OPA bundles"): decisions are shared only
between equal bundle revisions, and a reload message makes every instance poll now."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from regoguard import Authorizer, Bundle, RedisConfig

from ..test_bundles import BundleServer, bundle_files, tar_gz, write
from .conftest import RedisServer
from .test_redis import KEY, wait_for

pytestmark = pytest.mark.redis


def test_instances_on_different_bundle_revisions_never_share_decisions(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    same = write(tmp_path, bundle_files(["alice"], revision="r1"), "a.tar.gz")
    twin = write(tmp_path, bundle_files(["alice"], revision="r1"), "b.tar.gz")
    # Byte-identical policies and data under another manifest revision: still another revision.
    relabelled = write(tmp_path, bundle_files(["alice"], revision="r2"), "c.tar.gz")

    def authz(path: Path) -> tuple[Authorizer, RedisConfig]:
        cfg = RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY, decisions="always")
        return Authorizer(Bundle(path, name="authz"), redis=cfg), cfg

    a, cfg_a = authz(same)
    b, _ = authz(twin)
    c, _ = authz(relabelled)
    assert a.revision == b.revision != c.revision

    async def main() -> None:
        assert (await a.check_async({"user": "alice"})).source == "engine"
        wait_for(lambda: cfg_a.stats()["writes"] == 1)
        assert (await b.check_async({"user": "alice"})).source == "l2"
        assert (await c.check_async({"user": "alice"})).source == "engine"

    asyncio.run(main())


def test_a_reload_message_makes_every_instance_poll_now(
    redis_server: RedisServer, prefix: str
) -> None:
    server = BundleServer()
    try:
        server.versions = [tar_gz(bundle_files(["alice"], revision="r1"))]
        cfgs = [RedisConfig(redis_server.url, key_prefix=prefix, signing_key=KEY) for _ in "ab"]
        a, b = (
            Authorizer(
                Bundle(server.url, name="authz", poll_min_seconds=3600, poll_max_seconds=3600),
                redis=cfg,
            )
            for cfg in cfgs
        )
        wait_for(lambda: all(c.stats()["subscribed"] for c in cfgs))
        with server.lock:
            server.versions = [tar_gz(bundle_files(["bob"], revision="r2"))]
        a.reload()
        wait_for(lambda: b.bundles["authz"]["revision"] == "r2", timeout=10)
        wait_for(lambda: a.bundles["authz"]["revision"] == "r2", timeout=10)
        assert a.revision == b.revision
        assert b.check({"user": "bob"}).allow and not b.check({"user": "alice"}).allow
    finally:
        server.close()
