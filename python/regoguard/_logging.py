"""Rate-limited warnings for causes a client triggers (an identity failure, an input with no
JSON form): visible under a default logging setup (WARNING), but never a log flood."""

from __future__ import annotations

import logging
import threading
import time

#: Each kind of message is logged at most once per this many seconds (as Redis errors are).
INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """``warn(kind, msg, *args)`` logs at WARNING at most once per ``interval`` per ``kind``;
    the next message of that kind says how many were suppressed meanwhile."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL_SECONDS) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, msg: str, *args: object) -> bool:
        """Logs (and returns True) unless a message of ``kind`` was logged too recently."""
        now = time.monotonic()
        with self._lock:
            if now < self._next.get(kind, 0.0):
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._next[kind] = now + self.interval
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg += f" ({suppressed} more like this in the last {self.interval:g}s not logged)"
        self.logger.warning(msg, *args)
        return True


warnings = RateLimitedLog(logging.getLogger("regoguard"))
"""The ``regoguard`` logger's shared rate-limited warnings."""
