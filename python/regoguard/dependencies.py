"""Authorize: a FastAPI dependency for per-route checks that need the route template or path
parameters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from anyio import to_thread
from fastapi import HTTPException, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from regoguard._input import Identity, default_identity, is_async
from regoguard._regoguard import Authorizer, Decision, PendingDecision, RequestSpec
from regoguard._responses import Answer, denied, evaluation_failed, input_failed


class Authorize:
    """``Depends(Authorize(authz, entrypoint="data.projects.allow"))``: decides the request with
    the route template (``input.route``, e.g. ``"/projects/{project_id}"``) and the converted
    path parameters (``input.path_params``) added to the request input, and returns the
    ``Decision``.

    A deny raises ``HTTPException`` with the decision's status (403 by default; 401 when the
    policy says so, with its ``WWW-Authenticate`` header) and its reason as detail; an input
    that cannot be built raises 400; an evaluation error raises 500 without policy detail.
    Works beside ``RegoGuardMiddleware`` with its own entrypoint.

    Args:
        authorizer: The ``Authorizer`` to ask.
        entrypoint: The rule to evaluate (default: the authorizer's).
        input: ``request -> dict`` (or an ``async def``) to build the input yourself instead.
        include_headers: Request headers the policy sees.
        identity: ``scope -> user`` (or an ``async def``); default as in the middleware.

    ``input.route`` is the *full* route template as the client's path is matched: router
    prefixes (``include_router(router, prefix="/api/v1")``, nested routers) and mounts
    included, e.g. ``"/api/v1/items/{item_id}"``. A mount whose own path has parameters
    contributes its matched (concrete) text. An ``identity``/``input`` that raises
    ``HTTPException`` propagates; any other exception is logged at WARNING (rate-limited) as
    ``identity failed`` (or ``input failed``) and answered 500.
        offload_after_seconds: As in the middleware: misses of a policy measured slower than
            this (default 0.001 s) are evaluated in a worker thread.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        entrypoint: str | None = None,
        input: Callable[[Request], Mapping[str, Any] | Awaitable[Mapping[str, Any]]] | None = None,
        include_headers: Iterable[str] = (),
        identity: Identity | None = None,
        offload_after_seconds: float | None = 0.001,
    ) -> None:
        if not isinstance(authorizer, Authorizer):
            raise TypeError(
                f"authorizer must be a regoguard.Authorizer, got {type(authorizer).__name__}"
            )
        if input is not None and not callable(input):
            raise TypeError("input must be callable")
        self.authorizer = authorizer
        self.entrypoint = entrypoint
        self.input = input
        self.identity = identity or default_identity
        self._async_input = input is not None and is_async(input)
        self._async_identity = is_async(self.identity)
        self._spec = RequestSpec(
            include_headers=list(include_headers), offload_after_seconds=offload_after_seconds
        )
        if entrypoint is not None:
            # A misspelt entrypoint fails at startup, not on the first request.
            authorizer.prepare(entrypoint)

    async def __call__(self, request: Request) -> Decision:
        scope = request.scope
        user: Any = None
        decision: Decision | PendingDecision
        try:
            if self.input is not None:
                what = "input"
                doc: Any = self.input(request)
                if self._async_input:
                    doc = await doc
            else:
                what = "identity"
                user = self.identity(scope)
                if self._async_identity:
                    user = await user
        except StarletteHTTPException:  # FastAPI's is one; so is JWTIdentity's TokenError
            raise
        except Exception as exc:
            raise _http_exception(input_failed(scope, exc, what)) from exc
        try:
            if self.input is not None:
                decision = self.authorizer.check(doc, entrypoint=self.entrypoint)
            else:
                decision = self.authorizer._check_scope(
                    scope,
                    self._spec,
                    user,
                    route=(route_template(scope), scope.get("path_params") or {}),
                    entrypoint=self.entrypoint,
                )
                if type(decision) is PendingDecision:  # a miss of a policy measured slow
                    decision = await to_thread.run_sync(decision.evaluate)
        except Exception as exc:  # an InputError is a 400, anything else a 500
            raise _http_exception(evaluation_failed(scope, exc, user)) from exc
        if not decision.allow:
            raise _http_exception(denied(decision))
        return decision


def _http_exception(answer: Answer) -> HTTPException:
    """FastAPI's ``HTTPException`` carrying a ``regoguard._responses`` answer."""
    status, detail, headers = answer
    return HTTPException(status_code=status, detail=detail, headers=headers)


def route_template(scope: Mapping[str, Any]) -> str:
    """The full route template of the matched route: what the client's path matched, with
    router prefixes and mounts (``"/api/v1/items/{item_id}"``); the path itself when no route
    matched.

    FastAPI 0.16x includes routers lazily and leaves the router-relative route in
    ``scope["route"]``; its effective route context holds the prefixed template. Older FastAPI
    copies routes with the prefix applied. Mounts (and a proxy's ``root_path``) contribute
    ``scope["root_path"]``, which ``input.path`` also includes.
    """
    route = scope.get("route")
    template = None
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        # Only when it describes this route (a mounted app's route may not set one).
        if context is not None and getattr(context, "original_route", None) is route:
            template = getattr(context, "path_format", None) or None
    if template is None:
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return str(scope["path"])
    # Starlette keeps the full path in scope["path"] (input.path) and what mounts (and a
    # proxy's root_path) consumed in root_path: the template gets the same prefix.
    # Where scope["path"] does not include root_path (older servers), neither does the template.
    root_path = str(scope.get("root_path", "") or "").rstrip("/")
    if root_path and str(scope.get("path", "")).startswith(root_path + "/"):
        return root_path + template
    return template
