"""Production Redis: TLS (a test CA, a client certificate), a 3-node Cluster, a Sentinel, and
the subscription heartbeat, each against real servers started here (see production.py).

In each mode two OS processes share a decision and an invalidation; TLS with the wrong CA or
without TLS fails with a clear warning (never a plaintext retry); a forged heartbeat is
ignored; a partition that keeps the connection open but stops delivery drops the L1."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from regoguard import Authorizer, ConfigError, RedisConfig, cached_authorization

from .conftest import RedisServer
from .production import Cluster, Proxy, Sentinel, TestCA, TlsServer
from .test_redis import KEY, POLICY, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    server = TlsServer(tmp_path_factory.mktemp("tls"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinel]:
    s = Sentinel(tmp_path_factory.mktemp("sentinel"))
    yield s
    s.stop()


def shared(cfg: RedisConfig) -> tuple[Any, list[int]]:
    calls: list[int] = []

    @cached_authorization(redis=cfg, name="tests.l2.production", tags=lambda user_id: ["t"])
    def can_read(user_id: int) -> bool:
        calls.append(user_id)
        return True

    return can_read, calls


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("redis://h:1", {"tls_insecure": True}, "TLS URL"),
        ("redis+cluster://h:1", {"ca_file": __file__}, "PEM|TLS URL"),
        ("rediss://h:1", {"ca_file": "/nonexistent/ca.pem"}, "cannot be read"),
        ("rediss://h:1", {"ca_file": __file__}, "no PEM"),
        ("rediss://h:1", {"cert_file": __file__}, "go together"),
        ("redis+cluster://h", {}, "host:port"),
        ("redis+cluster://h:1/2", {}, "database 0"),
        ("redis+sentinel://h:1", {}, "master"),
        ("redis+sentinel://h:1/m/x", {}, "database"),
        ("redis://h:1", {"heartbeat_seconds": -1.0}, "heartbeat_seconds"),
        ("redis://h:1", {"heartbeat_seconds": float("nan")}, "heartbeat_seconds"),
        ("redis://h:1", {"heartbeat_misses": 0}, "heartbeat_misses"),
    ],
)
def test_bad_production_config_is_a_config_error(
    url: str, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        RedisConfig(url, **kwargs)


def test_a_key_file_without_a_key_is_a_config_error(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert, _ = ca.issue("client", server=False)
    with pytest.raises(ConfigError, match="private key"):
        RedisConfig("rediss://h:1", cert_file=cert, key_file=cert)
    with pytest.raises(ConfigError, match="cannot be read"):
        RedisConfig("rediss://h:1", cert_file=cert, key_file=tmp_path / "missing.pem")


def test_production_config_defaults() -> None:
    cfg = RedisConfig("redis://:hunter2@localhost:6379/0")
    assert (cfg.heartbeat_seconds, cfg.heartbeat_misses, cfg.tls) == (5.0, 3, False)
    assert RedisConfig("redis://localhost", heartbeat_seconds=0).heartbeat_seconds == 0.0
    secure = RedisConfig("rediss+sentinel://:hunter2@a:1,b:2/m/1", tls_insecure=True)
    assert secure.tls and secure.tls_insecure
    assert "hunter2" not in repr(secure) and "hunter2" not in secure.url
    with pytest.raises(ConfigError) as e:
        RedisConfig("redis+sentinel://:hunter2@a:1/m/x")
    assert "hunter2" not in str(e.value)


# -- two OS processes in every mode ----------------------------------------------------------

CHILD = """
import json, sys, time
import regoguard

url, prefix, kwargs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = regoguard.RedisConfig(url, key_prefix=prefix, signing_key=b"0123456789abcdef-test-secret",
                            timeout_seconds=1.0, **kwargs)

@regoguard.cached_authorization(redis=cfg, name="tests.l2.production", tags=lambda user_id: ["t"])
def can_read(user_id: int) -> bool:
    return True

deadline = time.monotonic() + 10
while not cfg.stats()["subscribed"] and time.monotonic() < deadline:
    time.sleep(0.005)
can_read(1)
while cfg.stats()["writes"] < 1 and time.monotonic() < deadline:
    time.sleep(0.005)
print("ready" if cfg.stats()["writes"] == 1 else f"not written {cfg.stats()}", flush=True)
sys.stdin.readline()  # the parent invalidated
deadline = time.monotonic() + 10
while can_read.cache_info().entries and time.monotonic() < deadline:
    time.sleep(0.001)
print("dropped" if not can_read.cache_info().entries else "kept", flush=True)
"""


PARENT_CALLS: list[int] = []


def parent_can_read(user_id: int) -> bool:
    """The child's function as this process defines it: no closure (a closure cell would be
    part of the function's identity, so of its key space)."""
    PARENT_CALLS.append(user_id)
    return True


