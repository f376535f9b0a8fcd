"""@cached_authorization: keys, lifetimes, tags, single flight, errors, and FastAPI."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
import regoguard
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from regoguard import ConfigError, InputError, cached_authorization
from regoguard.decorators import CacheInfo


class Counter:
    """Counts calls per argument tuple."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, *args: Any) -> None:
        with self.lock:
            self.calls.append(args)

    def __len__(self) -> int:
        return len(self.calls)


@pytest.fixture
def counter() -> Counter:
    return Counter()


class Session:
    """Stands in for a DB session: no JSON form."""


# --- Wrapping ----------------------------------------------------------------------------------


def test_wrappers_keep_kind_name_and_signature() -> None:
    def sync(user_id: str, project_id: int = 1) -> bool:
        """Sync doc."""
        return True

    async def coro(user_id: str, project_id: int = 1) -> bool:
        """Async doc."""
        return True

    for fn in (sync, coro):
        wrapped = cached_authorization(fn)
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)
        assert inspect.signature(wrapped) == inspect.signature(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__doc__ == fn.__doc__
        assert wrapped.__wrapped__ is fn
    assert not inspect.iscoroutinefunction(cached_authorization(sync))
    assert inspect.iscoroutinefunction(cached_authorization(ttl_seconds=1)(coro))


def test_bare_and_called_forms(counter: Counter) -> None:
    @cached_authorization
    def bare(x: int) -> bool:
        counter(x)
        return True

    @cached_authorization()
    def called(x: int) -> bool:
        counter(x)
        return True

    assert bare(1) and bare(1) and called(1) and called(1)
    assert len(counter) == 2


def test_callable_object_with_async_call_gets_an_async_wrapper() -> None:
    class Check:
        async def __call__(self, x: int) -> bool:
            return x > 0

    wrapped = cached_authorization(Check())
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped(1)) is True


# --- Keys --------------------------------------------------------------------------------------


def test_positional_keyword_and_default_calls_share_one_entry(counter: Counter) -> None:
    @cached_authorization
    def can_edit(user_id: str, project_id: int = 2) -> bool:
        counter(user_id, project_id)
        return True

    assert can_edit("u", 2)
    assert can_edit("u", project_id=2)
    assert can_edit(user_id="u", project_id=2)
    assert can_edit(project_id=2, user_id="u")
    assert can_edit("u")  # the default is applied before keying
    assert len(counter) == 1
    assert can_edit("u", 3) and can_edit("v", 2)
    assert len(counter) == 3
    info = can_edit.cache_info()
    assert (info.hits, info.misses, info.entries) == (4, 3, 3)


def test_keys_follow_values_not_repr_or_dict_order(counter: Counter) -> None:
    @cached_authorization
    def check(claims: dict[str, Any], n: Any) -> bool:
        counter(n)
        return True

    check({"a": 1, "b": [1, 2]}, 1)
    check({"b": [1, 2], "a": 1}, 1)  # same dict, other order
    assert len(counter) == 1
    check({"a": 1, "b": [1, 2]}, 1.0)  # 1 and 1.0 stay apart, as in decision keys
    check({"a": 1, "b": (1, 2)}, 1)  # a tuple is a JSON array like a list
    assert len(counter) == 2


def test_variadic_and_keyword_only_parameters(counter: Counter) -> None:
    @cached_authorization
    def f(a: int, /, *rest: int, scope: str = "read", **extra: Any) -> bool:
        counter(a, rest, scope, extra)
        return True

    f(1, 2, 3, scope="read", z=1)
    f(1, 2, 3, z=1)
    assert len(counter) == 1
    f(1, 2, 3, z=2)
    f(1, 2, z=1)
    assert len(counter) == 3
    with pytest.raises(TypeError):  # bind's own error, before any key is made
        f()  # type: ignore[call-arg]


def test_functions_never_share_entries() -> None:
    @cached_authorization
    def first(x: int) -> str:
        return "first"

    @cached_authorization
    def second(x: int) -> str:
        return "second"

    assert (first(1), second(1), first(1), second(1)) == ("first", "second", "first", "second")


