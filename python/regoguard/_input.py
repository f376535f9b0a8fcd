"""The request input document: what a policy sees for an HTTP request.

The document itself is written in Rust (``crates/regoguard-core/src/request.rs``) straight from the ASGI scope, so
the middleware, the ``Authorize`` dependency and ``build_input`` can never disagree, and an L1
hit never builds a Python dict. This module holds the Python half: who the user is, and the
body, which the middleware reads.

    {
      "method": "GET",                       # "GET" for a websocket handshake
      "path": "/api/v1/projects/42",
      "path_segments": ["api", "v1", "projects", "42"],
      "query": {"tag": ["a", "b"]},          # every value kept, in order
      "headers": {"x-tenant": "acme"},       # only include_headers; lower-cased names;
                                             # the first value, as request.headers.get()
      "header_values": {"x-tenant": ["acme"]},  # every value of those headers, in order
      "user": {"id": "u17", ...} | null,     # from `identity`, or Starlette's auth
      "body": ...,                           # include_body=True and the body is JSON
      "raw_body": {"size": 7, "text": "..."},  # include_body=True
      "route": "/api/v1/projects/{id}",      # Authorize dependency only
      "path_params": {"id": 42},             # Authorize dependency only
      "websocket": true                      # websocket handshakes only
    }
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from regoguard._regoguard import RequestSpec, build_request_input

Identity = Callable[[Mapping[str, Any]], Any]


def default_identity(scope: Mapping[str, Any]) -> dict[str, Any] | None:
    """The user as Starlette's ``AuthenticationMiddleware`` left it, or ``None``.

    ``{"id": ..., "name": ..., "scopes": [...]}`` for an authenticated ``scope["user"]``:
    ``id`` is ``user.identity`` where the user class implements it, else its
    ``display_name``; ``scopes`` are ``scope["auth"].scopes``.
    """
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = getattr(user, "display_name", None)
    try:
        ident = user.identity
    except (NotImplementedError, AttributeError):
        ident = name
    auth = scope.get("auth")
    scopes = list(getattr(auth, "scopes", ()) or ())
    return {"id": ident, "name": name, "scopes": scopes}


NOT_JSON: Any = ...
"""``input.body`` of a body that is not JSON: Rust leaves the field out."""


class BodyError(ValueError):
    """A body the app would fail to parse as its Content-Type says, or a hostile one: 400."""


def is_json_type(content_type: str) -> bool:
    """Whether FastAPI parses a body of ``content_type`` as JSON (``application/json`` and
    ``application/*+json``, parameters ignored, case-insensitive)."""
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def parse_body(raw: bytes, content_type: str | None) -> Any:
    """``input.body`` for the body ``raw`` whose *first* Content-Type header is
    ``content_type``: the value ``json.loads`` gives, whatever the content type, since
    Starlette's ``request.json()`` parses any body (duplicate keys: the last wins, as there);
    ``NOT_JSON`` when it is empty or not JSON.

    Raises:
        BodyError: a JSON content type with a body that does not parse, or a body nested
            past Python's recursion limit (whatever the content type).
    """
    if not raw:
        return NOT_JSON
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise BodyError("JSON body nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int over 4300 digits
        if content_type is not None and is_json_type(content_type):
            raise BodyError("Malformed JSON body") from exc
        return NOT_JSON


def build_input(
    scope: Mapping[str, Any],
    *,
    include_headers: Iterable[str] = (),
    identity: Identity | None = None,
    body: Any = ...,
    raw_body: bytes | None = None,
    route: tuple[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The input document a policy sees for ``scope``, as a dict (for tests and debugging).

    ``raw_body`` is the request body as the middleware with ``include_body=True`` reads it:
    parsed as it does (``input.body``, ``input.raw_body``; ``BodyError`` where it answers
    400). ``body`` sets ``input.body`` to a parsed value directly. Both are left out unless
    given; ``route`` is ``(template, path_params)``.
    """
    spec = RequestSpec(include_headers=list(include_headers))
    user = (identity or default_identity)(scope)
    if raw_body is not None and body is ...:
        body = parse_body(raw_body, first_header(scope, b"content-type"))
    include_body = body is not ... or raw_body is not None
    result: dict[str, Any] = build_request_input(
        dict(scope),
        spec,
        user,
        include_body=include_body,
        body=body,
        raw_body=raw_body,
        route=route,
    )
    return result


def first_header(scope: Mapping[str, Any], name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), as ``request.headers.get``."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def failure_id(exc: BaseException) -> str:
    """The id a failed request is answered and logged with: the failed decision's id (the
    ``decision_id`` of its decision-log record) when there is one, else a fresh one."""
    decision_id = getattr(exc, "decision_id", None)
    return decision_id if isinstance(decision_id, str) else uuid.uuid4().hex


def is_async(fn: Any) -> bool:
    """Whether calling ``fn`` returns an awaitable to await (an ``async def`` function, a
    partial of one, or an object whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an instance's async __call__
    )
