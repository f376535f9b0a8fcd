"""A small projects API guarded by regoguard: the example behind ``scripts/demo.sh``.

    .venv/bin/python -m uvicorn app:app --app-dir examples/basic_fastapi

Three ways to authorize, one ``Authorizer``:

- ``RegoGuardMiddleware`` asks ``policies/authz.rego`` (``data.authz.allow``) about every
  request but ``/health``, ``/metrics`` and ``/stats``: admins may do anything, anyone may read
  ``/public/*``, members may read their projects; everything else is 401 or 403 with a reason.
- ``Authorize(authz, entrypoint="data.projects.allow")`` guards ``PUT /projects/{project_id}``
  with ``policies/projects.rego``, which needs the route template and the path parameters:
  only the project's owners may change it.
- ``@cached_authorization`` caches a slow answer that is not Rego at all (a stand-in for a
  call to a billing service) for ``GET /projects/{project_id}/billing``.

``/metrics`` serves regoguard's Prometheus series (``metrics_app``: the authorizer and the
billing cache); ``/stats`` the same counters as JSON for humans and for ``run_demo.py``.

``data.json`` (users, roles, project memberships; see ``make_data.py``) is both the policies'
data and the app's stand-in database. ``REGOGUARD_DEMO_BARE=1`` builds the same app without
``RegoGuardMiddleware``, so ``examples/run_demo.py`` can measure what the middleware adds.
"""

# No `from __future__ import annotations`: FastAPI must resolve the annotations of the routes,
# which refer to names local to create_app.

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from regoguard import (
    Authorize,
    Authorizer,
    CacheConfig,
    Decision,
    RegoGuardMiddleware,
    cached_authorization,
    metrics_app,
)
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

HERE = Path(__file__).parent
POLICIES = HERE / "policies"
DATA = HERE / "data.json"

PUBLIC_PAGES = {
    "status": "All systems operational.",
    "docs": "Send `Authorization: Bearer <user id>`, e.g. `Bearer u42`.",
    "pricing": "Every plan includes unlimited projects.",
}


class DemoUser(BaseUser):
    """The authenticated user: regoguard's default identity turns it into
    ``input.user = {"id": identity, "name": display_name, "scopes": [...]}``."""

    def __init__(self, user_id: str, name: str) -> None:
        self.user_id = user_id
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def identity(self) -> str:
        return self.user_id


class BearerUserBackend(AuthenticationBackend):
    """DEMO ONLY: the bearer token *is* the user id (``Authorization: Bearer u42``), so anyone
    can be anyone. A real service verifies a signed token here (a JWT from its identity
    provider) and takes the user id from its claims. No header: an anonymous request, which
    the policy may still allow (``/public/*``) or answer with 401."""

    def __init__(self, users: dict[str, Any]) -> None:
        self.users = users

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        header = conn.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token not in self.users:
            raise AuthenticationError("invalid bearer token")
        return AuthCredentials(["authenticated"]), DemoUser(token, self.users[token]["name"])


