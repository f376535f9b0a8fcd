"""``@cached_authorization``: cache the result of an authorization function in the Rust cache.

The wrapper only binds the arguments and hands them to ``ResultCache`` (``src/bindings/
result_cache.rs``), which keys, stores, expires and invalidates. What stays here is what needs
Python: keeping the signature FastAPI sees, and the single flight of async calls, which waits on
futures of the running event loop rather than on threads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, cast, overload

from regoguard import _l2
from regoguard._regoguard import (
    CacheMiss,
    ConfigError,
    InputError,
    RedisConfig,
    ResultCache,
    _canonical,
)

__all__ = ["CacheInfo", "CachedFunction", "cached_authorization"]

_P = inspect.Parameter

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class CacheInfo(NamedTuple):
    """Counters of one decorated function, named after ``functools.lru_cache``'s ``CacheInfo``
    where they mean the same (``maxsize`` is ``max_entries``, ``currsize`` is ``entries``)."""

    hits: int
    """Calls answered without calling the function, including concurrent calls that waited for
    another call of the same arguments."""
    misses: int
    """Calls of the function (failed ones included)."""
    max_entries: int
    """The ``max_entries`` given to the decorator."""
    entries: int
    """Results held now (expired ones count until they are read again or evicted)."""
    ttl_seconds: float
    """How long a truthy result is kept."""
    deny_ttl_seconds: float
    """How long a falsy result is kept (``ttl_seconds`` when the decorator got ``None``)."""


class CachedFunction(Protocol[P, R_co]):
    """A function decorated with ``@cached_authorization``: call it as the original."""

    @property
    def __wrapped__(self) -> Callable[P, R_co]:
        """The undecorated function."""
        ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drops the result of these arguments (keyed exactly as a call); returns whether one
        was held. Results being computed (for any arguments) at that moment are not stored."""
        ...

    def invalidate_tags(self, tags: Sequence[str]) -> None:
        """Drops every result whose ``tags=`` list shares a tag with ``tags``."""
        ...

    def invalidate_all(self) -> None:
        """Drops every result."""
        ...

    def cache_info(self) -> CacheInfo:
        """The counters and settings: ``hits``, ``misses``, ``max_entries``, ``entries``,
        ``ttl_seconds``, ``deny_ttl_seconds``."""
        ...


@overload
def cached_authorization(
    fn: Callable[P, R],
    /,
) -> CachedFunction[P, R]: ...


