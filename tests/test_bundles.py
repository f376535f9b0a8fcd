"""OPA bundles as an operator deploys them: built here with tarfile, signed here with PyJWT,
served by a real HTTP server on 127.0.0.1 (ETags, 304, auth headers), polled, swapped under
load, persisted for a restart while the service is down; and every way a bundle can be bad
(signature, layout, roots, size, a server that never answers) refused without ever serving
half of it."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import random
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import regoguard
import yaml
from regoguard import Authorizer, Bundle, ConfigError, DataError, DecisionLogConfig

POLICY = """package authz
default allow := false
allow if input.user in data.authz.admins
"""

Files = dict[str, "str | bytes | dict[str, Any]"]


def _bytes(v: str | bytes | dict[str, Any]) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v).encode()


def tar_gz(files: Files, *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A bundle as ``opa build`` writes one: a gzip'd tar with leading-slash paths."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, value in files.items():
            data = _bytes(value)
            info = tarfile.TarInfo("/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return out.getvalue()


def opa_hash(name: str, data: bytes) -> str:
    """OPA's file digest: structured files are hashed in their sorted, compact JSON form."""
    base = name.rsplit("/", 1)[-1]
    if base in ("data.json", ".manifest", "data.yaml"):
        doc = yaml.safe_load(data) if base == "data.yaml" else json.loads(data)
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def signatures(
    files: Files,
    key: Any,
    *,
    alg: str = "HS256",
    kid: str | None = None,
    scope: str | None = None,
    listed: dict[str, bytes] | None = None,
) -> str:
    """A ``.signatures.json`` as ``opa sign`` writes it, over ``listed`` (default: ``files``)."""
    listed = listed if listed is not None else {n: _bytes(v) for n, v in files.items()}
    payload: dict[str, Any] = {
        "files": [
            {"name": n, "hash": opa_hash(n, b), "algorithm": "SHA-256"} for n, b in listed.items()
        ]
    }
    if scope is not None:
        payload["scope"] = scope
    headers = {"kid": kid} if kid else None
    token = jwt.encode(payload, key, algorithm=alg, headers=headers)
    return json.dumps({"signatures": [token]})


def bundle_files(
    admins: list[str], *, revision: str = "r1", roots: list[str] | None = None
) -> Files:
    return {
        ".manifest": {"revision": revision, "roots": roots or ["authz"]},
        "authz/policy.rego": POLICY,
        "authz/data.json": {"admins": admins},
    }


SECRET = "a-32-byte-hmac-secret-for-tests!"


def signed(files: Files, **kwargs: Any) -> Files:
    return {**files, ".signatures.json": signatures(files, SECRET, **kwargs)}


def write(tmp_path: Path, files: Files, name: str = "bundle.tar.gz") -> Path:
    p = tmp_path / name
    p.write_bytes(tar_gz(files))
    return p


# ---------------------------------------------------------------------------------------------
# Local bundles: format and OPA's data paths.


def test_a_tar_gz_path_is_a_bundle_with_data_at_folder_paths(tmp_path: Path) -> None:
    files: Files = {
        ".manifest": {"revision": "v7", "roots": ["authz", "teams"], "metadata": {"ci": 12}},
        "authz/policy.rego": POLICY,
        "authz/data.json": {"admins": ["alice"]},
        "teams/data.yaml": "eng: [bob]\n",
        "teams/ops/data.json": ["carol"],
        "README.md": "ignored",
    }
    path = write(tmp_path, files)
    authz = Authorizer(str(path))
    assert authz.check({"user": "alice"}).allow
    assert not authz.check({"user": "bob"}).allow
    info = authz.bundles[str(path)]
    assert info["revision"] == "v7"
    assert info["roots"] == ["authz", "teams"]
    assert info["metadata"] == {"ci": 12}
    assert authz.bundles[str(path)]["loaded"] == 1


