"""Real production-shaped Redis deployments for the tests: TLS with a test CA, a 3-node Cluster,
a Sentinel with one master, and a TCP proxy that can stop forwarding (a partition that keeps
connections open). Every process is started on loopback and stopped by its PID."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .conftest import REDIS_SERVER, _read, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


# -- a test CA -------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class TestCA:
    """A CA (written to ``ca.pem``) that issues server and client certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path, name: str = "regoguard test CA") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, *, server: bool) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1/localhost (server, and client) or a client only;
        returns (cert, key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(stem))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # A server's certificate is a client's too: cluster nodes dial each other.
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH] * server
                    + [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{stem}.pem", self.folder / f"{stem}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_file)
        return cert_file, key_file


# -- servers ---------------------------------------------------------------------------------


class Proc:
    """A redis-server (or sentinel) subprocess with a plaintext loopback port to inspect it."""

    def __init__(self, args: list[str], port: int, tls: ssl.SSLContext | None = None) -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.skip("redis-server is not installed (scripts/test.sh installs it)")
        self.port = port
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [REDIS_SERVER, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == "PONG":
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{args!r} did not start") from None
                time.sleep(0.02)

    def command(self, *args: str | bytes | int) -> Any:
        """One command over a fresh connection (RESP2); an error reply raises RuntimeError."""
        parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            if self.tls is None:
                return _roundtrip(raw, parts)
            with self.tls.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                return _roundtrip(s, parts)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


def _roundtrip(s: socket.socket, parts: list[bytes]) -> Any:
    with s.makefile("rb") as f:
        s.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return _read(f)


def base_args(port: int, folder: Path) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]