def test_unkeyable_argument_names_it_and_hints_at_key(counter: Counter) -> None:
    @cached_authorization
    def can_edit(user_id: str, db: Session) -> bool:
        counter(user_id)
        return True

    with pytest.raises(InputError) as e:
        can_edit("u", Session())
    assert str(e.value).startswith("args.db: unsupported type 'Session' has no JSON form")
    assert "key=" in str(e.value)
    assert e.value.path == "args.db"
    assert isinstance(e.value, TypeError)
    assert len(counter) == 0, "nothing is called without a key"
    with pytest.raises(InputError, match=r"args\.claims\.roles: unsupported type 'set'"):
        cached_authorization(lambda claims: True)({"roles": {"admin"}})


def test_key_callable_replaces_the_arguments(counter: Counter) -> None:
    @cached_authorization(key=lambda user_id, db: {"user": user_id})
    def can_edit(user_id: str, db: Session) -> bool:
        counter(user_id)
        return True

    assert can_edit("u", Session()) and can_edit("u", db=Session())
    assert len(counter) == 1
    assert can_edit.invalidate("u", Session()) is True
    assert can_edit("u", Session())
    assert len(counter) == 2


def test_key_callable_returning_no_json_form_is_an_input_error() -> None:
    @cached_authorization(key=lambda x: {x})
    def f(x: int) -> bool:
        return True

    with pytest.raises(InputError) as e:
        f(1)
    assert e.value.path == "key()"
    assert "key= must return a JSON-shaped value" in str(e.value)


# --- Lifetimes and size ------------------------------------------------------------------------


def test_ttl_for_truthy_and_deny_ttl_for_falsy(counter: Counter) -> None:
    @cached_authorization(ttl_seconds=60, deny_ttl_seconds=0.25)
    def allowed(x: int) -> bool:
        counter(x)
        return x > 0

    for x in (1, -1, 1, -1):
        allowed(x)
    assert len(counter) == 2
    time.sleep(0.35)  # short lifetimes, with room for a loaded CI machine
    for x in (1, -1):
        allowed(x)
    assert counter.calls == [(1,), (-1,), (-1,)], "only the deny expired"
    info = allowed.cache_info()
    assert (info.ttl_seconds, info.deny_ttl_seconds) == (60.0, 0.25)


def test_deny_ttl_defaults_to_ttl_and_zero_never_caches_falsy(counter: Counter) -> None:
    @cached_authorization(ttl_seconds=0.25)
    def same(x: int) -> bool:
        counter("same", x)
        return False

    same(1)
    same(1)
    assert len(counter) == 1
    assert same.cache_info().deny_ttl_seconds == 0.25
    time.sleep(0.35)
    same(1)
    assert len(counter) == 2

    @cached_authorization(deny_ttl_seconds=0)
    def never(x: int) -> Any:
        counter("never", x)
        return [] if x < 0 else "yes"

    for x in (-1, -1, 1, 1):
        never(x)
    assert counter.calls[2:] == [("never", -1), ("never", -1), ("never", 1)]


def test_max_entries_bounds_the_cache() -> None:
    @cached_authorization(max_entries=100)
    def f(x: int) -> bool:
        return True

    for i in range(1000):
        f(i)
    info = f.cache_info()
    assert info.max_entries == 100
    assert info.entries <= 110, info