def test_data_paths_match_opa(tmp_path: Path, opa: Any) -> None:
    """``a/b/data.json`` is ``data.a.b``: the same policy reading the bundle's data answers as OPA
    does over the document OPA's bundle docs describe."""
    policy = """package q
r := {"allow": true, "ids": sort([x | some t in data.org.teams; some x in t.members]), "org": data.org}
"""
    files: Files = {
        ".manifest": {"roots": ["org", "q"]},
        "q/q.rego": policy,
        "org/data.json": {"flags": {"beta": True}},
        "org/teams/eng/data.json": {"members": ["a", "b"]},
        "org/teams/data.yaml": "ops:\n  members: [c]\n",
    }
    authz = Authorizer(write(tmp_path, files), entrypoint="data.q.r")
    doc = {
        "org": {
            "flags": {"beta": True},
            "teams": {"eng": {"members": ["a", "b"]}, "ops": {"members": ["c"]}},
        }
    }
    oracle = opa({"q.rego": policy}, doc)
    try:
        expected = oracle.eval("data.q.r")
    finally:
        oracle.close()
    assert expected["ids"] == ["a", "b", "c"]
    assert authz.check({}).result == expected


def test_a_folder_with_a_manifest_is_a_bundle(tmp_path: Path) -> None:
    d = tmp_path / "b"
    for name, value in bundle_files(["alice"], revision="dir-1").items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_bytes(value))
    authz = Authorizer(d)
    assert authz.check({"user": "alice"}).allow
    assert authz.bundles[str(d)]["revision"] == "dir-1"
    # reload() reads it again.
    (d / "authz" / "data.json").write_text(json.dumps({"admins": ["bob"]}))
    (d / ".manifest").write_text(json.dumps({"revision": "dir-2", "roots": ["authz"]}))
    before = authz.revision
    assert authz.reload() != before
    assert authz.check({"user": "bob"}).allow
    assert not authz.check({"user": "alice"}).allow
    assert authz.bundles[str(d)]["revision"] == "dir-2"


def test_bundles_mix_with_plain_policies_and_data(tmp_path: Path) -> None:
    (tmp_path / "extra.rego").write_text("package extra\nallow if data.settings.open\n")
    b = write(tmp_path, bundle_files(["alice"]))
    authz = Authorizer(
        [tmp_path / "extra.rego", Bundle(b, name="main")], data={"settings": {"open": True}}
    )
    assert authz.check({"user": "alice"}).allow
    assert authz.check({}, entrypoint="data.extra.allow").allow
    # Data outside bundles may change; a bundle's root may not.
    authz.set_data("settings/open", False)
    assert not authz.check({}, entrypoint="data.extra.allow").allow
    with pytest.raises(DataError, match="owned by bundle 'main'|owned by bundle \"main\""):
        authz.set_data("authz/admins", ["mallory"])
    with pytest.raises(DataError, match="bundle"):
        authz.set_data("", {})
    assert not authz.check({"user": "mallory"}).allow
    # Data given outside the bundle under its root is refused at construction.
    with pytest.raises(DataError, match="bundles own their roots"):
        Authorizer(Bundle(b), data={"authz": {"admins": ["mallory"]}})


def test_decision_logs_and_metrics_carry_bundle_revisions(tmp_path: Path) -> None:
    b = write(tmp_path, bundle_files(["alice"], revision="rev-42"))
    handler_lines: list[str] = []

    class H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_lines.append(record.getMessage())

    logger = logging.getLogger("regoguard.decisions")
    h = H(logging.INFO)
    logger.addHandler(h)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        authz = Authorizer(Bundle(b, name="main"), decision_log=DecisionLogConfig())
        authz.check({"user": "alice"})
        deadline = time.monotonic() + 10
        while not handler_lines and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        logger.removeHandler(h)
        logger.setLevel(level)
    record = json.loads(handler_lines[0])
    assert record["bundles"] == {"main": {"revision": "rev-42"}}
    text = authz.metrics_text()
    assert 'regoguard_bundle_loaded_total{name="main"} 1' in text
    assert 'regoguard_bundle_failed_total{name="main"} 0' in text
    assert 'regoguard_bundle_last_success_timestamp_seconds{name="main"}' in text
    assert 'regoguard_bundle_loading_seconds_count{name="main"} 1' in text
    # Without bundles the families are absent.
    plain = tmp_path / "p"
    plain.mkdir()
    (plain / "a.rego").write_text(POLICY)
    assert "regoguard_bundle_" not in Authorizer(plain).metrics_text()
    # The exposition parses as Prometheus text (prometheus_client's parser).
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families["regoguard_bundle_loading_seconds"].type == "histogram"
    assert families["regoguard_bundle_loaded"].type == "counter"


