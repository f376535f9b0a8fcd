"""Presets that make regoguard a drop-in for another integration's policies.

``fastapi_opa(identity=...)``: the keyword arguments of ``RegoGuardMiddleware`` that give a
policy written for busykoala/fastapi-opa exactly the input it was written against, and its
clients the deny they know::

    from regoguard import Authorizer, RegoGuardMiddleware
    from regoguard.presets import fastapi_opa

    authz = Authorizer("policies/", entrypoint="data.httpapi.authz")   # the package it queried
    app.add_middleware(RegoGuardMiddleware, authorizer=authz, **fastapi_opa(identity=claims))

- input: the token claims ``identity`` returns (a dict; fastapi-opa's authentication result,
  injectables' keys included if ``identity`` adds them), plus ``request_method`` and
  ``request_path`` (the path split on ``/`` without the leading empty part:
  ``/items/42`` -> ``["items", "42"]``; a trailing ``/`` gives a trailing ``""``, as there);
- the entrypoint may name the package (``data.httpapi.authz``): its ``allow`` is read, as
  fastapi-opa reads ``result.allow``;
- a deny answers ``401 {"message": "Unauthorized"}`` (fastapi-opa's shape; regoguard's own
  default is 403).

Differences to know: fastapi-opa lets every ``OPTIONS`` request through without asking OPA
(put Starlette's ``CORSMiddleware`` outside regoguard, which answers preflights itself, or
allow ``OPTIONS`` in the policy); its ``skip_endpoints`` are regular expressions, regoguard's
``exclude_paths`` exact paths or ``*`` prefixes (list each path); an evaluation error is a 500
here, not a 401.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from regoguard._input import Identity
from regoguard.middleware import ASGIApp, Scope, _json_response

__all__ = ["fastapi_opa", "fastapi_opa_deny", "fastapi_opa_input"]


def fastapi_opa_input(scope: Scope, user: Any, body: Any) -> dict[str, Any]:
    """fastapi-opa's input document: the claims, ``request_method``, ``request_path``."""
    doc: dict[str, Any] = dict(user) if isinstance(user, Mapping) else {}
    doc["request_method"] = scope.get("method")
    doc["request_path"] = str(scope["path"]).split("/")[1:]
    return doc


def fastapi_opa_deny(scope: Scope, decision: Any) -> ASGIApp:
    """fastapi-opa's deny: ``401 {"message": "Unauthorized"}``."""
    return _message_response(401, "Unauthorized")


def _message_response(status: int, message: str) -> ASGIApp:
    import json

    body = json.dumps({"message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def respond(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await _json_response(status, message)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return respond


def fastapi_opa(*, identity: Identity) -> dict[str, Callable[..., Any]]:
    """The ``RegoGuardMiddleware`` keyword arguments of the fastapi-opa preset.

    Args:
        identity: ``scope -> claims`` (sync or ``async def``): what fastapi-opa's
            authentication returned (e.g. the decoded JWT), or ``None`` when there is none.
            To refuse a credential as fastapi-opa does, raise ``HTTPException(401)``.
    """
    if not callable(identity):
        raise TypeError("identity must be callable")
    return {"identity": identity, "input_builder": fastapi_opa_input, "on_deny": fastapi_opa_deny}