def test_cache_info_is_a_frozen_lru_style_tuple() -> None:
    @cached_authorization(ttl_seconds=5, max_entries=7)
    def f(x: int) -> bool:
        return True

    f(1)
    f(1)
    info = f.cache_info()
    assert isinstance(info, CacheInfo) and isinstance(info, tuple)
    assert info == CacheInfo(
        hits=1, misses=1, max_entries=7, entries=1, ttl_seconds=5.0, deny_ttl_seconds=5.0
    )
    with pytest.raises(AttributeError):
        info.hits = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_seconds": -1},
        {"ttl_seconds": float("nan")},
        {"ttl_seconds": float("inf")},
        {"deny_ttl_seconds": -0.5},
        {"max_entries": 0},
        {"max_entries": -3},
        {"max_entries": 2**32},
        {"key": "user_id"},
        {"tags": ["project:1"]},
    ],
)
def test_bad_settings_raise_config_error_at_the_decorator(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as e:
        cached_authorization(**kwargs)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "kwargs", [{"max_entries": 1.5}, {"ttl_seconds": "600"}, {"deny_ttl_seconds": [1]}]
)
def test_settings_of_the_wrong_type_raise_type_error_like_cache_config(
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(TypeError):
        cached_authorization(**kwargs)
    with pytest.raises(TypeError):
        regoguard.CacheConfig(**kwargs)


def test_what_cannot_be_cached_is_refused_at_decoration() -> None:
    def gen(x: int) -> Iterator[bool]:
        yield True

    async def agen(x: int) -> Any:
        yield True

    for fn in (gen, agen):
        with pytest.raises(ConfigError, match="generator"):
            cached_authorization(fn)
    with pytest.raises(ConfigError, match="needs a function"):
        cached_authorization(42)  # type: ignore[call-overload]


# --- Tags and invalidation ---------------------------------------------------------------------


def test_tags_invalidate_intersecting_entries_only(counter: Counter) -> None:
    @cached_authorization(tags=lambda user_id, project_id: [f"project:{project_id}", user_id])
    def can_edit(user_id: str, project_id: int) -> bool:
        counter(user_id, project_id)
        return True

    for user, project in [("u", 1), ("v", 1), ("u", 2), ("w", 3)]:
        can_edit(user, project)
    can_edit.invalidate_tags(["project:1", "nope"])
    assert can_edit.cache_info().entries == 2
    for user, project in [("u", 1), ("v", 1), ("u", 2), ("w", 3)]:
        can_edit(user, project)
    assert len(counter) == 6, "only the project:1 entries were recomputed"
    can_edit.invalidate_tags(["u"])
    can_edit.invalidate_tags([])
    assert can_edit.cache_info().entries == 2
    with pytest.raises(TypeError):
        can_edit.invalidate_tags("project:1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (lambda x: "project:1", "got 'str'"),
        (lambda x: {"project:1"}, "got 'set'"),
        (lambda x: ["ok", 1], "an item of type 'int'"),
        (lambda x: None, "got 'NoneType'"),
    ],
)
def test_tags_returning_the_wrong_type_is_a_type_error_and_nothing_is_cached(
    counter: Counter, tags: Callable[[int], Any], message: str
) -> None:
    @cached_authorization(tags=tags)
    def sync(x: int) -> bool:
        counter("sync", x)
        return True

    @cached_authorization(tags=tags)
    async def coro(x: int) -> bool:
        counter("async", x)
        return True

    for _ in range(2):
        with pytest.raises(TypeError, match=message):
            sync(1)
        with pytest.raises(TypeError, match=message):
            asyncio.run(coro(1))
    assert len(counter) == 4, "called again every time: nothing was cached"
    assert sync.cache_info().entries == coro.cache_info().entries == 0


def test_invalidate_one_entry_and_all(counter: Counter) -> None:
    @cached_authorization
    def can_edit(user_id: str, project_id: int = 1) -> bool:
        counter(user_id, project_id)
        return True

    assert can_edit("u") and can_edit("v")
    assert can_edit.invalidate(user_id="u", project_id=1) is True  # same key as can_edit("u")
    assert can_edit.invalidate("u") is False
    assert can_edit("u") and can_edit("v")
    assert len(counter) == 3
    can_edit.invalidate_all()
    assert can_edit.cache_info().entries == 0
    assert can_edit("u") and can_edit("v")
    assert len(counter) == 5
    with pytest.raises(InputError):
        can_edit.invalidate(Session())


def test_invalidation_during_a_call_keeps_its_result_out_of_the_cache(counter: Counter) -> None:
    @cached_authorization
    def racy(x: int) -> bool:
        counter(x)
        racy.invalidate_tags(["anything"])  # e.g. another request revoking access meanwhile
        return True

    assert racy(1) is True
    assert racy.cache_info().entries == 0

    @cached_authorization
    async def racy_async(x: int) -> bool:
        counter(x)
        racy_async.invalidate(99)
        return True

    assert asyncio.run(racy_async(1)) is True
    assert racy_async.cache_info().entries == 0