# ---------------------------------------------------------------------------------------------
# Malformed, truncated, escaping bundles: refused, never half-applied.


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: tar_gz(bundle_files(["a"]))[:-20], ConfigError, "truncated or corrupt"),
        (lambda: tar_gz(bundle_files(["a"]))[:200], ConfigError, "truncated or corrupt"),
        (lambda: b"not a gzip stream", ConfigError, "truncated or corrupt"),
        (
            lambda: tar_gz({**bundle_files(["a"]), "../escape.rego": "package authz\n"}),
            ConfigError,
            "escapes the bundle",
        ),
        (
            lambda: tar_gz(bundle_files(["a"]), extra=[_link("authz/x.rego", "/etc/passwd")]),
            ConfigError,
            "only regular files",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), ".manifest": "{not json"}),
            ConfigError,
            ".manifest",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), ".manifest": {"roots": ["a", "a/b"]}}),
            ConfigError,
            "overlapped roots",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), "other/p.rego": "package other\nx := 1\n"}),
            ConfigError,
            "do not permit 'package other'",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), "other/data.json": {"x": 1}}),
            ConfigError,
            "do not permit data at data.other",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), "data.json": {"authz": {"x": 1}, "y": 2}}),
            ConfigError,
            "do not permit data at data.y",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), ".manifest": {}, "data.json": [1, 2]}),
            DataError,
            "the base document must be an object",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), "authz/data.json": "{broken"}),
            DataError,
            "data.json",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), "authz/patch.json": {"data": []}}),
            ConfigError,
            "delta bundles",
        ),
        (
            lambda: tar_gz({**bundle_files(["a"]), ".manifest": {"rego_version": 0}}),
            ConfigError,
            "rego_v0=True",
        ),
        (
            lambda: tar_gz(
                {**bundle_files(["a"]), "authz/policy.rego": "package authz\nallow if {"}
            ),
            regoguard.PolicyError,
            "policy.rego",
        ),
    ],
)
def test_bad_bundles_are_refused_with_a_clear_error(
    tmp_path: Path, make: Any, error: type[Exception], match: str
) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(make())
    with pytest.raises(error, match=match):
        Authorizer(path)
    # ... and on reload() the good version keeps serving.
    good = tmp_path / "good.tar.gz"
    good.write_bytes(tar_gz(bundle_files(["alice"])))
    authz = Authorizer(good)
    rev = authz.revision
    good.write_bytes(make())
    with pytest.raises(error, match=match):
        authz.reload()
    assert authz.revision == rev
    assert authz.check({"user": "alice"}).allow
    assert authz.bundles[str(good)]["failed"] == 1
    assert authz.bundles[str(good)]["last_error"]


def test_a_gzip_bomb_stops_at_the_size_limit(tmp_path: Path) -> None:
    files = {**bundle_files(["a"]), "authz/pad.txt": b"\0" * 3_000_000}
    path = write(tmp_path, files)
    assert path.stat().st_size < 100_000
    with pytest.raises(ConfigError, match="larger than 1000000 bytes"):
        Authorizer(Bundle(path, max_bytes=1_000_000))
    assert Authorizer(Bundle(path)).check({"user": "a"}).allow


