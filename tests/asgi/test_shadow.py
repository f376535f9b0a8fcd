"""Shadow mode: a second Authorizer or a real HTTP PDP on 127.0.0.1 asked after the response,
counted and logged, never changing what is enforced."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import regoguard
from regoguard import OPAServer, RegoGuardMiddleware, Shadow, metrics_app
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

ENFORCED = """package authz

default allow := false

allow if startswith(input.path, "/open")
allow if startswith(input.path, "/both")
"""

CANDIDATE = """package authz

default allow := false

allow if startswith(input.path, "/both")
allow if startswith(input.path, "/new")
"""


class PDP:
    """A small OPA Data API stand-in on 127.0.0.1: answers ``{"result": {"allow": ...}}`` from
    ``decide(input)``, or hangs, or fails, as the test sets ``mode``."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.inputs: list[Any] = []
        self.auth: list[str | None] = []
        self.release = threading.Event()
        self.decide: Callable[[Any], Any] = lambda doc: {
            "allow": str(doc["path"]).startswith("/both")
        }
        pdp = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                pdp.inputs.append(body["input"])
                pdp.auth.append(self.headers.get("authorization"))
                if pdp.mode == "hang":
                    pdp.release.wait(10)
                    return
                if pdp.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                raw = (
                    b"not json"
                    if pdp.mode == "garbage"
                    else json.dumps(
                        {} if pdp.mode == "undefined" else {"result": pdp.decide(body["input"])}
                    ).encode()
                )
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/data/authz"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pdp() -> Iterator[PDP]:
    server = PDP()
    yield server
    server.close()


def app_with(authz: regoguard.Authorizer, shadow: Any, **kwargs: Any) -> Starlette:
    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/{p:path}", ok, methods=["GET", "POST"])])
    app.add_middleware(RegoGuardMiddleware, authorizer=authz, shadow=shadow, **kwargs)
    return app


def test_a_candidate_authorizer_is_compared_and_never_enforced(
    authorizer: Callable[..., regoguard.Authorizer], caplog: pytest.LogCaptureFixture
) -> None:
    enforced = authorizer(ENFORCED)
    candidate = regoguard.Authorizer(enforced_dir(authorizer, CANDIDATE))
    shadow = Shadow(candidate, name="candidate")
    client = TestClient(app_with(enforced, shadow, include_headers=["authorization"]))
    with caplog.at_level(logging.WARNING, logger="regoguard.shadow"):
        # enforced allows, candidate denies: still 200
        assert client.get("/open", headers={"authorization": "Bearer s3cret"}).status_code == 200
        # enforced denies, candidate allows: still 403
        assert client.get("/new").status_code == 403
        assert client.get("/both").status_code == 200  # agree
        assert client.get("/none").status_code == 403  # agree
        assert shadow.drain(5)
    assert shadow.stats() == {"agree": 2, "disagree": 2, "error": 0, "dropped": 0, "queued": 0}
    lines = [r.getMessage() for r in caplog.records if "shadow disagrees" in r.getMessage()]
    assert len(lines) == 2
    first = json.loads(lines[0].split("shadow disagrees: ", 1)[1])
    assert first["path"] == "/open" and first["shadow"] == "candidate"
    assert first["enforced"]["allow"] is True and first["shadow_result"]["allow"] is False
    # Masked like decision logs: the credential never reaches the log.
    assert "s3cret" not in lines[0]
    assert "authorization" not in first["input"]["headers"]
    assert first["erased"] == ["/input/headers/authorization"]
    text = metrics_app(enforced).render()
    assert 'regoguard_shadow_total{shadow="candidate",outcome="disagree"} 2' in text
    assert 'regoguard_shadow_total{shadow="candidate",outcome="agree"} 2' in text
    assert "# TYPE regoguard_shadow_total counter" in text


def enforced_dir(authorizer: Callable[..., regoguard.Authorizer], text: str) -> Any:
    """A fresh folder holding only ``text`` (the fixture's folder holds the enforced policy)."""
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="regoguard-shadow-"))
    (d / "authz.rego").write_text(text)
    return d


def test_an_opa_server_is_asked_over_http_with_the_same_input(
    authorizer: Callable[..., regoguard.Authorizer], pdp: PDP
) -> None:
    enforced = authorizer(ENFORCED)
    shadow = Shadow(OPAServer(pdp.url, timeout_seconds=2))
    client = TestClient(app_with(enforced, shadow, include_headers=["x-tenant"]))
    assert client.get("/open?a=1", headers={"x-tenant": "acme"}).status_code == 200
    assert client.get("/both").status_code == 200
    assert shadow.drain(5)
    assert shadow.stats()["disagree"] == 1 and shadow.stats()["agree"] == 1
    expected = regoguard.build_input(
        {
            "type": "http",
            "method": "GET",
            "path": "/open",
            "query_string": b"a=1",
            "headers": [(b"x-tenant", b"acme")],
        },
        include_headers=["x-tenant"],
    )
    assert pdp.inputs[0] == expected


@pytest.mark.parametrize(
    ("mode", "decide", "outcome"),
    [
        ("500", None, "error"),
        ("garbage", None, "error"),
        ("answer", lambda doc: "yes", "error"),  # neither a boolean nor an object with allow
        ("answer", lambda doc: True, "disagree"),  # /none is denied, OPA says true
        ("answer", lambda doc: {"allow": False, "reason": "no"}, "agree"),
        ("undefined", None, "agree"),  # no result: a deny, as the enforced side
    ],
)
def test_opa_answers_and_failures_are_counted(
    authorizer: Callable[..., regoguard.Authorizer],
    pdp: PDP,
    mode: str,
    decide: Any,
    outcome: str,
) -> None:
    pdp.mode = mode
    if decide is not None:
        pdp.decide = decide
    shadow = Shadow(OPAServer(pdp.url, timeout_seconds=2))
    r = TestClient(app_with(authorizer(ENFORCED), shadow)).get("/none")
    assert r.status_code == 403  # whatever the shadow says
    assert shadow.drain(5)
    stats = shadow.stats()
    assert stats[outcome] == 1 and sum(stats[k] for k in ("agree", "disagree", "error")) == 1


