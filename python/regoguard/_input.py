"""The request input document: what a policy sees for an HTTP request.

The document itself is written in Rust (``src/request.rs``) straight from the ASGI scope, so
the middleware, the ``Authorize`` dependency and ``build_input`` can never disagree, and an L1
hit never builds a Python dict. This module holds the Python half: who the user is, and the
body, which the middleware reads.

    {
      "method": "GET",                       # "GET" for a websocket handshake
      "path": "/api/v1/projects/42",
      "path_segments": ["api", "v1", "projects", "42"],
      "query": {"tag": ["a", "b"]},          # every value kept, in order
      "headers": {"x-tenant": "acme"},       # only include_headers; lower-cased names
      "user": {"id": "u17", ...} | null,     # from `identity`, or Starlette's auth
      "body": ...,                           # only with include_body=True
      "route": "/api/v1/projects/{id}",      # Authorize dependency only
      "path_params": {"id": 42},             # Authorize dependency only
      "websocket": true                      # websocket handshakes only
    }
"""

from __future__ import annotations

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


def build_input(
    scope: Mapping[str, Any],
    *,
    include_headers: Iterable[str] = (),
    identity: Identity | None = None,
    body: Any = ...,
    route: tuple[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The input document a policy sees for ``scope``, as a dict (for tests and debugging).

    ``body`` is left out unless given; ``route`` is ``(template, path_params)``.
    """
    spec = RequestSpec(include_headers=list(include_headers))
    user = (identity or default_identity)(scope)
    include_body = body is not ...
    result: dict[str, Any] = build_request_input(
        dict(scope),
        spec,
        user,
        include_body=include_body,
        body=None if body is ... else body,
        route=route,
    )
    return result


def failure_id(exc: BaseException) -> str:
    """The id a failed request is answered and logged with: the failed decision's id (the
    ``decision_id`` of its decision-log record) when there is one, else a fresh one."""
    decision_id = getattr(exc, "decision_id", None)
    return decision_id if isinstance(decision_id, str) else uuid.uuid4().hex