def test_disjoint_roots_combine_and_overlapping_roots_name_both(tmp_path: Path) -> None:
    a = write(tmp_path, bundle_files(["alice"]), "a.tar.gz")
    b = write(
        tmp_path,
        {
            ".manifest": {"revision": "b1", "roots": ["teams"]},
            "teams/data.json": {"eng": ["bob"]},
            "teams/t.rego": "package teams\nallow if input.user in data.teams.eng\n",
        },
        "b.tar.gz",
    )
    authz = Authorizer([Bundle(a, name="a"), Bundle(b, name="b")])
    assert authz.check({"user": "alice"}).allow
    assert authz.check({"user": "bob"}, entrypoint="data.teams.allow").allow
    assert set(authz.bundles) == {"a", "b"}
    c = write(
        tmp_path,
        {".manifest": {"roots": ["authz/x"]}, "authz/x/data.json": {"y": 1}},
        "c.tar.gz",
    )
    with pytest.raises(ConfigError, match=r"bundles \"a\" and \"c\" have overlapping roots"):
        Authorizer([Bundle(a, name="a"), Bundle(c, name="c")])
    whole = write(tmp_path, {**bundle_files(["m"]), ".manifest": {}}, "whole.tar.gz")
    with pytest.raises(ConfigError, match="overlapping roots"):
        Authorizer([Bundle(b, name="b"), Bundle(whole, name="whole")])
    with pytest.raises(ConfigError, match="two bundles are named"):
        Authorizer([Bundle(a, name="x"), Bundle(b, name="x")])


# ---------------------------------------------------------------------------------------------
# Signatures.


def test_a_valid_signature_loads(tmp_path: Path) -> None:
    files = {
        **bundle_files(["alice"]),
        # Structured files are hashed in OPA's form: key order and whitespace do not matter.
        "authz/data.json": '{ "admins": ["alice"],\n  "note": "a<b & \\u00e9" }',
        "authz/extra/data.yaml": "b: 2\na: [x, y]\n",
    }
    path = write(tmp_path, signed(files, kid="k1", scope="write"))
    authz = Authorizer(Bundle(path, verification_key=SECRET, key_id="k1", scope="write"))
    assert authz.check({"user": "alice"}).allow
    assert authz.bundles[str(path)]["revision"] == "r1"


def test_an_rsa_signature_from_a_pem_key_loads(tmp_path: Path) -> None:
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    files = bundle_files(["alice"])
    sig = signatures(files, private, alg="RS256")
    path = write(tmp_path, {**files, ".signatures.json": sig})
    assert Authorizer(Bundle(path, verification_key=public_pem)).check({"user": "alice"}).allow
    # The public key used as an HMAC secret (algorithm confusion) never verifies.
    confused = write(
        tmp_path,
        {**files, ".signatures.json": hs256_by_hand(files, public_pem.encode())},
        "c.tar.gz",
    )
    with pytest.raises(ConfigError, match="failed to verify JWT signature"):
        Authorizer(Bundle(confused, verification_key=public_pem))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = write(
        tmp_path, {**files, ".signatures.json": signatures(files, other, alg="RS256")}, "x.tar.gz"
    )
    with pytest.raises(ConfigError, match="failed to verify JWT signature"):
        Authorizer(Bundle(bad, verification_key=public_pem))


def test_an_es512_signature_from_a_p521_key_loads(tmp_path: Path) -> None:
    ec = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ec")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    private = ec.generate_private_key(ec.SECP521R1())
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    files = bundle_files(["alice"])
    path = write(tmp_path, {**files, ".signatures.json": signatures(files, private, alg="ES512")})
    assert Authorizer(Bundle(path, verification_key=public_pem)).check({"user": "alice"}).allow
    other = ec.generate_private_key(ec.SECP521R1())
    bad = write(
        tmp_path, {**files, ".signatures.json": signatures(files, other, alg="ES512")}, "x.tar.gz"
    )
    with pytest.raises(ConfigError, match="failed to verify JWT signature"):
        Authorizer(Bundle(bad, verification_key=public_pem))


def hs256_by_hand(files: Files, secret: bytes) -> str:
    """An HS256 JWS over ``files`` built without PyJWT (which refuses a PEM as a secret)."""
    import base64
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    payload = {
        "files": [
            {"name": n, "hash": opa_hash(n, _bytes(v)), "algorithm": "SHA-256"}
            for n, v in files.items()
        ]
    }
    signing = b64(json.dumps({"alg": "HS256"}).encode()) + "." + b64(json.dumps(payload).encode())
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return json.dumps({"signatures": [signing + "." + b64(sig)]})