def test_a_hanging_pdp_fills_only_the_bounded_queue(
    authorizer: Callable[..., regoguard.Authorizer], pdp: PDP
) -> None:
    pdp.mode = "hang"
    shadow = Shadow(OPAServer(pdp.url, timeout_seconds=5), max_queue=3, name="hang")
    enforced = authorizer(ENFORCED)
    client = TestClient(app_with(enforced, shadow))
    statuses = [client.get("/open").status_code for _ in range(12)]
    # Every request was answered (the hang is the shadow thread's alone) and enforced.
    assert statuses == [200] * 12
    stats = shadow.stats()
    assert stats["queued"] <= 3
    # One in the PDP's hands, at most three waiting: the rest were dropped, not held.
    assert stats["dropped"] >= 12 - 1 - 3
    assert stats["agree"] + stats["disagree"] == 0
    text = metrics_app(enforced).render()
    assert f'regoguard_shadow_dropped_total{{shadow="hang"}} {stats["dropped"]}' in text
    pdp.release.set()
    shadow.close()


def test_sample_rate_zero_asks_nothing(
    authorizer: Callable[..., regoguard.Authorizer], pdp: PDP
) -> None:
    shadow = Shadow(OPAServer(pdp.url), sample_rate=0.0)
    client = TestClient(app_with(authorizer(ENFORCED), shadow))
    for _ in range(5):
        client.get("/open")
    assert shadow.drain(1)
    assert pdp.inputs == []
    assert shadow.stats()["agree"] == 0


def test_a_bare_authorizer_or_server_is_a_shadow_of_rate_one(
    authorizer: Callable[..., regoguard.Authorizer], pdp: PDP
) -> None:
    mw = RegoGuardMiddleware(
        lambda s, r, se: None,  # type: ignore[arg-type, return-value]
        authorizer=authorizer(ENFORCED),
        shadow=OPAServer(pdp.url),
    )
    assert mw._shadow is not None and mw._shadow.sample_rate == 1.0


def test_a_shadow_that_grants_everything_grants_nothing(
    authorizer: Callable[..., regoguard.Authorizer], pdp: PDP
) -> None:
    pdp.decide = lambda doc: True
    shadow = Shadow(OPAServer(pdp.url, timeout_seconds=2))
    client = TestClient(app_with(authorizer(ENFORCED), shadow))
    assert [client.get(p).status_code for p in ("/admin", "/secret", "/x")] == [403, 403, 403]
    assert shadow.drain(5) and shadow.stats()["disagree"] == 3


def test_a_shadow_that_raises_never_fails_the_request(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    candidate = regoguard.Authorizer(
        enforced_dir(authorizer, 'package authz\n\nallow := "not a decision"\n')
    )
    shadow = Shadow(candidate)
    client = TestClient(app_with(authorizer(ENFORCED), shadow))
    assert client.get("/open").status_code == 200
    assert shadow.drain(5) and shadow.stats()["error"] == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda a: Shadow("http://x"), "shadow must be an Authorizer"),
        (lambda a: Shadow(a, sample_rate=1.5), "sample_rate"),
        (lambda a: Shadow(a, sample_rate=True), "sample_rate"),
        (lambda a: Shadow(a, max_queue=0), "max_queue"),
        (lambda a: Shadow(a, mask=["/headers"]), "mask pointers"),
        (lambda a: OPAServer("127.0.0.1:8181"), "http:// or https://"),
        (lambda a: OPAServer("file:///etc/passwd"), "http:// or https://"),
        (lambda a: OPAServer("http://127.0.0.1:1", timeout_seconds=0), "timeout_seconds"),
    ],
)
def test_bad_shadow_configuration_is_a_config_error(
    authorizer: Callable[..., regoguard.Authorizer], make: Any, message: str
) -> None:
    with pytest.raises(regoguard.ConfigError, match=message):
        make(authorizer(ENFORCED))


def test_the_middleware_rejects_a_shadow_of_another_kind(
    authorizer: Callable[..., regoguard.Authorizer],
) -> None:
    with pytest.raises(regoguard.ConfigError, match="shadow must be"):
        RegoGuardMiddleware(lambda s, r, se: None, authorizer=authorizer(ENFORCED), shadow=42)  # type: ignore[arg-type, return-value]


def test_a_pdp_password_never_reaches_the_logs(
    authorizer: Callable[..., regoguard.Authorizer], pdp: PDP, caplog: pytest.LogCaptureFixture
) -> None:
    pdp.mode = "500"
    url = pdp.url.replace("http://", "http://opa:hunter2@")
    server = OPAServer(url, timeout_seconds=2)
    assert "hunter2" not in repr(server)
    shadow = Shadow(server, name="secret-url")
    with caplog.at_level(logging.WARNING, logger="regoguard.shadow"):
        TestClient(app_with(authorizer(ENFORCED), shadow)).get("/open")
        assert shadow.drain(5)
    assert shadow.stats()["error"] == 1
    assert "answered HTTP 500" in caplog.text and "hunter2" not in caplog.text
    # The credentials went as Basic auth, not in the URL.
    assert pdp.auth == ["Basic b3BhOmh1bnRlcjI="]
