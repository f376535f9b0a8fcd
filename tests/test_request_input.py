"""The request key path (RegoGuardMiddleware, Authorize) is as sound as check(): a decision
served from the cache for a request was computed for exactly that request's input document."""

from __future__ import annotations

from typing import Any

import pytest
import regoguard
from hypothesis import given, settings
from hypothesis import strategies as st
from regoguard._regoguard import RequestSpec

ECHO = """package authz
allow := {"allow": true, "reason": json.marshal(input)}
"""

segment = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), max_size=5)
paths = st.lists(segment, max_size=4).map(lambda parts: "/" + "/".join(parts))
query = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"tag", b"%41", b"a+b"]), st.binary(max_size=4)),
    max_size=4,
).map(lambda pairs: b"&".join(k + b"=" + v.replace(b"&", b"").replace(b"=", b"") for k, v in pairs))
headers = st.lists(
    st.tuples(
        st.sampled_from([b"x-tenant", b"X-Tenant", b"cookie", b"accept"]), st.binary(max_size=4)
    ),
    max_size=6,
)
users = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"id": st.text(max_size=4), "roles": st.lists(st.text(max_size=3), max_size=2)}
    ),
)


@pytest.fixture(scope="module")
def echo(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[regoguard.Authorizer, regoguard.Authorizer]:
    d = tmp_path_factory.mktemp("echo_req")
    (d / "authz.rego").write_text(ECHO)
    return regoguard.Authorizer(
        d, cache=regoguard.CacheConfig(max_entries=500)
    ), regoguard.Authorizer(d, cache=None)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=paths,
    q=query,
    hs=headers,
    user=users,
    websocket=st.booleans(),
    other=st.data(),
)
def test_request_decisions_match_their_input_document(
    echo: tuple[regoguard.Authorizer, regoguard.Authorizer],
    method: str,
    path: str,
    q: bytes,
    hs: list[tuple[bytes, bytes]],
    user: Any,
    websocket: bool,
    other: st.DataObject,
) -> None:
    cached, uncached = echo
    spec = RequestSpec(include_headers=["x-tenant"])
    scope = {
        "type": "websocket" if websocket else "http",
        "method": method,
        "path": path,
        "query_string": q,
        "headers": hs,
    }
    # A second request differing in one part, checked alternately with the first.
    variant = dict(scope)
    part = other.draw(st.sampled_from(["path", "query_string", "headers", "method"]))
    variant[part] = other.draw(
        {"path": paths, "query_string": query, "headers": headers, "method": st.just("PUT")}[part]
    )
    for s in (scope, variant, scope, variant):
        document = regoguard.build_input(s, include_headers=["x-tenant"], identity=lambda _: user)
        expected = uncached.check(document).reason
        assert cached._check_scope(s, spec, user).reason == expected
        assert document["path_segments"] == [p for p in s["path"].split("/") if p]
        # A repeated header: the first value as the app's request.headers.get() reads it,
        # and every value as its getlist() does.
        sent = [v.decode("latin-1") for k, v in s["headers"] if k == b"x-tenant"]
        assert document["header_values"] == ({"x-tenant": sent} if sent else {})
        assert document["headers"] == ({"x-tenant": sent[0]} if sent else {})