def _tampered() -> Files:
    files = bundle_files(["alice"])
    sig = signatures(files, SECRET)
    return {**files, "authz/data.json": {"admins": ["alice", "mallory"]}, ".signatures.json": sig}


def _missing() -> Files:
    files = bundle_files(["alice"])
    listed = {**{n: _bytes(v) for n, v in files.items()}, "authz/more.rego": b"package authz\n"}
    return {**files, ".signatures.json": signatures(files, SECRET, listed=listed)}


def _extra() -> Files:
    files = bundle_files(["alice"])
    sig = signatures(files, SECRET)
    return {
        **files,
        "authz/backdoor.rego": 'package authz\nallow if input.user == "mallory"\n',
        ".signatures.json": sig,
    }


def _unsigned() -> Files:
    return bundle_files(["alice"])


def _wrong_key() -> Files:
    files = bundle_files(["alice"])
    return {**files, ".signatures.json": signatures(files, "another-32-byte-secret-for-tests")}


def _alg_none() -> Files:
    files = bundle_files(["alice"])
    payload = {
        "files": [
            {"name": n, "hash": opa_hash(n, _bytes(v)), "algorithm": "SHA-256"}
            for n, v in files.items()
        ]
    }
    token = jwt.encode(payload, None, algorithm="none")
    return {**files, ".signatures.json": json.dumps({"signatures": [token]})}


def _two_tokens() -> Files:
    files = bundle_files(["alice"])
    one = json.loads(signatures(files, SECRET))["signatures"][0]
    return {**files, ".signatures.json": json.dumps({"signatures": [one, one]})}


@pytest.mark.parametrize(
    ("make", "kwargs", "match"),
    [
        (_wrong_key, {}, "failed to verify JWT signature"),
        (_tampered, {}, "authz/data.json: digest mismatch"),
        (
            _missing,
            {},
            r"file\(s\) \[\"authz/more.rego\"\] specified in bundle signatures but not found",
        ),
        (_extra, {}, "file authz/backdoor.rego not included in bundle signature"),
        (_unsigned, {}, "bundle missing .signatures.json file"),
        (_alg_none, {}, "failed to verify JWT signature"),
        (_two_tokens, {}, "expected exactly one"),
        (
            lambda: signed(bundle_files(["alice"]), scope="read"),
            {"scope": "write"},
            "scope mismatch",
        ),
        (lambda: signed(bundle_files(["alice"]), scope="read"), {}, "scope mismatch"),
        (lambda: signed(bundle_files(["alice"]), kid="k2"), {"key_id": "k1"}, "key id"),
    ],
)
def test_bad_signatures_are_refused(
    tmp_path: Path, make: Any, kwargs: dict[str, Any], match: str
) -> None:
    path = write(tmp_path, make())
    with pytest.raises(ConfigError, match=match):
        Authorizer(Bundle(path, verification_key=SECRET, **kwargs))


# ---------------------------------------------------------------------------------------------
# Remote bundles.