# --- Results -----------------------------------------------------------------------------------


def test_every_caller_gets_the_same_object() -> None:
    @cached_authorization
    def roles(user_id: str) -> frozenset[str]:
        return frozenset({"admin"})

    assert roles("u") is roles("u")


def test_a_decision_result_is_kept_by_its_allow(authorizer: Callable[..., Any]) -> None:
    authz = authorizer('package authz\nallow if input.user == "alice"\n')
    seen = Counter()

    @cached_authorization(deny_ttl_seconds=0)
    def check(user: str) -> regoguard.Decision:
        seen(user)
        return authz.check({"user": user})

    assert check("alice").allow and check("alice").allow
    assert not check("bob").allow and not check("bob").allow
    assert seen.calls == [("alice",), ("bob",), ("bob",)]


def test_a_sync_function_returning_an_awaitable_is_refused() -> None:
    class Later:
        def __await__(self) -> Iterator[None]:
            return iter(())

    @cached_authorization
    def oops(x: int) -> Any:
        return Later()

    with pytest.raises(TypeError, match="returned an awaitable"):
        oops(1)
    assert oops.cache_info().entries == 0


# --- Exceptions --------------------------------------------------------------------------------


def test_exceptions_propagate_and_are_never_cached(counter: Counter) -> None:
    @cached_authorization
    def flaky(x: int) -> bool:
        counter(x)
        if len(counter) == 1:
            raise ConnectionError("db down")
        return True

    with pytest.raises(ConnectionError, match="db down"):
        flaky(1)
    assert flaky(1) is True and flaky(1) is True
    assert len(counter) == 2
    assert flaky.cache_info().misses == 2

    @cached_authorization
    async def flaky_async(x: int) -> bool:
        counter(x)
        if len(counter) == 3:
            raise ConnectionError("db down")
        return True

    with pytest.raises(ConnectionError):
        asyncio.run(flaky_async(1))
    assert asyncio.run(flaky_async(1)) is True and asyncio.run(flaky_async(1)) is True
    assert len(counter) == 4


# --- Single flight -----------------------------------------------------------------------------


