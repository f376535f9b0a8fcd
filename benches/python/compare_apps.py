"""The workload and the seven ASGI variants of ``compare.py``; importable by uvicorn.

    uvicorn compare_apps:from_env --factory --app-dir benches/python

reads ``COMPARE_VARIANT`` (one of ``VARIANTS``), ``COMPARE_DATA`` (the data document written
by ``compare.py``) and, for the ``pdp`` variant, ``COMPARE_PDP_URL``. ``pdp_from_env`` is the
stand-in PDP (OPA's REST shape, evaluated with the regorus Python binding; **not OPA**).

Every guard reads the user the same way: ``Authorization: Bearer <user id>``; roles follow
from the id (``admin`` for every 100th user, ``user`` otherwise), so the workload is plain
HTTP that ``wrk`` can send.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_asgi as A
from harness import zipf

SEED = 20261121
N_USERS = 2_000
N_PROJECTS = 200
CAPACITY = 10_000  # every cache of the comparison: regoguard max_entries, TTLCache maxsize
TTL = 60.0
PDP_LABEL = (
    "stand-in PDP (not OPA): OPA's REST shape served by uvicorn, evaluated with the regorus binding"
)

# key -> label; the order of every table and plot.
VARIANTS = {
    "bare": "1 bare Starlette app",
    "noop": "2 + no-op pure ASGI middleware",
    "binding": "3 + regorus binding per request (gordon-to-regorus)",
    "binding_ttl": "4 + regorus binding + cachetools.TTLCache(10000, 60)",
    "pdp": "5 + httpx.AsyncClient to a stand-in PDP (not OPA)",
    "regoguard": "6 + RegoGuardMiddleware (cache 10,000)",
    "regoguard_nocache": "7 + RegoGuardMiddleware (cache=None)",
}

# (kind, share): GETs of projects dominate, as in a typical API.
MIX = [
    ("GET project", 0.55),
    ("GET /public", 0.15),
    ("GET /health", 0.05),
    ("GET project list", 0.05),
    ("POST project", 0.10),
    ("DELETE project", 0.05),
    ("GET /admin/users", 0.05),
]
OWN_PROJECT = 0.9  # how often a project GET names one of the user's own projects


# --------------------------------------------------------------------------- workload


def roles_of(uid: str) -> list[str]:
    return ["admin"] if int(uid[1:]) % 100 == 0 else ["user"]


def make_data(seed: int = SEED) -> dict[str, Any]:
    """``data.projects`` for 2,000 users: each user a member of 1-3 projects (Zipf-sized)."""
    rng = random.Random(seed)
    pick = zipf(N_PROJECTS, rng)
    members: dict[str, list[str]] = {str(p): [] for p in range(1, N_PROJECTS + 1)}
    for u in range(1, N_USERS + 1):
        for p in {pick() + 1 for _ in range(rng.randint(1, 3))}:
            members[str(p)].append(f"u{u}")
    return {"projects": {p: {"name": f"project-{p}", "members": m} for p, m in members.items()}}


def workload(count: int, data: dict[str, Any], seed: int = SEED) -> list[tuple[str, str, str]]:
    """``count`` (method, path, user id) triples; the same for the same seed and data."""
    rng = random.Random(seed + 1)
    users = [f"u{u}" for u in range(1, N_USERS + 1)]
    rng.shuffle(users)  # Zipf ranks -> users: the busiest are ordinary users
    projects = list(data["projects"])
    rng.shuffle(projects)
    mine: dict[str, list[str]] = {u: [] for u in users}
    for p, doc in data["projects"].items():
        for u in doc["members"]:
            mine[u].append(p)
    pick_user, pick_project = zipf(len(users), rng), zipf(len(projects), rng)
    kinds, weights = range(len(MIX)), [w for _, w in MIX]
    out = []
    for kind in rng.choices(kinds, weights, k=count):
        u = users[pick_user()]
        if kind == 0:
            own = mine[u] and rng.random() < OWN_PROJECT
            p = rng.choice(sorted(mine[u])) if own else projects[pick_project()]
            out.append(("GET", f"/api/v1/projects/{p}", u))
        elif kind == 1:
            out.append(("GET", f"/public/docs/{rng.choice(['index', 'api', 'faq'])}.html", u))
        elif kind == 2:
            out.append(("GET", "/health", u))
        elif kind == 3:
            out.append(("GET", "/api/v1/projects", u))
        elif kind in (4, 5):
            m = "POST" if kind == 4 else "DELETE"
            out.append((m, f"/api/v1/projects/{projects[pick_project()]}", u))
        else:
            out.append(("GET", "/admin/users", u))
    return out


def raw_request(method: str, path: str, uid: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {uid}\r\n"
        + ("Content-Length: 0\r\n" if method in ("POST", "PUT") else "")
        + "\r\n"
    ).encode()


def make_scope(method: str, path: str, uid: str) -> dict[str, Any]:
    """The scope uvicorn hands over for ``raw_request(...)`` (fresh objects every call)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path[:1] + path[1:],
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {uid}".encode())],
    }