def two_processes(url: str, kwargs: dict[str, Any], prefix: str, tmp_path: Path) -> RedisConfig:
    """A child process computes and shares a decision; this one is served it from Redis,
    then invalidates its tag, and the child's L1 drops it."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    kwargs = {**kwargs, "heartbeat_seconds": 0.2}
    child = subprocess.Popen(
        [sys.executable, str(script), url, prefix, json.dumps(kwargs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        cfg = RedisConfig(url, key_prefix=prefix, signing_key=KEY, timeout_seconds=1.0, **kwargs)
        can_read = cached_authorization(
            redis=cfg, name="tests.l2.production", tags=lambda user_id: ["t"]
        )(parent_can_read)
        calls = PARENT_CALLS
        calls.clear()
        wait_for(lambda: cfg.stats()["subscribed"])
        assert can_read(1) is True
        assert calls == [], "served from Redis, computed by the other process"
        assert cfg.stats()["hits"] == 1
        can_read.invalidate_tags(["t"])
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "dropped"
        # Heartbeats go round in every mode (this process's own and the child's).
        wait_for(lambda: cfg.stats()["heartbeats_received"] >= 2)
        # And the shared entry is revoked: this process computes it again.
        can_read.invalidate_all()
        assert can_read(1) is True and calls == [1]
        return cfg
    finally:
        child.kill()
        child.communicate(timeout=10)


def test_tls_two_processes(tls_server: TlsServer, prefix: str, tmp_path: Path) -> None:
    assert tls_server.tls_command("PING") == "PONG"
    cfg = two_processes(tls_server.url, tls_server.tls_kwargs(), prefix, tmp_path)
    assert cfg.tls and cfg.stats()["errors"] == 0
    assert tls_server.proc.command("KEYS", f"{prefix}:*"), "written through the TLS port"


def _fails_with(cfg: RedisConfig, caplog: pytest.LogCaptureFixture, match: str) -> None:
    f, calls = shared(cfg)
    with caplog.at_level(logging.WARNING, logger="regoguard"):
        assert f(1) is True and calls == [1], "decided without Redis"
    stats = cfg.stats()
    assert stats["errors"] >= 1 and stats["hits"] == 0 and not stats["healthy"]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert any(m in messages for m in match.split("|")), messages


def test_tls_with_the_wrong_ca_fails_clearly(
    tls_server: TlsServer, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = TestCA(tmp_path / "other", "some other CA")
    kwargs = {**tls_server.tls_kwargs(), "ca_file": str(other.ca_file)}
    cfg = RedisConfig(tls_server.url, key_prefix=prefix, timeout_seconds=1.0, **kwargs)
    _fails_with(cfg, caplog, "certificate|UnknownIssuer|invalid peer")


def test_tls_without_a_client_certificate_fails(
    tls_server: TlsServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = RedisConfig(
        tls_server.url, key_prefix=prefix, timeout_seconds=1.0, ca_file=str(tls_server.ca.ca_file)
    )
    _fails_with(cfg, caplog, "CertificateRequired")


def test_plaintext_on_the_tls_port_is_not_tried(
    tls_server: TlsServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = tls_server.url.replace("rediss://", "redis://")
    cfg = RedisConfig(url, key_prefix=prefix, timeout_seconds=0.5)
    _fails_with(cfg, caplog, "cannot subscribe|failed")


def test_cluster_two_processes(cluster: Cluster, prefix: str, tmp_path: Path) -> None:
    two_processes(cluster.url, {}, prefix, tmp_path)
    assert cluster.keys(f"{prefix}:*"), "entries and epochs live on the cluster"


def test_cluster_spreads_keys_and_invalidates_everywhere(
    cluster: Cluster, prefix: str, policy_dir: Callable[..., Path]
) -> None:
    cfg = RedisConfig(cluster.url, key_prefix=prefix, signing_key=KEY, timeout_seconds=1.0)
    f, _ = shared(cfg)
    for i in range(30):
        f(i)
    wait_for(lambda: cfg.stats()["writes"] == 30)
    holding = [n for n in cluster.nodes if n.command("KEYS", f"{prefix}:r1:*")]
    assert len(holding) > 1, "no hash tag: one space is spread over the primaries"
    # invalidate_all SCANs every primary.
    f.invalidate_all()
    wait_for(lambda: not cluster.keys(f"{prefix}:r1:*"))
    assert cfg.stats()["errors"] == 0
    # The authorizer's decisions, tag invalidations (one epoch script per key) included.
    folder = policy_dir(POLICY)
    cfg_a, cfg_b = (
        RedisConfig(
            cluster.url, key_prefix=prefix, signing_key=KEY, timeout_seconds=1.0, decisions="always"
        )
        for _ in range(2)
    )
    a, b = Authorizer(folder, redis=cfg_a), Authorizer(folder, redis=cfg_b)

    async def main() -> None:
        assert (await a.check_async({"user": "alice"})).source == "engine"
        wait_for(lambda: cfg_a.stats()["writes"] == 1)
        d = await b.check_async({"user": "alice"})
        assert d.allow and d.source == "l2"

    asyncio.run(main())
    a.invalidate(tags=["x", "y"])
    a.invalidate_all()
    assert cfg_a.stats()["errors"] == 0 and cfg_b.stats()["errors"] == 0


def test_tls_cluster_two_processes(
    tmp_path_factory: pytest.TempPathFactory, prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path_factory.mktemp("tls-cluster")
    c = Cluster(folder, TestCA(folder / "ca"))
    try:
        kwargs = {
            "ca_file": str(c.ca.ca_file) if c.ca else None,
            "cert_file": str(c.client_cert),
            "key_file": str(c.client_key),
        }
        two_processes(c.url, kwargs, prefix, tmp_path)
        assert c.keys(f"{prefix}:*")
    finally:
        c.stop()


def test_sentinel_two_processes(sentinel: Sentinel, prefix: str, tmp_path: Path) -> None:
    two_processes(sentinel.url, {}, prefix, tmp_path)
    assert sentinel.master.command("KEYS", f"{prefix}:*"), "the master the Sentinel names"


def test_tls_sentinel_two_processes(
    tmp_path_factory: pytest.TempPathFactory, prefix: str, tmp_path: Path
) -> None:
    folder = tmp_path_factory.mktemp("tls-sentinel")
    ca = TestCA(folder / "ca")
    s = Sentinel(folder, ca=ca)
    try:
        kwargs = {
            "ca_file": str(ca.ca_file),
            "cert_file": str(s.client_cert),
            "key_file": str(s.client_key),
        }
        two_processes(s.url, kwargs, prefix, tmp_path)
        assert s.master.command("KEYS", f"{prefix}:*")
    finally:
        s.stop()


def test_sentinel_failover_is_followed(prefix: str, tmp_path: Path) -> None:
    s = Sentinel(tmp_path / "failover", replica=True)
    try:
        assert s.replica is not None
        cfg = RedisConfig(s.url, key_prefix=prefix, signing_key=KEY, timeout_seconds=1.0)
        f, _ = shared(cfg)
        f(0)
        wait_for(lambda: cfg.stats()["writes"] == 1)
        wait_for(lambda: b"master_link_status:up" in s.replica.command("INFO", "replication"))

        def failover() -> bool:
            try:
                s.sentinel.command("SENTINEL", "FAILOVER", "mymaster")
            except RuntimeError as e:  # the Sentinel has not vetted the replica yet
                assert "NOGOODSLAVE" in str(e)
                return False
            return True

        wait_for(failover, timeout=15)
        wait_for(lambda: s.master_port() == s.replica.port, timeout=20)
        # The old master is demoted: writes reach the new one once the L2 asked again.
        new_master, i = s.replica, 0

        def written_to_the_new_master() -> bool:
            nonlocal i
            i += 1
            f(i)
            return len(new_master.command("KEYS", f"{prefix}:r1:*")) > 1

        wait_for(written_to_the_new_master, timeout=20)
    finally:
        s.stop()


# -- the heartbeat ---------------------------------------------------------------------------


def test_a_silent_subscription_drops_l1_then_recovers(own_redis: RedisServer, prefix: str) -> None:
    proxy = Proxy(own_redis.port)
    try:
        cfg = RedisConfig(
            proxy.url,
            key_prefix=prefix,
            signing_key=KEY,
            timeout_seconds=0.2,
            heartbeat_seconds=0.1,
            heartbeat_misses=3,
        )
        f, _ = shared(cfg)
        wait_for(lambda: cfg.stats()["heartbeats_received"] >= 2)
        f(1), f(2)
        assert f.cache_info().entries == 2
        assert cfg.stats()["heartbeat_losses"] == 0 and not cfg.stats()["subscription_lost"]
        # The connections stay open, nothing moves: only the heartbeat can tell.
        proxy.pause()
        wait_for(lambda: cfg.stats()["heartbeat_losses"] >= 1)
        assert f.cache_info().entries == 0
        assert cfg.stats()["subscription_lost"]
        heard = cfg.stats()["heartbeats_received"]
        proxy.resume()
        wait_for(lambda: cfg.stats()["heartbeats_received"] > heard, timeout=15)
        wait_for(lambda: not cfg.stats()["subscription_lost"])
        f(3)
        assert f.cache_info().entries == 1
    finally:
        proxy.close()


def test_forged_heartbeats_are_ignored(redis_server: RedisServer, prefix: str) -> None:
    cfg = RedisConfig(
        redis_server.url, key_prefix=prefix, signing_key=KEY, heartbeat_seconds=3600.0
    )
    shared(cfg)
    # The first heartbeat goes out once subscribed, so this process hears it.
    wait_for(lambda: cfg.stats()["heartbeats_received"] == 1)
    heard = 1
    body = json.dumps(
        {
            "v": 2,
            "from": "",
            "scope": "",
            "sender": "evil.1",
            "seq": 1,
            "ts": 0,
            "kind": "heartbeat",
        }
    )
    redis_server.command("PUBLISH", cfg.channel, f"{'0' * 64} {body}")
    redis_server.command("PUBLISH", cfg.channel, f"- {body}")
    wait_for(lambda: cfg.stats()["messages_rejected"] == 2)
    assert cfg.stats()["heartbeats_received"] == heard