class BundleServer:
    """A real HTTP server on 127.0.0.1 serving one bundle with an ETag (its SHA-256)."""

    def __init__(self) -> None:
        self.versions: list[bytes] = []
        self.cycle = False
        self.status = 200
        self.requests: list[dict[str, str]] = []
        self.served = 0
        self.not_modified = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append({k.lower(): v for k, v in self.headers.items()})
                    if server.status != 200 or not server.versions:
                        self.send_response(server.status if server.status != 200 else 404)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    i = server.served % len(server.versions) if server.cycle else -1
                    body = server.versions[i]
                    etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                    if self.headers.get("If-None-Match") == etag:
                        server.not_modified += 1
                        self.send_response(304)
                        self.send_header("ETag", etag)
                        self.end_headers()
                        return
                    server.served += 1
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/bundles/authz.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[BundleServer]:
    s = BundleServer()
    yield s
    s.close()


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_remote_bundle_etag_304_headers_and_new_revisions(server: BundleServer) -> None:
    server.versions = [tar_gz(bundle_files(["alice"], revision="r1"))]
    authz = Authorizer(
        Bundle(
            server.url,
            name="authz",
            headers={"Authorization": "Bearer s3cret"},
            poll_min_seconds=0.05,
            poll_max_seconds=0.1,
        )
    )
    assert authz.check({"user": "alice"}).allow
    assert server.requests[0]["authorization"] == "Bearer s3cret"
    assert "if-none-match" not in server.requests[0]
    wait_until(lambda: server.not_modified >= 2)
    etag = authz.bundles["authz"]["etag"]
    assert etag and server.requests[-1]["if-none-match"] == etag
    rev1 = authz.revision
    assert authz.bundles["authz"]["loaded"] == 1
    # A new version becomes a new revision; the cached allow of alice is unreachable.
    with server.lock:
        server.versions = [tar_gz(bundle_files(["bob"], revision="r2"))]
    wait_until(lambda: authz.bundles["authz"]["revision"] == "r2")
    assert authz.revision != rev1
    assert not authz.check({"user": "alice"}).allow
    assert authz.check({"user": "bob"}).allow
    # A failing service, then a bad bundle: the last good one keeps serving.
    with server.lock:
        server.status = 500
    wait_until(lambda: authz.bundles["authz"]["failed"] >= 1)
    assert "HTTP 500" in authz.bundles["authz"]["last_error"]
    with server.lock:
        server.status = 200
        server.versions = [tar_gz(bundle_files(["mallory"], revision="r3"))[:-30]]
    wait_until(lambda: "truncated" in (authz.bundles["authz"]["last_error"] or ""))
    assert authz.bundles["authz"]["revision"] == "r2"
    assert authz.check({"user": "bob"}).allow
    assert not authz.check({"user": "mallory"}).allow
    assert 'regoguard_bundle_failed_total{name="authz"}' in authz.metrics_text()


def test_reload_polls_a_remote_bundle_now(server: BundleServer) -> None:
    server.versions = [tar_gz(bundle_files(["alice"]))]
    authz = Authorizer(Bundle(server.url, poll_min_seconds=3600, poll_max_seconds=3600))
    assert len(server.requests) == 1
    with server.lock:
        server.versions = [tar_gz(bundle_files(["bob"], revision="r2"))]
    authz.reload()
    wait_until(lambda: authz.check({"user": "bob"}).allow)


def test_a_signed_remote_bundle_tampered_in_transit_is_refused(server: BundleServer) -> None:
    server.versions = [tar_gz(signed(bundle_files(["alice"])))]
    authz = Authorizer(
        Bundle(server.url, verification_key=SECRET, poll_min_seconds=0.05, poll_max_seconds=0.05)
    )
    name = next(iter(authz.bundles))
    with server.lock:
        server.versions = [tar_gz(_extra())]
    wait_until(
        lambda: "not included in bundle signature" in (authz.bundles[name]["last_error"] or "")
    )
    assert not authz.check({"user": "mallory"}).allow


