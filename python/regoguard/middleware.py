"""RegoGuardMiddleware: a pure ASGI middleware that authorizes every HTTP request and
websocket handshake before the app sees it."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import random
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from anyio import to_thread

from regoguard._input import (
    NOT_JSON,
    BodyError,
    Identity,
    default_identity,
    failure_id,
    is_async,
    parse_body,
)
from regoguard._regoguard import (
    Authorizer,
    ConfigError,
    Decision,
    InputError,
    PendingDecision,
    RequestSpec,
    _Gate,
)
from regoguard._responses import (
    BAD_REQUEST,
    TOO_LARGE,
    Answer,
    bad_body,
    denied,
    evaluation_failed,
    input_failed,
    refusal,
)

if TYPE_CHECKING:
    from regoguard.shadow import OPAServer, Shadow

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Decides what a denied request gets: return an ASGI app to respond, or None for the default.
OnDeny = Callable[[Scope, Decision], ASGIApp | None]
#: Decides what a failed evaluation gets: return an ASGI app to respond, or None for a 500.
OnError = Callable[[Scope, BaseException], ASGIApp | None]
#: Builds the input document in Python instead of Rust (slower: every request builds a dict);
#: may be an ``async def``.
InputBuilder = Callable[[Scope, Any, Any], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]

logger = logging.getLogger("regoguard")

_JSON = (b"content-type", b"application/json")
_NO_BODY = object()
_NO_USER = object()


def _json_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> ASGIApp:
    """``status {"detail": detail}`` (with ``headers``) as an ASGI app; a websocket handshake
    is closed instead."""
    body = json.dumps({"detail": detail}).encode()
    raw = [_JSON, (b"content-length", str(len(body)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def respond(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
            return
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    return respond


def _answer(answer: Answer) -> ASGIApp:
    """The response of a ``regoguard._responses`` answer."""
    return _json_response(*answer)


def _check_offload(seconds: float | None) -> None:
    if seconds is not None and (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise ConfigError(f"offload_after_seconds must be a number >= 0 or None, got {seconds!r}")


# Characters that make an exclude_paths entry a pattern (a regex, a glob, a route template)
# rather than a path; such entries are rejected instead of silently matching nothing.
_PATTERN_CHARS = frozenset("[](){}^$+?|\\")


def _exclusions(paths: Iterable[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact, prefixes = set(), []
    for p in paths:
        if not isinstance(p, str) or not p.startswith("/"):
            raise ConfigError(f"exclude_paths entries must be paths starting with '/', got {p!r}")
        if _PATTERN_CHARS.intersection(p) or "*" in p[:-1]:
            raise ConfigError(
                f"exclude_paths entry {p!r} is a pattern regoguard cannot honour: entries are "
                "exact paths ('/health') or prefixes ending in '*' ('/static/*'); regular "
                "expressions, globs and route templates are not supported (list each path, or "
                "let the policy allow them)"
            )
        if p.endswith("*"):
            prefixes.append(p[:-1])
        else:
            exact.add(p)
    return frozenset(exact), tuple(prefixes)


class RegoGuardMiddleware:
    """Authorizes every HTTP request and websocket handshake with an ``Authorizer``.

    Allowed requests reach the app with the ``Decision`` in ``scope["regoguard"]``. Denied ones
    get ``403 {"detail": reason}``, or the decision's own ``status`` and ``headers`` (a policy
    answering ``status: 401`` with a ``WWW-Authenticate`` header gets exactly that). A request
    whose input cannot be built (a header or path with no text form, malformed JSON body) gets
    400; a body over ``max_body_bytes`` gets 413; an evaluation error gets 500 with no policy
    detail, logged with an error id (``on_error`` may answer instead; ``fail_open=True`` lets
    the request through, logged at warning level and counted in ``failed_open``). Lifespan and
    other scope types pass through untouched.

    Args:
        app: The ASGI app to protect.
        authorizer: The ``Authorizer`` deciding every request.
        input_builder: ``(scope, user, body) -> dict`` to build the input in Python instead of
            the built-in document (see ``regoguard.build_input``); every request then builds a
            dict, which costs a few microseconds. ``body`` is the parsed JSON body, the raw
            bytes of a body that is not JSON, or None without ``include_body``.
        identity: ``scope -> user`` (JSON-shaped, or None). Default: Starlette's
            ``AuthenticationMiddleware`` user (``regoguard.default_identity``).
        include_headers: Request headers the policy sees (case-insensitive names).
        exclude_paths: Paths never authorized: exact (``"/health"``) or prefixes ending in
            ``*`` (``"/static/*"``). Anything that looks like a pattern (a regex such as
            fastapi-opa's ``skip_endpoints``, a glob, a route template) raises
            ``ConfigError`` rather than silently matching nothing.
        include_body: Read the body (once, replayed to the app): ``input.raw_body`` is
            ``{"size": n, "text": ...}``, and ``input.body`` the JSON value when the body
            parses as JSON, whatever its Content-Type (Starlette's ``request.json()`` parses
            any body). A JSON Content-Type (the first header) with a malformed body is 400.
        max_body_bytes: The body limit with ``include_body`` (default 65536); past it, 413
            without reading the rest.
        on_deny: ``(scope, decision) -> ASGI app | None`` to answer denials yourself.
        on_error: ``(scope, exception) -> ASGI app | None`` to answer failures yourself.
        fail_open: Let requests through when evaluation fails. Off by default; think twice.
            Never applies to a failed ``identity`` (that is answered 500, or by ``on_error``).
        shadow: Also ask a second decision maker, for a migration: an ``Authorizer`` (a
            candidate policy), a ``regoguard.OPAServer(url)`` (the PDP in use today) or a
            ``regoguard.Shadow(target, sample_rate=..., max_queue=...)``. It is asked after the
            response is sent, off the request path, and never changes what is enforced; see
            ``regoguard.shadow``.
        offload_after_seconds: An L1 miss is evaluated on the event-loop thread while the
            moving average of this middleware's misses stays at or under this (default
            0.001 s); above it, or before the first miss is measured, misses are evaluated in
            a worker thread (``anyio.to_thread``) so a slow policy cannot stall other
            requests. ``None`` keeps every miss on the loop. An L1 hit is always decided in
            the call, with no await.

    ``identity`` and ``input_builder`` may be ``async def`` functions (awaited once per
    request; a sync ``identity`` keeps the request path free of awaits). An ``identity`` that
    raises Starlette's/FastAPI's ``HTTPException`` answers with its status, detail and
    headers; any other exception answers 500, logged at WARNING (rate-limited) as
    ``identity failed``. The 403 detail of an undefined decision is ``"Forbidden"`` (the
    ``Decision`` and the decision log keep ``reason == "undefined"``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authorizer: Authorizer,
        input_builder: InputBuilder | None = None,
        identity: Identity | None = None,
        include_headers: Iterable[str] = (),
        exclude_paths: Iterable[str] = (),
        include_body: bool = False,
        max_body_bytes: int = 65536,
        on_deny: OnDeny | None = None,
        on_error: OnError | None = None,
        fail_open: bool = False,
        shadow: Authorizer | OPAServer | Shadow | None = None,
        offload_after_seconds: float | None = 0.001,
    ) -> None:
        if not isinstance(authorizer, Authorizer):
            raise TypeError(
                f"authorizer must be a regoguard.Authorizer, got {type(authorizer).__name__}"
            )
        if isinstance(include_headers, str):
            raise ConfigError("include_headers must be a list of header names, not one string")
        if isinstance(exclude_paths, str):
            raise ConfigError("exclude_paths must be a list of paths, not one string")
        if (
            isinstance(max_body_bytes, bool)
            or not isinstance(max_body_bytes, int)
            or max_body_bytes < 0
        ):
            raise ConfigError(f"max_body_bytes must be an int >= 0, got {max_body_bytes!r}")
        _check_offload(offload_after_seconds)
        for name, hook in (
            ("input_builder", input_builder),
            ("identity", identity),
            ("on_deny", on_deny),
            ("on_error", on_error),
        ):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable")
        self.app = app
        self.authorizer = authorizer
        self.input_builder = input_builder
        self.identity: Identity = identity or default_identity
        self.include_headers = tuple(include_headers)
        self.include_body = bool(include_body)
        self.max_body_bytes = max_body_bytes
        self.on_deny = on_deny
        self.on_error = on_error
        self.fail_open = bool(fail_open)
        self.failed_open = 0
        self.offload_after_seconds = offload_after_seconds
        self._spec = RequestSpec(
            include_headers=list(self.include_headers), offload_after_seconds=offload_after_seconds
        )
        self._exact, self._prefixes = _exclusions(exclude_paths)
        self._check = authorizer._check_scope
        self._plain = input_builder is None and not self.include_body
        self._excluding = bool(self._exact or self._prefixes)
        self._sync_identity = not is_async(self.identity)
        self._sync_builder = input_builder is None or not is_async(input_builder)
        # A sync identity on the plain path: identity and the Rust call in one try, no await
        # (an exception before `user` is set is the identity's).
        self._fast = self._plain and self._sync_identity
        self._shadow = None
        if shadow is not None:
            from regoguard.shadow import as_shadow

            self._shadow = as_shadow(shadow, authorizer)
        # The plain path runs in Rust (src/bindings/gate.rs): an allowed hit runs none of the
        # Python below, and the gate hands everything else to `_resume` or `_call`.
        self._entry: ASGIApp = self._call
        if self._fast and self._shadow is None:
            self._entry = _Gate(
                app=app,
                authorizer=authorizer,
                spec=self._spec,
                identity=self.identity,
                default_identity=default_identity,
                exact=self._exact,
                prefixes=list(self._prefixes),
                resume=self._resume,
                call=self._call,
                no_user=_NO_USER,
            )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The ASGI entry point. A plain function that returns the awaitable answering the
        request (for an allowed request, the app's own coroutine), so the middleware adds no
        coroutine of its own; servers still see a coroutine function (marked below)."""
        return self._entry(scope, receive, send)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        # A scope without a str path is a bad request (400 below), not a KeyError.
        path = scope.get("path")
        if (
            self._excluding
            and isinstance(path, str)
            and (path in self._exact or path.startswith(self._prefixes))
        ):
            await self.app(scope, receive, send)
            return
        doc: Any = None
        body: Any = _NO_BODY
        raw = b""
        if self._fast:
            # The hot path: one Rust call decides from the raw scope (an L1 hit builds no dict).
            user: Any = _NO_USER
            try:
                user = self.identity(scope)
                decision = self._check(scope, self._spec, user)
                if type(decision) is PendingDecision:  # a miss of a policy measured slow
                    decision = await to_thread.run_sync(decision.evaluate)
            except BaseException as exc:  # noqa: BLE001 - sorted out below
                if user is _NO_USER:
                    await self._identity_failed(scope, receive, send, exc)
                else:
                    await self._raised(scope, receive, send, exc, user)
                return
        else:
            try:
                user = self.identity(scope)
                if not self._sync_identity:
                    user = await user
            except BaseException as exc:  # noqa: BLE001 - sorted out in _identity_failed
                await self._identity_failed(scope, receive, send, exc)
                return
            if self.include_body and kind == "http":
                outcome = await self._read_body(scope, receive)
                if not isinstance(outcome, tuple):
                    await outcome(scope, receive, send)
                    return
                body, raw, receive = outcome
            if self.input_builder is not None:
                try:
                    given = None if body is _NO_BODY else raw if body is NOT_JSON else body
                    doc = self.input_builder(scope, user, given)
                    if not self._sync_builder:
                        doc = await doc
                except BaseException as exc:  # noqa: BLE001 - sorted out in _identity_failed
                    await self._identity_failed(scope, receive, send, exc, "input_builder")
                    return
            try:
                decision = self._decide_slowly(scope, user, body, raw, doc)
                if type(decision) is PendingDecision:
                    decision = await to_thread.run_sync(decision.evaluate)
            except BaseException as exc:  # noqa: BLE001 - sorted out in _raised
                await self._raised(scope, receive, send, exc, user)
                return
        await self._respond(scope, receive, send, decision, user, body, raw, doc)

    async def _resume(
        self, scope: Scope, receive: Receive, send: Send, user: Any, outcome: Any
    ) -> None:
        """The gate's way back for whatever is not an allowed decision: ``outcome`` is the
        denying ``Decision``, a ``PendingDecision`` to evaluate on a worker thread, or the
        exception raised (by the identity when ``user`` is ``_NO_USER``)."""
        if user is _NO_USER:
            await self._identity_failed(scope, receive, send, outcome)
            return
        if isinstance(outcome, BaseException):
            await self._raised(scope, receive, send, outcome, user)
            return
        decision = outcome
        if type(decision) is PendingDecision:
            try:
                decision = await to_thread.run_sync(decision.evaluate)
            except BaseException as exc:  # noqa: BLE001 - sorted out in _raised
                await self._raised(scope, receive, send, exc, user)
                return
        await self._respond(scope, receive, send, decision, user, _NO_BODY, b"", None)

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        decision: Decision,
        user: Any,
        body: Any,
        raw: bytes,
        doc: Any,
    ) -> None:
        scope["regoguard"] = decision
        if decision.allow:
            await self.app(scope, receive, send)
        else:
            await self._deny(scope, receive, send, decision)
        if self._shadow is not None and random.random() < self._shadow.sample_rate:
            # After the response: the shadow never delays or changes what was enforced.
            self._shadow.offer(
                scope, self._spec, user, body is not _NO_BODY, body, doc, decision, raw
            )

    def _decide_slowly(
        self, scope: Scope, user: Any, body: Any, raw: bytes, doc: Any
    ) -> Decision | PendingDecision:
        if self.input_builder is not None:
            return self.authorizer.check(doc)
        if body is _NO_BODY:
            return self._check(scope, self._spec, user)
        return self._check(scope, self._spec, user, include_body=True, body=body, raw_body=raw)

    async def _identity_failed(
        self, scope: Scope, receive: Receive, send: Send, exc: BaseException, what: str = "identity"
    ) -> None:
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit, CancelledError
        # The app's own way of refusing a credential (a bad or expired token).
        answer = refusal(exc)
        if answer is not None:
            await _answer(answer)(scope, receive, send)
            return
        answer = input_failed(scope, exc, what)
        responder = self.on_error(scope, exc) if self.on_error is not None else None
        await (_answer(answer) if responder is None else responder)(scope, receive, send)

    async def _deny(self, scope: Scope, receive: Receive, send: Send, decision: Decision) -> None:
        responder = self.on_deny(scope, decision) if self.on_deny is not None else None
        if responder is None:
            responder = _json_response(*denied(decision))
        await responder(scope, receive, send)

    async def _raised(
        self, scope: Scope, receive: Receive, send: Send, exc: BaseException, user: Any = None
    ) -> None:
        if isinstance(exc, InputError):
            await _answer(evaluation_failed(scope, exc, user))(scope, receive, send)
            return
        # A Rust panic arrives as pyo3's PanicException, a BaseException: fail closed on it too.
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise exc  # KeyboardInterrupt, SystemExit, CancelledError
        if self.fail_open:
            error_id = failure_id(exc)
            self.failed_open += 1
            logger.warning(
                "regoguard: evaluation failed, letting the request through (fail_open=True) [error %s]: %s",
                error_id,
                exc,
            )
            scope["regoguard"] = None
            await self.app(scope, receive, send)
            return
        answer = evaluation_failed(scope, exc, user)
        responder = self.on_error(scope, exc) if self.on_error is not None else None
        await (_answer(answer) if responder is None else responder)(scope, receive, send)

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[Any, bytes, Receive] | ASGIApp:
        """The parsed body (``NOT_JSON`` when it is not JSON), the raw bytes and a ``receive``
        that replays them, or the error response to send. The *first* Content-Type header
        counts, as in Starlette's and FastAPI's ``request.headers.get``."""
        limit = self.max_body_bytes
        content_type: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return _answer(TOO_LARGE)
                except ValueError:
                    return _answer(BAD_REQUEST)
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; nothing to authorize.
                return _answer(BAD_REQUEST)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return _answer(TOO_LARGE)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        try:
            parsed = parse_body(raw, content_type)
        except BodyError as exc:
            return _answer(bad_body(str(exc)))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return parsed, raw, replay


def _mark_coroutine_function(f: Callable[..., Any]) -> None:
    """Makes servers that look for a coroutine function see one in ``f`` (a plain function
    returning an awaitable): uvicorn picks ASGI 3 with ``asyncio.iscoroutinefunction`` up to
    Python 3.13 and ``inspect.iscoroutinefunction`` after; without this it would take the
    middleware for an ASGI 2 app."""
    setattr(f, "_is_coroutine", asyncio.coroutines._is_coroutine)  # type: ignore[attr-defined]  # noqa: B010
    if sys.version_info >= (3, 12):
        inspect.markcoroutinefunction(f)


_mark_coroutine_function(RegoGuardMiddleware.__call__)
