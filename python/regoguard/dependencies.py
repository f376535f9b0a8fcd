"""Authorize: a FastAPI dependency for per-route checks that need the route template or path
parameters."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from anyio import to_thread
from fastapi import HTTPException, Request

from regoguard._input import Identity, default_identity, failure_id
from regoguard._regoguard import Authorizer, Decision, InputError, PendingDecision, RequestSpec

logger = logging.getLogger("regoguard")


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
        input: ``request -> dict`` to build the input yourself instead.
        include_headers: Request headers the policy sees.
        identity: ``scope -> user``; default as in the middleware.
        offload_after_seconds: As in the middleware: misses of a policy measured slower than
            this (default 0.001 s) are evaluated in a worker thread.
    """

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        entrypoint: str | None = None,
        input: Callable[[Request], Mapping[str, Any]] | None = None,
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
        self._spec = RequestSpec(
            include_headers=list(include_headers), offload_after_seconds=offload_after_seconds
        )
        if entrypoint is not None:
            # A misspelt entrypoint fails at startup, not on the first request.
            authorizer.prepare(entrypoint)

    async def __call__(self, request: Request) -> Decision:
        scope = request.scope
        decision: Decision | PendingDecision
        try:
            if self.input is not None:
                decision = self.authorizer.check(self.input(request), entrypoint=self.entrypoint)
            else:
                route = scope.get("route")
                template = getattr(route, "path", None) or scope["path"]
                decision = self.authorizer._check_scope(
                    scope,
                    self._spec,
                    self.identity(scope),
                    route=(template, scope.get("path_params") or {}),
                    entrypoint=self.entrypoint,
                )
                if type(decision) is PendingDecision:  # a miss of a policy measured slow
                    decision = await to_thread.run_sync(decision.evaluate)
        except InputError as exc:
            raise HTTPException(status_code=400, detail="Bad Request") from exc
        except Exception as exc:
            error_id = failure_id(exc)
            logger.error(
                "regoguard: evaluation failed, answering 500 [error %s]: %s", error_id, exc
            )
            raise HTTPException(
                status_code=500, detail=f"authorization failed (error {error_id})"
            ) from exc
        if not decision.allow:
            status = decision.status or 403
            detail = decision.reason or ("Unauthorized" if status == 401 else "Forbidden")
            raise HTTPException(status_code=status, detail=detail, headers=decision.headers)
        return decision