def test_service_down_at_start_with_and_without_persist_dir(
    server: BundleServer, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/b.tar.gz"
    with pytest.raises(ConfigError, match="no persist_dir to start from"):
        Authorizer(Bundle(down, timeout_seconds=2))
    with pytest.raises(ConfigError, match="no persisted copy"):
        Authorizer(Bundle(down, timeout_seconds=2, persist_dir=tmp_path / "p"))
    # A first run against the live service persists what it activated ...
    server.versions = [tar_gz(bundle_files(["alice"], revision="persisted"))]
    first = Authorizer(Bundle(server.url, name="b", persist_dir=tmp_path / "p"))
    assert first.check({"user": "alice"}).allow
    del first
    # ... so a restart while the service is down starts from it (counted as a failure).
    server.close()
    again = Authorizer(Bundle(server.url, name="b", persist_dir=tmp_path / "p", timeout_seconds=2))
    assert again.check({"user": "alice"}).allow
    info = again.bundles["b"]
    assert info["revision"] == "persisted"
    assert info["failed"] == 1
    assert info["last_error"]
    assert info["last_success"] is None
    # A persisted copy is verified like a download: tampering with it on disk is caught.
    persisted = next((tmp_path / "p").rglob("bundle.tar.gz"))
    persisted.write_bytes(tar_gz(_extra()))
    with pytest.raises(ConfigError):
        Authorizer(
            Bundle(
                server.url,
                name="b",
                persist_dir=tmp_path / "p",
                verification_key=SECRET,
                timeout_seconds=2,
            )
        )


def test_download_size_limit(server: BundleServer) -> None:
    server.versions = [tar_gz({**bundle_files(["a"]), "authz/pad.bin": random.randbytes(200_000)})]
    with pytest.raises(ConfigError, match="limit 100000 bytes"):
        Authorizer(Bundle(server.url, max_bytes=100_000))


def test_a_server_that_never_answers_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/b.tar.gz"
        with pytest.raises(ConfigError, match="b.tar.gz"):
            Authorizer(Bundle(url, timeout_seconds=0.5))
    finally:
        silent.close()


def test_swap_under_load_never_gives_a_wrong_decision(server: BundleServer, tmp_path: Path) -> None:
    """Threads check while the poller swaps between versions; every decision's revision must be
    one of the versions and its answer that version's answer."""
    n = 4

    def version(k: int) -> Files:
        return {
            ".manifest": {"revision": f"v{k}", "roots": ["authz"]},
            "authz/policy.rego": "package authz\ndefault allow := false\nallow if input.k == data.authz.want\n",
            "authz/data.json": {"want": k},
        }

    server.versions = [tar_gz(version(k)) for k in range(n)]
    server.cycle = True
    # The revision of each version, from a local copy under the same bundle name.
    revision_of = {}
    for k in range(n):
        p = write(tmp_path, version(k), f"v{k}.tar.gz")
        revision_of[Authorizer(Bundle(p, name="authz")).revision] = k
    authz = Authorizer(
        Bundle(server.url, name="authz", poll_min_seconds=0.01, poll_max_seconds=0.03)
    )
    wrong: list[Any] = []
    seen: set[str] = set()
    stop = time.monotonic() + 1.5

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            k = rng.randrange(n)
            d = authz.check({"k": k})
            seen.add(d.revision)
            if d.revision not in revision_of or d.allow != (revision_of[d.revision] == k):
                wrong.append((d.revision, k, d.allow))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
    assert len(seen) >= 2, "the bundle never swapped during the run"
    assert authz.bundles["authz"]["loaded"] >= 2


def test_bundle_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only http://, https://"):
        Bundle("ftp://example.com/b.tar.gz")
    with pytest.raises(ConfigError, match="poll_max_seconds"):
        Bundle("http://x/b.tar.gz", poll_min_seconds=10, poll_max_seconds=5)
    with pytest.raises(ConfigError, match="persist_dir is for remote bundles"):
        Bundle(tmp_path / "b.tar.gz", persist_dir=tmp_path)
    with pytest.raises(ConfigError, match="verification_key"):
        Bundle("http://x/b.tar.gz", key_id="k")
    with pytest.raises(ConfigError, match="headers"):
        Bundle("http://x/b.tar.gz", headers={"X-A": "1\r\nInjected: yes"})
    with pytest.raises(ConfigError, match="verification_key"):
        Bundle(
            "http://x/b.tar.gz",
            verification_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
        )
    b = Bundle(
        "https://user:pw@bundles.example/b.tar.gz?token=t0k3n",
        verification_key=SECRET,
        headers={"Authorization": "Bearer s3cret"},
    )
    assert b.name == "bundles.example/b.tar.gz"
    assert b.remote and b.verified
    shown = repr(b)
    assert "t0k3n" not in shown and SECRET not in shown and "s3cret" not in shown
    with pytest.raises(ConfigError, match="does not exist"):
        Authorizer(Bundle(tmp_path / "missing.tar.gz"))
