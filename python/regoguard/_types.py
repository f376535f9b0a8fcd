"""The shapes of the plain dicts regoguard returns: ``Authorizer.stats()``,
``RedisConfig.stats()``, ``Shadow.stats()`` and ``PolicyError.errors``.

They are ``TypedDict`` classes, so at runtime the values stay plain ``dict`` objects (nothing
is built per call) while mypy/pyright check every key and value type. They live in Python,
not only in the native module's stub, so that ``regoguard.Stats`` and the others can be
imported at runtime too (for annotations in code that is not under ``TYPE_CHECKING``).
Import them from ``regoguard``.
"""

from typing import Literal, NotRequired, TypedDict

__all__ = [
    "DecisionCounts",
    "DecisionSeconds",
    "DecisionTiming",
    "PolicyIssue",
    "RedisStats",
    "ShadowStats",
    "Stats",
]


class DecisionTiming(TypedDict):
    """How long the decisions served by one source took (``Stats["decision_seconds"]``)."""

    count: int
    """Decisions timed (failed decisions are not)."""
    p50: float | None
    """Median, in seconds, estimated from the histogram buckets as Prometheus's
    ``histogram_quantile`` does; ``None`` before the first decision."""
    p99: float | None
    """99th percentile, in seconds, as ``p50``."""


class DecisionSeconds(TypedDict):
    """Decision latency per source: the L1 cache, Redis (L2) and the engine."""

    l1: DecisionTiming
    l2: DecisionTiming
    engine: DecisionTiming


class DecisionCounts(TypedDict):
    """Decisions by outcome."""

    allow: int
    deny: int
    error: int


class RedisStats(TypedDict):
    """``RedisConfig.stats()`` (and ``Stats["l2"]``): counters shared by everything built with
    one ``RedisConfig``; the ``RedisConfig.stats`` docstring says what each counts."""

    hits: int
    misses: int
    errors: int
    bad_entries: int
    stale_entries: int
    stale_writes: int
    skipped: int
    writes: int
    unshareable: int
    deletes: int
    rtt_ns: int
    messages_sent: int
    messages_received: int
    messages_rejected: int
    subscription_gaps: int
    healthy: bool
    subscribed: bool
    heartbeats_sent: int
    heartbeats_received: int
    heartbeat_losses: int
    subscription_lost: bool


class Stats(TypedDict):
    """``Authorizer.stats()``; the ``Authorizer.stats`` docstring says what each counts."""

    revision: str
    entries: int
    max_entries: int
    l1_hits: int
    l1_misses: int
    hit_ratio: float
    l2_hits: int
    l2_misses: int
    l2_errors: int
    coalesced: int
    evaluations: int
    rvm_evaluations: int
    interpreter_evaluations: int
    evaluation_errors: int
    budget_exceeded: int
    decisions: DecisionCounts
    reloads: int
    reload_errors: int
    evaluators: dict[str, Literal["rvm", "interpreter"]]
    """Entrypoint -> the evaluator it runs on."""
    evaluator_reasons: dict[str, str | None]
    """Entrypoint -> why it runs on the interpreter (``None`` on the RVM)."""
    time_dependent: dict[str, str]
    """Entrypoint -> the non-deterministic builtin its decisions depend on."""
    decision_seconds: DecisionSeconds
    decision_logs: int
    decision_logs_dropped: int
    l2: NotRequired[RedisStats]
    """Only with ``redis=``."""


class ShadowStats(TypedDict):
    """``Shadow.stats()``: how the shadow's answers compared with what was enforced."""

    agree: int
    disagree: int
    error: int
    dropped: int
    queued: int
    """Requests waiting to be compared now."""


class PolicyIssue(TypedDict):
    """One entry of ``PolicyError.errors``: a broken spot of a policy."""

    file: str
    """The file, as the path was given (joined with the path inside a folder)."""
    line: int
    """1-based line (0 when regorus gave no location)."""
    column: int
    """1-based column (0 when regorus gave no location)."""
    code: str
    """OPA's error code: ``rego_parse_error``, ``rego_compile_error`` or ``rego_type_error``
    (an unknown function)."""
    message: str
    """The message without its location, e.g. ``unexpected token``."""