@overload
def cached_authorization(
    *,
    ttl_seconds: float = 600.0,
    key: Callable[..., Any] | None = None,
    tags: Callable[..., Sequence[str]] | None = None,
    deny_ttl_seconds: float | None = None,
    max_entries: int = 10_000,
    redis: RedisConfig | None = None,
    name: str | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...


def cached_authorization(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    ttl_seconds: float = 600.0,
    key: Callable[..., Any] | None = None,
    tags: Callable[..., Sequence[str]] | None = None,
    deny_ttl_seconds: float | None = None,
    max_entries: int = 10_000,
    redis: RedisConfig | None = None,
    name: str | None = None,
) -> Any:
    """Caches the result of a sync or async authorization function (a DB lookup, a remote call)
    in regoguard's Rust cache.

    ::

        @cached_authorization(ttl_seconds=600, tags=lambda user_id, project_id: [f"project:{project_id}"])
        async def can_edit(user_id: str, project_id: int) -> bool: ...

        can_edit.invalidate_tags(["project:42"])

    Usable bare (``@cached_authorization``) or with arguments. The wrapper of an ``async def`` is
    an ``async def``, of a plain function a plain function, and ``functools.wraps`` keeps the
    signature, so ``Depends(can_edit)`` resolves and documents the same parameters in FastAPI.

    Keys: the canonical JSON form of the bound arguments (``inspect.signature(fn).bind`` with
    defaults applied, as a dict of parameter name to value), never ``repr``/``hash``; so
    ``f(1, 2)``, ``f(1, project_id=2)`` and ``f(user_id=1, project_id=2)`` share one entry. An
    argument with no JSON form (a DB session, a ``Request``, ``self``) raises ``InputError``
    naming it (``args.db: ...``): pass ``key=``.

    Key spaces: each key also includes the function's identity: its ``module.qualname`` (or
    ``name=``) and, taken at decoration time, the canonical form of its free variables (the
    ``__closure__`` cells), its defaults, a ``functools.partial``'s arguments, a bound method's
    or callable object's attributes. So ``requires("viewer")`` and ``requires("admin")`` made
    by one factory never share a result, in this process or through Redis. A function in a
    cell counts by its own name and identity, a class by its ``module.qualname``. Each
    decorated function has its own L1, so only the Redis L2 is ever shared between functions:
    with ``redis=``, a cell with no canonical form (a client object, a lock) is refused with
    ``ConfigError`` at decoration time unless ``key=`` or ``name=`` is given (the caller then
    vouches that the key, or the name, tells such closures apart) and is left out of the
    identity.

    Concurrency: concurrent calls with the same key call the function once and share its
    result: threads for a sync function (waiting with the GIL released), coroutines of one
    asyncio event loop for an async one (not across loops, and not under trio, where each call
    computes on its own). Exceptions propagate to their caller and are never cached; a result
    that is not cached (an exception, a falsy result with ``deny_ttl_seconds=0``, or one
    computed across an invalidation) is not shared either: each waiter then calls the function
    itself, one at a time. A call that re-enters itself with the same arguments raises
    ``RuntimeError`` instead of waiting for itself.

    Every caller receives the same result object: return immutable values (bool, str, a
    frozen object). A ``Decision`` result is kept by ``.allow``; returning an awaitable from a
    plain function raises ``TypeError``.

    Args:
        ttl_seconds: How long a truthy result is kept (default 600.0).
        key: A callable taking the same arguments as the function and returning a JSON-shaped
            value to key on instead of the bound arguments (default ``None``).
        tags: A callable taking the same arguments and returning a list of str, stored with the
            result for ``invalidate_tags`` (default ``None``: no tags).
        deny_ttl_seconds: How long a falsy result is kept; ``None`` (default) means
            ``ttl_seconds``, ``0`` never caches falsy results.
        max_entries: Most results kept (default 10,000); past it the least useful are evicted.
        name: The name of this function's key space instead of its ``module.qualname``
            (default ``None``); give each closure its own (``name=f"requires:{role}"``) when a
            free variable has no canonical form. Functions given one name share results.
        redis: A ``RedisConfig`` to share results between processes through Redis (default
            ``None``: this process only). An L1 miss reads Redis first (a hit is kept in L1 for
            what is left of its Redis TTL); a computed result is written back for
            ``min(redis.ttl_seconds, its L1 TTL)``. Only JSON-shaped results are shared (bool,
            int, float, str, None, lists and str-keyed dicts; a tuple comes back as a list);
            any other result (a ``Decision``, an object) stays in this process's L1, counted as
            ``unshareable`` in ``redis.stats()``. ``invalidate``, ``invalidate_tags`` and
            ``invalidate_all`` also delete the Redis entries and reach every instance
            subscribed to ``redis.channel`` (waiting at most a few ``timeout_seconds``). A Redis error or timeout is a miss: the function is called.
            A sync function waits for Redis with the GIL released; an async one awaits it
            without blocking the event loop.

    The decorated function also has ``.invalidate(*args, **kwargs)``,
    ``.invalidate_tags(tags)``, ``.invalidate_all()`` and ``.cache_info()`` (see
    ``CachedFunction``).

    Raises:
        ConfigError: Invalid settings (negative, NaN or infinite seconds, ``max_entries``
            outside 1 to 2**32 - 1, ``key``/``tags`` not callable, a generator function, an
            empty ``name``), or a free variable with no canonical form without ``key=`` or
            ``name=``. At decoration time.
        InputError: From a call: an argument (or the ``key=`` result) has no JSON form.
        TypeError: From a call: ``tags=`` returned something other than a list of str, or a
            plain function returned an awaitable.
    """
    if redis is not None and not isinstance(redis, RedisConfig):
        raise ConfigError(f"redis must be a RedisConfig or None, got {type(redis).__name__}")
    new_cache = functools.partial(
        ResultCache,
        max_entries=max_entries,
        ttl_seconds=ttl_seconds,
        deny_ttl_seconds=deny_ttl_seconds,
    )
    # Validated now, so a bad setting fails where the decorator is written even when the
    # decorator is kept and applied later. (A cache allocates nothing until it holds values.)
    new_cache("")
    if key is not None and not callable(key):
        raise ConfigError(f"key must be a callable or None, got {type(key).__name__}")
    if tags is not None and not callable(tags):
        raise ConfigError(f"tags must be a callable or None, got {type(tags).__name__}")
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"name must be a non-empty str or None, got {name!r}")

    def decorate(fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise ConfigError(f"@cached_authorization needs a function, got {type(fn).__name__}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"@cached_authorization cannot cache generator function {_name(fn)}: "
                "its result is an iterator that the first caller would exhaust"
            )
        identity, opaque = _identity(fn)
        # Only the L2 is shared between functions (each decorated function has its own L1), so
        # only a shared function must be told apart from its siblings.
        if opaque and redis is not None and key is None and name is None:
            raise ConfigError(
                f"@cached_authorization cannot tell closures of {_name(fn)} apart: "
                f"{', '.join(opaque)} {'has' if len(opaque) == 1 else 'have'} no canonical form, so two "
                "functions made by one factory would share cached results; pass key= (what to key on) "
                "or name= (a key space per closure, e.g. name=f'requires:{role}')"
            )
        cache = new_cache(
            name or _name(fn), custom_key=key is not None, redis=redis, identity=identity
        )
        if _is_async(fn):
            wrapper = _async_wrapper(fn, cache, key, tags)
        else:
            wrapper = _sync_wrapper(fn, cache, key, tags)
        _attach(wrapper, cache, _key_of(fn, key))
        return wrapper

    return decorate if fn is None else decorate(fn)


def _name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


_MAX_IDENTITY_DEPTH = 4
_OPAQUE: Any = object()


def _identity(fn: Any, depth: int = 0, where: str = "") -> tuple[Any, list[str]]:
    """``(identity, opaque)``: a JSON-shaped value that tells apart functions sharing a
    ``module.qualname`` (closures of one factory, partials, bound methods, callable objects),
    and the names of the parts left out because they have no canonical form."""
    opaque: list[str] = []
    parts: dict[str, Any] = {}

    def form(value: Any, label: str) -> Any:
        if isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            if depth >= _MAX_IDENTITY_DEPTH:
                opaque.append(label)
                return _OPAQUE
            inner, more = _identity(value, depth + 1, f"{label}.")
            opaque.extend(more)
            return {"function": _name(value), "identity": inner}
        if isinstance(value, type):
            return {"class": f"{value.__module__}.{value.__qualname__}"}
        if isinstance(value, types.ModuleType):
            return {"module": value.__name__}
        try:
            _canonical(value, label)
        except (InputError, RecursionError, TypeError, ValueError):
            opaque.append(label)
            return _OPAQUE
        return value

    if isinstance(fn, functools.partial):
        parts["partial"] = form(fn.func, f"{where}func")
        parts["args"] = [form(a, f"{where}args[{i}]") for i, a in enumerate(fn.args)]
        parts["keywords"] = {k: form(v, f"{where}keywords.{k}") for k, v in fn.keywords.items()}
    elif isinstance(fn, types.MethodType):
        parts["method"] = form(fn.__func__, f"{where}__func__")
        parts["self"] = _attributes(fn.__self__, form, f"{where}__self__")
    elif isinstance(fn, types.FunctionType):
        cells = fn.__closure__ or ()
        closure: dict[str, Any] = {}
        for var, cell in zip(fn.__code__.co_freevars, cells):
            label = f"{where}{var}"
            try:
                value = cell.cell_contents
            except ValueError:  # not assigned yet
                opaque.append(label)
                continue
            closure[var] = form(value, label)
        parts["closure"] = closure
        parts["defaults"] = [
            form(d, f"{where}defaults[{i}]") for i, d in enumerate(fn.__defaults__ or ())
        ]
        parts["kwdefaults"] = {
            k: form(v, f"{where}{k}") for k, v in (fn.__kwdefaults__ or {}).items()
        }
    elif not isinstance(fn, type):
        # A callable object: its attributes are its configuration.
        parts["object"] = _attributes(fn, form, f"{where}self")
    return _without_opaque(parts), opaque


def _without_opaque(value: Any) -> Any:
    """``value`` without the parts that have no canonical form (left out of the identity)."""
    if isinstance(value, dict):
        return {k: _without_opaque(v) for k, v in value.items() if v is not _OPAQUE}
    if isinstance(value, list):
        return [_without_opaque(v) for v in value if v is not _OPAQUE]
    return value


def _attributes(obj: Any, form: Callable[[Any, str], Any], label: str) -> Any:
    attrs = getattr(obj, "__dict__", None)
    if isinstance(obj, (types.ModuleType, type)):
        return form(obj, label)
    if attrs is None:
        return form(obj, label)
    return {k: form(v, f"{label}.{k}") for k, v in attrs.items()}


def _is_async(fn: Callable[..., Any]) -> bool:
    # Also callable objects with an `async def __call__` (and partials of async functions,
    # which iscoroutinefunction unwraps).
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _binder(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """``(args, kwargs) -> {parameter: value}``: what ``inspect.signature(fn).bind(*args,
    **kwargs)`` with ``apply_defaults()`` gives, as a dict.

    Two common calls skip ``bind`` (about 1.5 us, most of a hit's cost) because their mapping
    is known without it: every parameter given positionally (a plain call), or every parameter
    given by name (how FastAPI calls a dependency), when no parameter is variadic and, for the
    positional case, none is keyword-only (for the named case, none is positional-only). The
    result is the same mapping, and the key is its canonical form, so both paths give the same
    key. Anything else, including every call ``bind`` would reject, goes through ``bind``.
    """
    signature = inspect.signature(fn)
    bind = signature.bind
    params = list(signature.parameters.values())
    names = tuple(p.name for p in params)
    count = len(names)
    name_set = frozenset(names)
    kinds = {p.kind for p in params}
    by_position = kinds <= {_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD}
    by_name = kinds <= {_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY}

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not kwargs:
            if by_position and len(args) == count:
                return dict(zip(names, args))  # lengths checked above; strict= costs 40%
        elif by_name and not args and kwargs.keys() == name_set:
            return kwargs
        bound = bind(*args, **kwargs)
        if len(bound.arguments) != count:  # every parameter bound already: nothing to apply
            bound.apply_defaults()
        return bound.arguments

    return arguments


def _key_of(
    fn: Callable[..., Any], key: Callable[..., Any] | None
) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """What a call with ``(args, kwargs)`` is keyed on (before the Rust canonical form)."""
    if key is None:
        return _binder(fn)
    return lambda args, kwargs: key(*args, **kwargs)


def _sync_wrapper(
    fn: Callable[..., Any],
    cache: ResultCache,
    key: Callable[..., Any] | None,
    tags: Callable[..., Any] | None,
) -> Callable[..., Any]:
    call = cache.call
    key_of = _key_of(fn, key)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call(key_of(args, kwargs), fn, args, kwargs, tags)

    return wrapper


def _async_wrapper(
    fn: Callable[..., Any],
    cache: ResultCache,
    key: Callable[..., Any] | None,
    tags: Callable[..., Any] | None,
) -> Callable[..., Any]:
    lookup = cache.lookup
    fill = _async_filler(fn, cache, tags)
    key_of = _key_of(fn, key)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = key_of(args, kwargs)
        value = lookup(k)
        if type(value) is not CacheMiss:
            return value
        return await fill(k, value, args, kwargs)

    return wrapper


def _async_filler(
    fn: Callable[..., Any],
    cache: ResultCache,
    tags: Callable[..., Any] | None,
) -> Callable[..., Any]:
    """The miss path of an async function: one call per (event loop, key) at a time."""
    # Calls in flight: the future is done when the call ended, however it ended. Keyed by loop
    # too, since a future belongs to one loop.
    in_flight: dict[tuple[asyncio.AbstractEventLoop, CacheMiss], asyncio.Future[None]] = {}
    # Keys the current task (and the tasks it started) is computing: awaiting one of them
    # would wait for itself.
    computing: contextvars.ContextVar[tuple[CacheMiss, ...]] = contextvars.ContextVar(
        "regoguard_computing", default=()
    )
    lookup, begin, store = cache.lookup, cache.begin, cache.store
    shared = cache.shared

    async def fill(k: Any, miss: CacheMiss, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        done: asyncio.Future[None] | None = None
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): no coalescing
            loop = None
        if loop is not None:
            while (leader := in_flight.get((loop, miss))) is not None:
                if miss in computing.get():
                    raise RuntimeError(
                        f"{cache.name} called itself with the same arguments while computing "
                        "them; the call would wait for itself (single flight), so it is refused"
                    )
                # shield: a cancelled waiter must not cancel the future the others wait on.
                await asyncio.shield(leader)
                value = lookup(k)
                if type(value) is not CacheMiss:
                    return value
                # Not stored (an exception, not cacheable, invalidated): compute in turn.
                miss = value
            done = loop.create_future()
            in_flight[(loop, miss)] = done
        token = computing.set((*computing.get(), miss))
        try:
            if shared and loop is not None:
                found, value = await _l2.fetch(cache, miss, loop)
                if found:
                    return value
            begin()
            value = await fn(*args, **kwargs)
            store(miss, value, () if tags is None else tags(*args, **kwargs))
            return value
        finally:
            computing.reset(token)
            if loop is not None and done is not None:
                del in_flight[(loop, miss)]
                done.set_result(None)

    return fill


def _attach(
    wrapper: Callable[..., Any],
    cache: ResultCache,
    key_of: Callable[[tuple[Any, ...], dict[str, Any]], Any],
) -> None:
    def invalidate(*args: Any, **kwargs: Any) -> bool:
        return cache.invalidate(key_of(args, kwargs))

    def cache_info() -> CacheInfo:
        hits, misses, entries = cache.info()
        return CacheInfo(
            hits=hits,
            misses=misses,
            max_entries=cache.max_entries,
            entries=entries,
            ttl_seconds=cache.ttl_seconds,
            deny_ttl_seconds=cache.deny_ttl_seconds,
        )

    w = cast(Any, wrapper)
    w.invalidate = invalidate
    w.invalidate_tags = cache.invalidate_tags
    w.invalidate_all = cache.invalidate_all
    w.cache_info = cache_info