def run_threads(n: int, target: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as e:  # noqa: BLE001
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_sync_single_flight_16_threads(counter: Counter) -> None:
    @cached_authorization
    def slow(user_id: str) -> str:
        counter(user_id)
        time.sleep(0.2)  # releases the GIL: the other threads really run meanwhile
        return f"ok {user_id}"

    results = run_threads(16, lambda: slow("u"))
    assert results == ["ok u"] * 16
    assert len(counter) == 1
    assert all(r is results[0] for r in results), "one shared result object"
    info = slow.cache_info()
    assert (info.hits, info.misses) == (15, 1)


def test_sync_waiters_of_a_failed_call_retry_one_at_a_time(counter: Counter) -> None:
    running = threading.Lock()
    overlaps: list[bool] = []

    @cached_authorization
    def failing(x: int) -> bool:
        overlaps.append(not running.acquire(blocking=False))
        try:
            counter(x)
            time.sleep(0.02)
            raise ConnectionError("db down")
        finally:
            running.release()

    results = run_threads(4, lambda: failing(1))
    assert all(isinstance(r, ConnectionError) for r in results)
    assert len(counter) == 4, "each waiter called the function itself"
    assert not any(overlaps), "never two calls of one key at once"
    assert failing.cache_info().entries == 0


def test_async_single_flight_16_coroutines(counter: Counter) -> None:
    @cached_authorization
    async def slow(user_id: str) -> str:
        counter(user_id)
        await asyncio.sleep(0.1)
        return f"ok {user_id}"

    async def main() -> list[str]:
        return await asyncio.gather(*(slow("u") for _ in range(16)), slow("v"))

    results = asyncio.run(main())
    assert results == ["ok u"] * 16 + ["ok v"]
    assert counter.calls == [("u",), ("v",)]
    info = slow.cache_info()
    assert (info.hits, info.misses) == (15, 2)


def test_async_waiters_of_a_failed_call_retry_one_at_a_time(counter: Counter) -> None:
    active = 0
    peak = 0

    @cached_authorization
    async def failing(x: int) -> bool:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        counter(x)
        await asyncio.sleep(0.01)
        active -= 1
        raise ConnectionError("db down")

    async def main() -> list[Any]:
        return await asyncio.gather(*(failing(1) for _ in range(4)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ConnectionError) for r in results)
    assert (len(counter), peak) == (4, 1)


def test_a_cancelled_waiter_does_not_cancel_the_call(counter: Counter) -> None:
    @cached_authorization
    async def slow(x: int) -> bool:
        counter(x)
        await asyncio.sleep(0.05)
        return True

    async def main() -> bool:
        leader = asyncio.ensure_future(slow(1))
        await asyncio.sleep(0)
        waiter = asyncio.ensure_future(slow(1))
        await asyncio.sleep(0.01)
        waiter.cancel()
        return await leader

    assert asyncio.run(main()) is True
    assert len(counter) == 1
    assert slow.cache_info().entries == 1


def test_results_outlive_the_event_loop(counter: Counter) -> None:
    @cached_authorization
    async def f(x: int) -> bool:
        counter(x)
        return True

    assert asyncio.run(f(1)) and asyncio.run(f(1))
    assert len(counter) == 1


def test_a_call_that_waits_for_itself_is_refused() -> None:
    @cached_authorization
    def sync(x: int) -> bool:
        return sync(x)

    with pytest.raises(RuntimeError, match="called itself with the same arguments"):
        sync(1)

    @cached_authorization
    async def coro(x: int) -> bool:
        return await coro(x)

    with pytest.raises(RuntimeError, match="called itself with the same arguments"):
        asyncio.run(coro(1))

    @cached_authorization
    def countdown(x: int) -> bool:  # other arguments are fine
        return True if x == 0 else countdown(x - 1)

    assert countdown(3) is True


# --- FastAPI -----------------------------------------------------------------------------------


def get_db() -> Iterator[Session]:
    yield Session()


def make_app(can_edit: Callable[..., Any]) -> FastAPI:
    app = FastAPI()

    # A default rather than Annotated: `can_edit` is a local, which string annotations (this
    # module uses `from __future__ import annotations`) cannot see.
    async def require_edit(allowed: bool = Depends(can_edit)) -> None:
        if not allowed:
            raise HTTPException(403, "no")

    @app.get("/projects/{project_id}", dependencies=[Depends(require_edit)])
    async def project(project_id: int) -> dict[str, int]:
        return {"project": project_id}

    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_as_a_fastapi_dependency(kind: str, counter: Counter) -> None:
    if kind == "sync":

        @cached_authorization(key=lambda user_id, project_id, db: [user_id, project_id])
        def can_edit(
            user_id: str, project_id: int, db: Annotated[Session, Depends(get_db)]
        ) -> bool:
            assert isinstance(db, Session)
            counter(user_id, project_id)
            return user_id == "alice"

        dependency: Callable[..., Any] = can_edit
    else:

        @cached_authorization
        async def can_edit_async(user_id: str, project_id: int) -> bool:
            counter(user_id, project_id)
            return user_id == "alice"

        dependency = can_edit_async

    client = TestClient(make_app(dependency))
    for _ in range(3):
        assert client.get("/projects/7", params={"user_id": "alice"}).json() == {"project": 7}
        assert client.get("/projects/7", params={"user_id": "bob"}).status_code == 403
    r = client.get("/projects/x", params={"user_id": "alice"})
    assert r.status_code == 422, "the dependency's parameters are still validated"
    assert client.get("/projects/7").status_code == 422
    assert counter.calls == [("alice", 7), ("bob", 7)]
    undecorated = make_app(dependency.__wrapped__).openapi()  # type: ignore[attr-defined]
    assert make_app(dependency).openapi() == undecorated
