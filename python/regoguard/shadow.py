"""Shadow mode: ask a second decision maker about the requests regoguard decides, to migrate
from it (or to it) safely.

    app.add_middleware(
        RegoGuardMiddleware,
        authorizer=authz,
        shadow=Shadow(OPAServer("http://127.0.0.1:8181/v1/data/httpapi/authz"), sample_rate=0.1),
    )

The shadow is either a second ``Authorizer`` (a candidate policy) or an ``OPAServer`` (the PDP
the service asks today, over OPA's Data API). For a sampled share of requests, *after the
response has been sent*, the request's input document is queued (bounded; a full queue drops
and counts, never blocks) for one daemon thread per ``Shadow``, which asks the shadow and
compares its ``allow`` with the enforced one:

- ``regoguard_shadow_total{shadow="...",outcome="agree|disagree|error"}`` counts the answers,
  ``regoguard_shadow_dropped_total{shadow="..."}`` what a full queue dropped; both are in
  ``metrics_app``/``RegoguardCollector`` and in ``Shadow.stats()``;
- each disagreement is logged at WARNING on ``regoguard.shadow`` as one JSON line with both
  results and the input, masked like decision logs (the authorizer's ``DecisionLogConfig.mask``,
  else the ``authorization`` and ``cookie`` headers);
- a failing shadow (a timeout, a refused connection, a non-200, a result with no boolean
  ``allow``) counts as ``error`` and is logged at WARNING at most once per 10 seconds.

The enforced decision is never affected: the shadow runs after the response, on its own
thread, and nothing it answers reaches the client.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

from regoguard._logging import RateLimitedLog
from regoguard._regoguard import Authorizer, ConfigError, Decision, RequestSpec, build_request_input
from regoguard._types import ShadowStats

__all__ = ["OPAServer", "Shadow"]

logger = logging.getLogger("regoguard.shadow")
_errors = RateLimitedLog(logger)
_DEFAULT_MASK = ("/input/headers/authorization", "/input/headers/cookie")


class ShadowError(Exception):
    """A shadow could not answer (counted as ``error``)."""


class OPAServer:
    """An OPA server (or anything speaking OPA's Data API) asked as a shadow.

    Args:
        url: The decision's Data API URL, ``http://host:8181/v1/data/<path>`` (the path of the
            rule or package, e.g. ``/v1/data/httpapi/authz``). ``POST {"input": ...}`` is sent;
            ``{"result": true|false}`` or ``{"result": {"allow": bool, ...}}`` is read, and no
            ``result`` (undefined) is a deny.
        timeout_seconds: Bound of each call (default 1.0); past it the answer is an ``error``.
        headers: Extra request headers (e.g. ``Authorization`` for OPA's token auth).

    Raises ``ConfigError`` for a URL that is not ``http(s)://``, or a timeout that is not a
    positive number.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"OPAServer url must be an http:// or https:// URL, got {url!r}")
        if (
            isinstance(timeout_seconds, bool)
            or not isinstance(timeout_seconds, (int, float))
            or not 0 < timeout_seconds <= 60
        ):
            raise ConfigError(f"timeout_seconds must be in (0, 60], got {timeout_seconds!r}")
        self.url = url
        # What logs and repr show: never the userinfo of http://user:password@host/.
        parts = urllib.parse.urlsplit(url)
        self._shown = urllib.parse.urlunsplit(
            parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])
        )
        self.timeout_seconds = float(timeout_seconds)
        self.headers = {"Content-Type": "application/json", **dict(headers or {})}
        if parts.username is not None and not any(
            k.lower() == "authorization" for k in self.headers
        ):
            # urllib sends no userinfo itself: credentials in the URL become Basic auth.
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()

    def __repr__(self) -> str:
        return f"OPAServer({self._shown!r})"

    def decide(self, doc: Any) -> tuple[bool, Any]:
        """``(allow, result)`` for the input ``doc``; raises ``ShadowError``."""
        body = json.dumps({"input": doc}).encode()
        request = urllib.request.Request(
            self._shown, data=body, headers=self.headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                raw = response.read(1 << 20)
        except urllib.error.HTTPError as exc:
            raise ShadowError(f"{self._shown} answered HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:
            raise ShadowError(f"{self._shown}: {type(exc).__name__}: {exc}") from exc
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise ShadowError(f"{self._shown} answered something that is not JSON") from exc
        if not isinstance(answer, dict):
            raise ShadowError(f"{self._shown} answered {type(answer).__name__}, not an object")
        if "result" not in answer:
            return False, None  # undefined: deny, as the enforced side does
        return _allow_of(answer["result"], self._shown), answer["result"]


def _allow_of(result: Any, where: str) -> bool:
    if isinstance(result, bool):
        return result
    if isinstance(result, dict) and isinstance(result.get("allow"), bool):
        return bool(result["allow"])
    if isinstance(result, dict) and "allow" not in result:
        return False  # a package document whose allow is undefined
    raise ShadowError(
        f"{where}: the result is neither a boolean nor an object with a boolean allow"
    )


class Shadow:
    """A shadow decision maker and how often to ask it.

    Args:
        target: An ``Authorizer`` or an ``OPAServer``.
        sample_rate: Share of requests also sent to the shadow, 0 to 1 (default 1.0).
        max_queue: Most requests waiting for the shadow (default 1,000); past it they are
            dropped and counted, so a slow or hanging shadow costs at most this much memory.
        name: The ``shadow`` label of its series (default ``"opa"`` for an ``OPAServer``,
            ``"authorizer"`` for an ``Authorizer``).
        mask: JSON pointers removed from logged disagreements (``/input/...`` or
            ``/result/...``); default: the enforcing authorizer's decision-log mask, else the
            ``authorization`` and ``cookie`` headers.

    Raises ``ConfigError`` for another target, a rate outside 0..1, a queue size below 1 or a
    bad pointer.
    """

    def __init__(
        self,
        target: Authorizer | OPAServer,
        *,
        sample_rate: float = 1.0,
        max_queue: int = 1000,
        name: str | None = None,
        mask: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        if not isinstance(target, (Authorizer, OPAServer)):
            raise ConfigError(
                f"shadow must be an Authorizer, an OPAServer or a Shadow, got {type(target).__name__}"
            )
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float))
            or not 0.0 <= sample_rate <= 1.0
        ):
            raise ConfigError(f"sample_rate must be from 0 to 1, got {sample_rate!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"max_queue must be an int >= 1, got {max_queue!r}")
        self.target = target
        self.sample_rate = float(sample_rate)
        self.max_queue = max_queue
        self.name = name or ("opa" if isinstance(target, OPAServer) else "authorizer")
        self._mask: tuple[tuple[str, list[str]], ...] | None = None
        if mask is not None:
            self.set_mask(mask)
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._counts = {"agree": 0, "disagree": 0, "error": 0, "dropped": 0}
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        _live.add(self)

    def set_mask(self, mask: list[str] | tuple[str, ...]) -> None:
        """Sets the pointers removed from logged disagreements."""
        parsed = []
        for pointer in mask:
            if not isinstance(pointer, str) or not pointer.startswith(("/input", "/result")):
                raise ConfigError(
                    f"mask pointers must start with /input or /result, got {pointer!r}"
                )
            parts = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
            parsed.append((parts[0], parts[1:]))
        self._mask = tuple(parsed)

    def __repr__(self) -> str:
        return (
            f"Shadow({self.target!r}, sample_rate={self.sample_rate}, max_queue={self.max_queue})"
        )

    # -- the request side: cheap, never blocking, never raising ---------------------------

    def offer(
        self,
        scope: MutableMapping[str, Any],
        spec: RequestSpec,
        user: Any,
        has_body: bool,
        body: Any,
        doc: Any,
        decision: Decision,
        raw: bytes = b"",
    ) -> None:
        """Queues one decided request (called by the middleware after the response)."""
        try:
            if doc is None:
                doc = build_request_input(
                    dict(scope),
                    spec,
                    user,
                    include_body=has_body,
                    body=body if has_body else None,
                    raw_body=raw if has_body else None,
                )
            item = (
                doc,
                decision.allow,
                decision.result,
                decision.decision_id,
                scope.get("method", "GET"),
                scope.get("path"),
            )
        except Exception as exc:  # noqa: BLE001 - the shadow never fails a request
            self._count("error")
            _errors.warn(
                "error", "regoguard: shadow %s could not queue a request: %s", self.name, exc
            )
            return
        self.submit(item)

    def submit(self, item: tuple[Any, ...]) -> bool:
        """Queues ``(input, allow, result, decision_id, method, path)``; False when dropped."""
        self._ensure_thread()
        with self._lock:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._counts["dropped"] += 1
                return False
            self._pending += 1
        return True

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    # -- the shadow's thread ---------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"regoguard-shadow-{self.name}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._compare(*item)
            finally:
                with self._lock:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _ask(self, doc: Any) -> tuple[bool, Any]:
        if isinstance(self.target, OPAServer):
            return self.target.decide(doc)
        d = self.target.check(doc)
        return d.allow, d.result

    def _compare(
        self, doc: Any, allow: bool, result: Any, decision_id: str, method: str, path: Any
    ) -> None:
        try:
            shadow_allow, shadow_result = self._ask(doc)
        except Exception as exc:  # noqa: BLE001 - counted; the enforced side is unaffected
            self._count("error")
            _errors.warn(
                f"error:{self.name}",
                "regoguard: shadow %s failed: %s: %s",
                self.name,
                type(exc).__name__,
                exc,
            )
            return
        if shadow_allow == allow:
            self._count("agree")
            return
        self._count("disagree")
        record = {
            "decision_id": decision_id,
            "shadow": self.name,
            "method": method,
            "path": path,
            "enforced": {"allow": allow, "result": result},
            "shadow_result": {"allow": shadow_allow, "result": shadow_result},
            "input": doc,
        }
        logger.warning(
            "regoguard: shadow disagrees: %s", json.dumps(self._masked(record), default=str)
        )

    def _masked(self, record: dict[str, Any]) -> dict[str, Any]:
        mask = self._mask if self._mask is not None else _parse_default()
        erased: list[str] = []
        for root, parts in mask:
            if root == "input":
                targets = [record]
                key = "input"
            else:
                targets = [record["enforced"], record["shadow_result"]]
                key = "result"
            paths = [[key, *parts]]
            if root == "input" and len(parts) == 2 and parts[0] == "headers":
                # A request document repeats every header value in header_values.
                paths.append([key, "header_values", parts[1]])
            for t in targets:
                removed = [_remove(t, p) for p in paths]
                if any(removed):
                    pointer = "/" + "/".join([root, *parts])
                    if pointer not in erased:
                        erased.append(pointer)
        if erased:
            record["erased"] = erased
        return record

    # -- for operators and tests -------------------------------------------------------------

    def stats(self) -> ShadowStats:
        """``agree``, ``disagree``, ``error``, ``dropped`` and ``queued`` (waiting now)."""
        with self._lock:
            c = self._counts
            return {
                "agree": c["agree"],
                "disagree": c["disagree"],
                "error": c["error"],
                "dropped": c["dropped"],
                "queued": self._queue.qsize(),
            }

    def drain(self, timeout: float = 5.0) -> bool:
        """Waits until every queued request was compared; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Stops the thread (what is queued is dropped); called at interpreter exit."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


def _parse_default() -> tuple[tuple[str, list[str]], ...]:
    return tuple(("input", p.split("/")[2:]) for p in _DEFAULT_MASK)


def _remove(node: Any, parts: list[str]) -> bool:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, dict):
            if part not in node:
                return False
            if last:
                del node[part]
                return True
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            if last:
                del node[int(part)]
                return True
            node = node[int(part)]
        else:
            return False
    return False


_live: weakref.WeakSet[Shadow] = weakref.WeakSet()


_COUNTED: tuple[Literal["agree", "disagree", "error", "dropped"], ...] = (
    "agree",
    "disagree",
    "error",
    "dropped",
)


def render_metrics() -> str:
    """The exposition of every live ``Shadow`` (empty when there is none); shadows sharing a
    name share its series (their counts are added)."""
    totals: dict[str, dict[str, int]] = {}
    for shadow in list(_live):
        stats = shadow.stats()
        mine = totals.setdefault(shadow.name, dict.fromkeys(_COUNTED, 0))
        for k in _COUNTED:
            mine[k] += stats[k]
    if not totals:
        return ""
    lines = [
        "# HELP regoguard_shadow_total Shadow decisions compared with the enforced ones.",
        "# TYPE regoguard_shadow_total counter",
    ]
    for name in sorted(totals):
        lines += [
            f'regoguard_shadow_total{{shadow="{_label(name)}",outcome="{o}"}} {totals[name][o]}'
            for o in ("agree", "disagree", "error")
        ]
    lines += [
        "# HELP regoguard_shadow_dropped_total Requests not sent to the shadow: its queue was full.",
        "# TYPE regoguard_shadow_dropped_total counter",
    ]
    lines += [
        f'regoguard_shadow_dropped_total{{shadow="{_label(name)}"}} {totals[name]["dropped"]}'
        for name in sorted(totals)
    ]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def as_shadow(value: Any, authorizer: Authorizer) -> Shadow:
    """The middleware's ``shadow=`` argument as a ``Shadow`` (its mask defaulting to the
    enforcing authorizer's decision-log mask)."""
    shadow = value if isinstance(value, Shadow) else Shadow(value)
    if shadow._mask is None:
        log = authorizer.decision_log
        shadow.set_mask(list(log.mask) if log is not None else list(_DEFAULT_MASK))
    return shadow


@atexit.register
def _close_all() -> None:
    # A daemon thread evaluating in Rust when the interpreter finalizes would abort the
    # process (see regoguard._decision_log): stop them while Python is still whole.
    for s in list(_live):
        s.close()
