"""Prometheus exposition of regoguard's series: an ASGI app and a ``prometheus_client``
collector. The text itself is rendered in Rust (``crates/regoguard-core/src/metrics.rs``); names live only there.

Two ways to get the series scraped:

- ``metrics_app(authz)``: a tiny ASGI app of its own. Mount it where the scraper looks, e.g.
  ``app.add_route("/metrics", metrics_app(authz))`` in FastAPI/Starlette, and leave the path out
  of ``RegoGuardMiddleware`` (``exclude_paths=["/metrics"]``).
- ``RegoguardCollector(authz)``: for apps that already expose a ``prometheus_client``
  registry: ``REGISTRY.register(RegoguardCollector(authz))``. ``prometheus_client`` is an
  optional dependency, imported only when the collector collects.

Both learn the authorizers explicitly (no global registry of authorizers) and add the series of
every live ``@cached_authorization`` cache (``cache="module.qualname"``) unless
``functions=False``. Several authorizers get an ``authorizer="<entrypoint>"`` label each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from regoguard._regoguard import Authorizer, ConfigError, _render_metrics

if TYPE_CHECKING:
    from starlette.types import Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "MetricsApp", "RegoguardCollector", "metrics_app"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of the Prometheus text format 0.0.4."""


def _authorizers(authorizers: tuple[Authorizer, ...]) -> tuple[Authorizer, ...]:
    for a in authorizers:
        if not isinstance(a, Authorizer):
            raise ConfigError(f"expected Authorizer objects, got {type(a).__name__}")
    _render_metrics(list(authorizers), functions=False)  # duplicate entrypoints fail here
    return authorizers


class MetricsApp:
    """An ASGI app answering every HTTP request with the Prometheus text of its authorizers
    (``GET``/``HEAD``; other methods get 405). It also answers the lifespan protocol, so it can
    run on a port of its own (``uvicorn.run(metrics_app(authz), port=9100)`` in a thread);
    websockets are closed. Build it with ``metrics_app``."""

    def __init__(self, *authorizers: Authorizer, functions: bool = True) -> None:
        self.authorizers = _authorizers(authorizers)
        self.functions = functions

    def render(self) -> str:
        """The exposition text, as served."""
        return _render_metrics(list(self.authorizers), functions=self.functions) + _shadows()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _reply(
                send, 405, b"Method Not Allowed\n", "text/plain; charset=utf-8", allow=True
            )
            return
        body = self.render().encode()
        await _reply(send, 200, b"" if method == "HEAD" else body, CONTENT_TYPE, length=len(body))


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    *,
    length: int | None = None,
    allow: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body) if length is None else length).encode()),
        (b"cache-control", b"no-store"),
    ]
    if allow:
        headers.append((b"allow", b"GET, HEAD"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def metrics_app(*authorizers: Authorizer, functions: bool = True) -> MetricsApp:
    """An ASGI app serving the Prometheus text (format 0.0.4) of ``authorizers`` and, with
    ``functions`` (default), of every live ``@cached_authorization`` cache.

    ::

        app.add_route("/metrics", metrics_app(authz))

    Raises ``ConfigError`` for something that is not an ``Authorizer`` or for two
    authorizers with one entrypoint (their series would collide).
    """
    return MetricsApp(*authorizers, functions=functions)


class RegoguardCollector:
    """A ``prometheus_client`` collector of regoguard's series, for apps that already expose a
    registry::

        from prometheus_client import REGISTRY
        REGISTRY.register(RegoguardCollector(authz))

    ``collect()`` parses the text rendered in Rust, so the series are exactly those of
    ``metrics_app``. Needs ``prometheus_client`` (imported on first collect).
    """

    def __init__(self, *authorizers: Authorizer, functions: bool = True) -> None:
        self.authorizers = _authorizers(authorizers)
        self.functions = functions

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        text = _render_metrics(list(self.authorizers), functions=self.functions) + _shadows()
        yield from text_string_to_metric_families(text)


def _shadows() -> str:
    """The series of every live ``Shadow`` (``regoguard.shadow``), when any exists."""
    import sys

    module = sys.modules.get("regoguard.shadow")
    return "" if module is None else str(module.render_metrics())
