"""The drain thread of decision logs: one daemon thread per process, started by the first
``Authorizer`` built with ``decision_log=``.

Requests only queue records in Rust (``crates/regoguard-core/src/decision_log.rs``); this thread takes them in
batches, has Rust render each as one OPA-style JSON line (masked), and writes it with
``logging.getLogger("regoguard.decisions").info(line)``. A slow or blocked handler therefore
only fills the bounded queue; records past the bound are dropped and counted
(``regoguard_decision_logs_dropped_total``).

Why the thread is Python's and sleeps in Python: a daemon thread that tries to take the GIL
while the interpreter finalizes is stopped where it waits. If it waited inside Rust (a blocking
receive with the GIL released), that stop would unwind through Rust frames and abort the
process at exit. Here it only ever waits in ``time.sleep`` (C code), and the Rust calls it makes
never release the GIL, so an exit at any moment stays clean.

At exit an ``atexit`` hook (which runs before ``logging`` shuts its handlers down) writes what is
still queued, unless the thread is stuck in a handler for more than a second, for at most
``EXIT_FLUSH_SECONDS``: threads still deciding while the interpreter exits would otherwise
keep it draining forever.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from regoguard._regoguard import _drain_decision_logs

logger = logging.getLogger("regoguard.decisions")

BATCH = 128
"""Most records taken per round (rendered with the GIL held: about 3 us each, so a round holds
it for well under a millisecond); a full batch means more are waiting, so no sleep."""
POLL_SECONDS = 0.05
"""How long the thread sleeps when the queues were empty."""
EXIT_WAIT_SECONDS = 1.0
"""How long the exit hook waits for a handler call in progress before giving up."""
EXIT_FLUSH_SECONDS = 2.0
"""How long the exit hook writes before it stops: threads that keep deciding while the
interpreter exits refill the queue as fast as it drains, and exit must not wait for them."""

_lock = threading.Lock()  # one writer at a time: the thread or the exit hook
_start = threading.Lock()
_thread: threading.Thread | None = None
_closing = False


def _drain_once() -> int:
    """Takes one batch and logs it; returns how many records were taken."""
    with _lock:
        if _closing:
            return 0
        return _write()


def _write() -> int:
    taken, lines = _drain_decision_logs(BATCH, logger.isEnabledFor(logging.INFO))
    for line in lines:
        logger.info(line)
    return int(taken)


def _run() -> None:
    while not _closing:
        try:
            taken = _drain_once()
        except Exception:  # a broken handler must not end logging for good
            logging.getLogger("regoguard").exception("regoguard: writing decision logs failed")
            taken = 0
        if taken < BATCH:
            time.sleep(POLL_SECONDS)


def _ensure_drain() -> None:
    """Starts the drain thread unless it runs (called by ``Authorizer(decision_log=...)``)."""
    global _thread
    with _start:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_run, name="regoguard-decision-log", daemon=True)
        _thread.start()


def _flush_at_exit() -> None:
    global _closing
    if not _lock.acquire(timeout=EXIT_WAIT_SECONDS):
        _closing = True  # the thread is stuck in a handler: leave it
        return
    try:
        _closing = True
        # One pass, bounded: what is queued now is written unless that takes past the
        # deadline; records queued meanwhile by threads still deciding may be left. Handlers
        # report their own errors (logging.Handler.handleError).
        deadline = time.monotonic() + EXIT_FLUSH_SECONDS
        while _write() == BATCH and time.monotonic() < deadline:
            pass
    finally:
        _lock.release()


def _after_fork_in_child() -> None:
    # Threads do not survive fork(): a worker forked from a preloaded app needs its own.
    global _thread, _lock, _start
    _lock, _start = threading.Lock(), threading.Lock()
    if _thread is not None and not _closing:
        _thread = None
        _ensure_drain()


atexit.register(_flush_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)
