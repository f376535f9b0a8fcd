"""Glue between the L2's Rust tasks and asyncio (private; handed to the native module as hooks by
``regoguard/__init__.py``).

A Redis read runs as a task on regoguard's own tokio runtime; its result reaches the waiting
coroutine's event loop through ``loop.call_soon_threadsafe(resolve, future, found, value)``.
"""

from __future__ import annotations

import asyncio
import atexit
from typing import Any

from regoguard import _regoguard

_registered = False


def register_atexit() -> None:
    """Stops the L2 runtime at interpreter exit, before finalisation (called once)."""
    global _registered
    if not _registered:
        _registered = True
        atexit.register(_regoguard._l2_shutdown)


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no asyncio loop (trio, or a plain thread): no L2 on this path
        return None


def resolve(future: asyncio.Future[tuple[bool, Any]], found: bool, value: Any) -> None:
    if not future.done():  # the waiter may have been cancelled
        future.set_result((found, value))


async def ready(value: Any) -> Any:
    return value


async def finish(pending: Any, future: asyncio.Future[tuple[bool, Any]]) -> Any:
    found, value = await future
    return value if found else pending.evaluate()


async def fetch(cache: Any, miss: Any, loop: asyncio.AbstractEventLoop) -> tuple[bool, Any]:
    """``(found, value)`` of a decorated async function's key in the L2."""
    future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
    if not cache.l2_get(miss, loop.call_soon_threadsafe, future):
        return (False, None)
    return await future