def auth_error(conn: HTTPConnection, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


class ProjectUpdate(BaseModel):
    name: str


class Membership(BaseModel):
    role: Literal["owner", "member"] = "member"


def create_app(*, bare: bool | None = None) -> FastAPI:
    """The app, with its own ``Authorizer`` and caches (each call builds fresh ones).

    Args:
        bare: Leave ``RegoGuardMiddleware`` out (default: ``REGOGUARD_DEMO_BARE=1`` in the
            environment). The route-level checks stay, so the difference is the middleware.
    """
    if bare is None:
        bare = os.environ.get("REGOGUARD_DEMO_BARE", "") not in ("", "0")
    db: dict[str, Any] = json.loads(DATA.read_text())
    users: dict[str, Any] = db["users"]
    projects: dict[str, Any] = db["projects"]

    # One Authorizer per app, built where the app is built (never a hidden global): both
    # policy packages, the data file (re-read by authz.reload()), allows kept 60 s, denials 10 s.
    authz = Authorizer(
        POLICIES,
        entrypoint="data.authz.allow",
        data=DATA,
        cache=CacheConfig(max_entries=100_000, ttl_seconds=60, deny_ttl_seconds=10),
        # The budget is wall-clock time: on the demo's 2 cores, shared with its own load
        # generator, a thread can wait longer than the 0.1 s default for a core.
        eval_timeout_seconds=1.0,
    )
    owners_only = Authorize(authz, entrypoint="data.projects.allow")

    @cached_authorization(
        ttl_seconds=30,
        deny_ttl_seconds=5,
        max_entries=50_000,
        tags=lambda user_id, project_id: [f"project:{project_id}"],
    )
    async def may_see_billing(user_id: str, project_id: str) -> bool:
        """Owners of the project, the finance team and admins may see its bill."""
        await asyncio.sleep(0.002)  # stands in for a round trip to the billing service
        roles = users.get(user_id, {}).get("roles", [])
        if "finance" in roles or "admin" in roles:
            return True
        project = projects.get(project_id)
        return project is not None and project["members"].get(user_id) == "owner"

    middleware = [
        Middleware(AuthenticationMiddleware, backend=BearerUserBackend(users), on_error=auth_error)
    ]
    if not bare:
        middleware.append(
            Middleware(
                RegoGuardMiddleware,
                authorizer=authz,
                exclude_paths=["/health", "/metrics", "/stats"],
            )
        )
    app = FastAPI(title="regoguard example: projects", middleware=middleware)
    app.state.authz = authz
    app.state.may_see_billing = may_see_billing

    def project_or_404(project_id: str) -> dict[str, Any]:
        project = projects.get(project_id)
        if project is None:
            raise HTTPException(404, f"no project {project_id}")
        return project  # type: ignore[no-any-return]

    def user_id_of(request: Request) -> str:
        # The middleware already answered 401 without a token; the bare app has to check.
        if not request.user.is_authenticated:
            raise HTTPException(401, "login required", headers={"WWW-Authenticate": "Bearer"})
        return request.user.identity  # type: ignore[no-any-return]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # Prometheus text: this authorizer and every live @cached_authorization cache. In a real
    # service, keep it off the public listener (or behind the network policy of the scraper).
    app.add_route("/metrics", metrics_app(authz))

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "authorizer": authz.stats(),
            "cached_authorization": {"may_see_billing": may_see_billing.cache_info()._asdict()},
        }

    @app.get("/public/{page}")
    async def public(page: str) -> dict[str, str]:
        if page not in PUBLIC_PAGES:
            raise HTTPException(404, f"no page {page}")
        return {"page": page, "text": PUBLIC_PAGES[page]}

    @app.get("/projects/{project_id}")
    async def get_project(project_id: str, request: Request) -> dict[str, Any]:
        project = project_or_404(project_id)
        decision: Decision | None = request.scope.get("regoguard")
        return {
            "id": project_id,
            "name": project["name"],
            "members": len(project["members"]),
            "authorized": None if decision is None else decision.reason,
            "decided_by": None if decision is None else decision.source,
        }

    @app.put("/projects/{project_id}")
    async def rename_project(
        project_id: str,
        update: ProjectUpdate,
        decision: Annotated[Decision, Depends(owners_only)],
    ) -> dict[str, Any]:
        project = project_or_404(project_id)
        project["name"] = update.name
        return {"id": project_id, "name": project["name"], "authorized": decision.reason}

    @app.get("/projects/{project_id}/billing")
    async def billing(project_id: str, request: Request) -> dict[str, Any]:
        user_id = user_id_of(request)
        if not await may_see_billing(user_id, project_id):
            raise HTTPException(403, "the bill is for the project's owners and the finance team")
        project = project_or_404(project_id)
        seats = len(project["members"])
        return {"id": project_id, "seats": seats, "monthly_eur": 12 * seats}

    @app.put("/projects/{project_id}/members/{user_id}")
    async def set_member(project_id: str, user_id: str, membership: Membership) -> dict[str, Any]:
        # Admins only: the middleware's policy gives members GET and PUT /projects/{id} alone.
        if user_id not in users:
            raise HTTPException(404, f"no user {user_id}")
        project = project_or_404(project_id)
        project["members"][user_id] = membership.role
        # The policies read memberships from data: a new revision makes every decision made
        # under the old memberships unreachable at once. The billing answers are not Rego,
        # so their cache is told which project changed.
        authz.set_data(["projects", project_id, "members"], project["members"])
        may_see_billing.invalidate_tags([f"project:{project_id}"])
        return {"project": project_id, "user": user_id, "role": membership.role}

    @app.delete("/projects/{project_id}/members/{user_id}")
    async def remove_member(project_id: str, user_id: str) -> dict[str, Any]:
        project = project_or_404(project_id)
        if project["members"].pop(user_id, None) is None:
            raise HTTPException(404, f"{user_id} is not a member of {project_id}")
        authz.set_data(["projects", project_id, "members"], project["members"])
        may_see_billing.invalidate_tags([f"project:{project_id}"])
        return {"project": project_id, "user": user_id, "role": None}

    return app


app = create_app()
