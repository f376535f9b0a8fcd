"""regoguard: embedded Rego authorization with a sound decision cache.

Everything public is re-exported here; ``regoguard._regoguard`` is private. ``Authorize``
needs FastAPI (``pip install regoguard[fastapi]``) and is imported on first use.
"""

from typing import TYPE_CHECKING, Any

from regoguard import _decision_log, _identity, _l2, _regoguard

# The native module calls these back and never imports this package (ARCHITECTURE.md, "Module
# map"): installed before the rest of the package is imported, so nothing can use them unset.
_regoguard._install(
    resolve=_l2.resolve,
    ready=_l2.ready,
    running_loop=_l2.running_loop,
    finish=_l2.finish,
    register_atexit=_l2.register_atexit,
    ensure_drain=_decision_log._ensure_drain,
    token_error=_identity.TokenError,
)

from regoguard._identity import TokenError
from regoguard._input import build_input, default_identity
from regoguard._regoguard import (
    MAX_INPUT_DEPTH,
    Authorizer,
    Bundle,
    CacheConfig,
    ConfigError,
    DataError,
    Decision,
    DecisionLogConfig,
    EvaluationError,
    InputError,
    JWTIdentity,
    PolicyError,
    RedisConfig,
    RegoguardError,
    VerifiedToken,
    __version__,
    builtins,
)
from regoguard._types import (
    DecisionCounts,
    DecisionSeconds,
    DecisionTiming,
    PolicyIssue,
    RedisStats,
    ShadowStats,
    Stats,
)
from regoguard.decorators import cached_authorization
from regoguard.metrics import RegoguardCollector, metrics_app
from regoguard.middleware import RegoGuardMiddleware
from regoguard.shadow import OPAServer, Shadow

if TYPE_CHECKING:
    from regoguard.dependencies import Authorize


def __getattr__(name: str) -> Any:
    if name == "Authorize":
        from regoguard.dependencies import Authorize

        return Authorize
    raise AttributeError(f"module 'regoguard' has no attribute {name!r}")


__all__ = [
    "MAX_INPUT_DEPTH",
    "Authorize",
    "Authorizer",
    "Bundle",
    "CacheConfig",
    "ConfigError",
    "DataError",
    "Decision",
    "DecisionCounts",
    "DecisionLogConfig",
    "DecisionSeconds",
    "DecisionTiming",
    "EvaluationError",
    "InputError",
    "JWTIdentity",
    "OPAServer",
    "PolicyError",
    "PolicyIssue",
    "RedisConfig",
    "RedisStats",
    "RegoGuardMiddleware",
    "RegoguardCollector",
    "RegoguardError",
    "Shadow",
    "ShadowStats",
    "Stats",
    "TokenError",
    "VerifiedToken",
    "__version__",
    "build_input",
    "builtins",
    "cached_authorization",
    "default_identity",
    "metrics_app",
]
