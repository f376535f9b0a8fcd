"""regoguard: embedded Rego authorization with a sound decision cache.

Everything public is re-exported here; ``regoguard._regoguard`` is private.
"""

from regoguard._regoguard import (
    MAX_INPUT_DEPTH,
    Authorizer,
    CacheConfig,
    ConfigError,
    DataError,
    Decision,
    EvaluationError,
    InputError,
    PolicyError,
    RegoguardError,
    __version__,
)

__all__ = [
    "MAX_INPUT_DEPTH",
    "Authorizer",
    "CacheConfig",
    "ConfigError",
    "DataError",
    "Decision",
    "EvaluationError",
    "InputError",
    "PolicyError",
    "RegoguardError",
    "__version__",
]