# --------------------------------------------------------------------------- the guards


def identity(scope: dict[str, Any]) -> dict[str, Any] | None:
    """The user from ``Authorization: Bearer <id>``; the same callable for every guard."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            uid = value[7:].decode("latin-1")
            return {"id": uid, "roles": roles_of(uid)}
    return None


class PDPMiddleware(A.RegorusMiddleware):
    """What many services do today: POST the input to a PDP over HTTP on every request."""

    def __init__(self, app, url: str) -> None:
        self.app, self.url, self.identity = app, url, identity
        self.client = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.client is None:  # created in the serving loop
            import httpx

            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            self.client = httpx.AsyncClient(base_url=self.url, limits=limits, trust_env=False)
        inp = A.python_input(scope, self.identity(scope))
        r = await self.client.post("/v1/data/authz/allow", json={"input": inp})
        result = r.json().get("result") or {"allow": False, "reason": "undefined"}
        if result["allow"]:
            await self.app(scope, receive, send)
        else:
            await A._deny(send, result)


def engine(data: dict[str, Any]):
    """A regorus-binding engine with the realistic policy and ``data``."""
    binding = C.load_binding()
    if binding is None:
        sys.exit("no regorus binding: pip install -r benches/python/requirements.txt")
    fx = C.load_fixture()
    e = binding.module.Engine()
    for p in fx.rego_files:
        e.add_policy_from_file(str(p))
    e.add_data_json(json.dumps(data))
    return e


def authorizer(data: dict[str, Any], cache: bool):
    import regoguard as rg

    fx = C.load_fixture()
    return rg.Authorizer(
        policies=[str(p) for p in fx.rego_files],
        entrypoint=C.ENTRYPOINT,
        data=data,
        cache=rg.CacheConfig(max_entries=CAPACITY, ttl_seconds=TTL) if cache else None,
    )


def build(variant: str, data: dict[str, Any], pdp_url: str | None = None):
    """The ASGI app of one variant, over the same Starlette app as ``bench_asgi.py``."""
    app = A.build_app()
    if variant == "bare":
        return app
    if variant == "noop":
        return A.NoopMiddleware(app)
    if variant == "binding":
        return A.RegorusMiddleware(app, engine(data), identity)
    if variant == "binding_ttl":
        from cachetools import TTLCache

        return A.RegorusTTLMiddleware(app, engine(data), identity, TTLCache(CAPACITY, TTL))
    if variant == "pdp":
        if not pdp_url:
            raise ValueError("the pdp variant needs the PDP's URL")
        return PDPMiddleware(app, pdp_url)
    if variant in ("regoguard", "regoguard_nocache"):
        import regoguard as rg

        authz = authorizer(data, cache=variant == "regoguard")
        return rg.RegoGuardMiddleware(app, authorizer=authz, identity=identity)
    raise ValueError(f"unknown variant {variant!r}")


def from_env():
    """uvicorn factory: the variant named by the environment."""
    data = json.loads(Path(os.environ["COMPARE_DATA"]).read_text())
    return build(os.environ["COMPARE_VARIANT"], data, os.environ.get("COMPARE_PDP_URL"))


# --------------------------------------------------------------------------- the stand-in PDP


def pdp_app(data: dict[str, Any]):
    """``POST /v1/data/authz/allow`` with ``{"input": ...}`` -> ``{"result": ...}`` (OPA's
    REST shape), evaluated with the regorus Python binding. A stand-in, not OPA."""
    e = engine(data)
    set_input, eval_rule = e.set_input, e.eval_rule
    head = [(b"content-type", b"application/json")]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        if scope["path"] == "/health":
            status, out = 200, b'{"ok":true}'
        elif scope["method"] == "POST" and scope["path"] == "/v1/data/authz/allow":
            set_input(json.loads(body)["input"])
            status, out = 200, json.dumps({"result": eval_rule(C.ENTRYPOINT)}).encode()
        else:
            status, out = 404, b"{}"
        headers = [*head, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def pdp_from_env():
    return pdp_app(json.loads(Path(os.environ["COMPARE_DATA"]).read_text()))
