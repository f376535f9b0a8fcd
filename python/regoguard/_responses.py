"""What a refused or failed request is answered: one mapping of a ``Decision`` or an error to
``(status, detail, headers)`` for both ``RegoGuardMiddleware`` (which sends it as a JSON
response) and ``Authorize`` (which raises it as FastAPI's ``HTTPException``), and the logging
that goes with each answer. Neither front end decides a status or a detail on its own.

The answers (the README's table under "In a FastAPI or Starlette service"):

- a deny: the decision's ``status`` (403 when it has none), its ``reason`` (never
  regoguard's own ``"undefined"``) and its ``headers``;
- an input with no JSON form, a malformed JSON body, an unreadable body: 400 ``Bad Request``
  (a malformed body says why); a body over the limit: 413;
- an ``identity`` (or ``input``/``input_builder``) that raises the framework's
  ``HTTPException`` with a 4xx/5xx status: that status, detail and headers;
- anything else that fails: 500 ``authorization failed (error <id>)``, no policy detail, the
  id logged beside the cause.

Private: import the public API from ``regoguard``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any, TypeAlias

from regoguard._input import failure_id
from regoguard._logging import warnings
from regoguard._regoguard import Decision, InputError

logger = logging.getLogger("regoguard")

Scope = MutableMapping[str, Any]


Answer: TypeAlias = tuple[int, str, Mapping[str, str] | None]
"""What the client gets: ``(status, detail, headers)``, the detail sent as ``{"detail": ...}``
and the headers added (or None). A plain tuple, not a NamedTuple: a denial builds one per
request, and a plain tuple costs the least."""

BAD_REQUEST: Answer = (400, "Bad Request", None)
"""An input with no JSON form, or a body that could not be read (the client went away, a
``Content-Length`` that is not a number)."""

TOO_LARGE: Answer = (413, "Request body too large", None)
"""A body over ``max_body_bytes``."""


def bad_body(reason: str) -> Answer:
    """A malformed JSON body: 400 with the reason."""
    return (400, reason, None)


def denied(decision: Decision) -> Answer:
    """A denied decision: its status (403 by default), the client's detail and its headers."""
    status = decision.status or 403
    return (status, client_detail(decision, status), decision.headers)


def client_detail(decision: Decision, status: int) -> str:
    """The detail a denied client sees: the policy's reason, but never regoguard's own
    ``"undefined"`` (the policy said nothing; the Decision and logs keep it)."""
    reason = decision.reason
    if reason is None or (reason == "undefined" and decision.result is None):
        return "Unauthorized" if status == 401 else "Forbidden"
    return reason


def failed(error_id: str) -> Answer:
    """A failure: 500 with the error id the log line carries, and no policy detail."""
    return (500, f"authorization failed (error {error_id})", None)


def refusal(exc: BaseException) -> Answer | None:
    """The answer of Starlette's/FastAPI's ``HTTPException`` raised by ``identity`` (the app's
    own way of refusing a credential), or None for any other exception. Only a refusal
    (4xx/5xx) is honoured: an ``HTTPException(200)`` must not answer as if allowed."""
    if not _is_http_exception(exc):
        return None
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status <= 599:
        return None
    detail = getattr(exc, "detail", None)
    return (
        status,
        str(detail) if detail is not None else "Unauthorized",
        getattr(exc, "headers", None),
    )


def input_failed(scope: Scope, exc: BaseException, what: str) -> Answer:
    """``identity``/``input``/``input_builder`` raised something other than a refusal: logged
    (see ``log_input_failure``) and answered 500."""
    return failed(log_input_failure(scope, exc, what))


def evaluation_failed(scope: Scope, exc: BaseException, user: Any) -> Answer:
    """The decision could not be made: 400 for an input with no JSON form (logged as a bad
    request), else 500 (logged at ERROR as ``evaluation failed``)."""
    if isinstance(exc, InputError):
        explain_bad_input(scope, exc, user)
        return BAD_REQUEST
    error_id = failure_id(exc)
    logger.error("regoguard: evaluation failed, answering 500 [error %s]: %s", error_id, exc)
    return failed(error_id)


def _is_http_exception(exc: BaseException) -> bool:
    try:
        from starlette.exceptions import HTTPException
    except ImportError:  # pragma: no cover - starlette is a dependency
        return False
    return isinstance(exc, HTTPException)


def log_input_failure(scope: Scope, exc: BaseException, what: str) -> str:
    """Logs that ``identity``/``input``/``input_builder`` raised (WARNING, rate-limited; never
    "evaluation failed") and returns the error id the 500 answer carries."""
    error_id = failure_id(exc)
    warnings.warn(
        what,
        "regoguard: %s failed, answering 500 [error %s] %s %r: %s: %s",
        what,
        error_id,
        scope.get("method", "GET"),
        scope.get("path"),
        type(exc).__name__,
        exc,
    )
    return error_id


def explain_bad_input(scope: Scope, exc: BaseException, user: Any) -> None:
    """Logs why a request was answered 400 (at WARNING, rate-limited): the input had no JSON
    form, with the fix when the culprit came from ``identity``."""
    hint = ""
    where = str(getattr(exc, "path", ""))
    if inspect.isawaitable(user):
        hint = " (identity returned an awaitable: declare it `async def`, regoguard awaits it)"
        if inspect.iscoroutine(user):
            user.close()
    elif where.startswith("input.user"):
        hint = (
            " (the value comes from identity=: return JSON-shaped values, e.g. str(uuid) for"
            " a UUID, isoformat() for a datetime)"
        )
    warnings.warn(
        "bad_input",
        "regoguard: bad request, answering 400 %s %r: %s%s",
        scope.get("method", "GET"),
        scope.get("path"),
        exc,
        hint,
    )