class TlsServer:
    """A redis-server whose TLS port requires a client certificate of ``ca``."""

    def __init__(self, folder: Path) -> None:
        self.ca = TestCA(folder / "ca")
        cert, key = self.ca.issue("server", server=True)
        self.client_cert, self.client_key = self.ca.issue("client", server=False)
        self.tls_port = free_port()
        plain = free_port()
        self.proc = Proc(
            [
                *base_args(plain, folder),
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(self.ca.ca_file),
                "--tls-auth-clients",
                "yes",
            ],
            plain,
        )

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0"

    def tls_kwargs(self) -> dict[str, Any]:
        return {
            "ca_file": str(self.ca.ca_file),
            "cert_file": str(self.client_cert),
            "key_file": str(self.client_key),
        }

    def tls_command(self, *args: str) -> Any:
        """One command over TLS with Python's own client (checks the server really is TLS)."""
        ctx = ssl.create_default_context(cafile=str(self.ca.ca_file))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        with (
            socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
            s.makefile("rb") as f,
        ):
            parts = [a.encode() for a in args]
            s.sendall(
                b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
            )
            return _read(f)

    def stop(self) -> None:
        self.proc.stop()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class Cluster:
    """Three masters, no replicas, created with ``redis-cli --cluster create``; with ``ca``,
    TLS only (clients and the cluster bus), client certificates optional."""

    def __init__(self, folder: Path, ca: TestCA | None = None) -> None:
        if not os.path.exists(REDIS_CLI):
            pytest.skip("redis-cli is not installed (scripts/test.sh installs it)")
        self.nodes: list[Proc] = []
        self.ca = ca
        tls_args: list[str] = []
        cli_tls: list[str] = []
        ctx: ssl.SSLContext | None = None
        if ca is not None:
            cert, key = ca.issue("cluster-node", server=True)
            self.client_cert, self.client_key = ca.issue("cluster-client", server=False)
            tls_args = [
                "--tls-cluster",
                "yes",
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(ca.ca_file),
                "--tls-auth-clients",
                "optional",
            ]
            cli_tls = ["--tls", "--cacert", str(ca.ca_file)]
            ctx = ssl.create_default_context(cafile=str(ca.ca_file))
        try:
            for _ in range(3):
                port = cluster_port()
                d = folder / str(port)
                d.mkdir(parents=True)
                args = base_args(port, d)
                if ca is not None:
                    args[1] = "0"  # no plaintext port
                    args += ["--tls-port", str(port), *tls_args]
                self.nodes.append(
                    Proc(
                        [
                            *args,
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            str(d / "nodes.conf"),
                            "--cluster-node-timeout",
                            "2000",
                        ],
                        port,
                        ctx,
                    )
                )
            subprocess.run(
                [
                    REDIS_CLI,
                    *cli_tls,
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
            )
            deadline = time.monotonic() + 20
            while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not become ready")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        scheme = "redis" if self.ca is None else "rediss"
        return f"{scheme}+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def keys(self, pattern: str) -> list[bytes]:
        return [k for n in self.nodes for k in n.command("KEYS", pattern)]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class Sentinel:
    """One master (and optionally a replica) and one Sentinel monitoring it as ``mymaster``;
    with ``ca``, the master and the Sentinel speak TLS only."""

    def __init__(self, folder: Path, *, replica: bool = False, ca: TestCA | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        mport = free_port()
        _mkdir(folder / "m")
        tls: list[str] = []
        ctx: ssl.SSLContext | None = None
        if ca is not None:
            cert, key = ca.issue("sentinel-node", server=True)
            self.client_cert, self.client_key = ca.issue("sentinel-client", server=False)
            tls = [
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-ca-cert-file",
                str(ca.ca_file),
                "--tls-auth-clients",
                "optional",
                "--tls-replication",
                "yes",
            ]
            ctx = ssl.create_default_context(cafile=str(ca.ca_file))
            args = base_args(0, folder / "m") + ["--tls-port", str(mport), *tls]
        else:
            args = base_args(mport, folder / "m")
        self.master = Proc(args, mport, ctx)
        self.replica: Proc | None = None
        if replica:
            rport = free_port()
            _mkdir(folder / "r")
            self.replica = Proc(
                [*base_args(rport, folder / "r"), "--replicaof", "127.0.0.1", str(mport)], rport
            )
            # In sync before the Sentinel starts: it then sees the replica in its first INFO
            # (the next is 10 s later).
            deadline = time.monotonic() + 10
            while b"master_link_status:up" not in self.replica.command("INFO", "replication"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not sync")
                time.sleep(0.02)
        sport = free_port()
        conf = folder / "sentinel.conf"
        listen = f"port {sport}\n"
        if ca is not None:
            # The same options, as config lines ("--tls-port" -> "tls-port ...").
            pairs = [f"{k[2:]} {v}" for k, v in zip(tls[::2], tls[1::2], strict=True)]
            listen = f"port 0\ntls-port {sport}\n" + "\n".join(pairs) + "\n"
        conf.write_text(
            f"{listen}bind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor mymaster 127.0.0.1 {mport} 1\n"
            "sentinel down-after-milliseconds mymaster 2000\n"
        )
        try:
            self.sentinel = Proc([str(conf), "--sentinel"], sport, ctx)
        except BaseException:
            self.master.stop()
            if self.replica is not None:
                self.replica.stop()
            raise

    def master_port(self) -> int:
        host_port = self.sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        return int(host_port[1])

    @property
    def url(self) -> str:
        scheme = "redis" if self.ca is None else "rediss"
        return f"{scheme}+sentinel://127.0.0.1:{self.sentinel.port}/mymaster/0"

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()
        if self.replica is not None:
            self.replica.stop()


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


# -- a proxy that can stop forwarding --------------------------------------------------------


class Proxy:
    """Forwards loopback TCP to ``port``; ``pause()`` stops moving bytes on every connection
    (old and new) without closing any, as a partition would; ``resume()`` moves them again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self.closed:
                self.flowing.wait()
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            sockets, self.sockets = self.sockets, []
        self.flowing.set()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
