"""The Python half of ``JWTIdentity`` (the verification itself is Rust's): the exception a
refused bearer token raises, which the middleware and ``Authorize`` answer like any
``HTTPException``."""

from __future__ import annotations

from starlette.exceptions import HTTPException

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_INVALID = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class TokenError(HTTPException):
    """A request's bearer token was refused by ``JWTIdentity``: 401 with
    ``WWW-Authenticate: Bearer error="invalid_token"`` (or ``WWW-Authenticate: Bearer`` for a
    missing token when ``required=True``).

    ``reason`` says why, as counted in ``regoguard_token_rejections_total``: ``missing``,
    ``malformed``, ``too_large``, ``algorithm``, ``unknown_kid``, ``signature``, ``issuer``,
    ``audience``, ``expired``, ``not_yet_valid``, ``no_keys``. The client only sees
    ``"Invalid token"`` (or ``"Not authenticated"``).
    """

    def __init__(self, reason: str) -> None:
        if reason == "missing":
            super().__init__(401, "Not authenticated", dict(_CHALLENGE))
        else:
            super().__init__(401, "Invalid token", dict(_INVALID))
        self.reason = reason

    def __reduce__(self) -> tuple[type[TokenError], tuple[str]]:
        return (type(self), (self.reason,))
