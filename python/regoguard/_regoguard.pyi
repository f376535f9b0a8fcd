"""Type stubs and user reference for regoguard's native core.

Import everything from ``regoguard``; this module is private.
"""

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, Self, TypeAlias, final

from regoguard._types import PolicyIssue, RedisStats, Stats

__all__ = [
    "MAX_INPUT_DEPTH",
    "Authorizer",
    "Bundle",
    "CacheConfig",
    "CacheMiss",
    "ConfigError",
    "DataError",
    "Decision",
    "DecisionLogConfig",
    "EvaluationError",
    "InputError",
    "JWTIdentity",
    "PendingDecision",
    "PolicyError",
    "RedisConfig",
    "RegoguardError",
    "RequestSpec",
    "ResultCache",
    "VerifiedToken",
    "_Gate",
    "_Workspace",
    "__version__",
    "_canonical",
    "_drain_decision_logs",
    "_install",
    "_l2_shutdown",
    "_render_metrics",
    "build_request_input",
    "builtins",
]

__version__: str

MAX_INPUT_DEPTH: int
"""Deepest nesting of lists and dicts an input (or data) may have: 64. Deeper (or cyclic)
values raise ``InputError``."""

_StrPath: TypeAlias = str | os.PathLike[str]

class RegoguardError(Exception):
    """Base class of every error regoguard raises."""

class PolicyError(RegoguardError):
    """A policy failed to parse or compile.

    ``str(err)`` starts with ``path/to/file.rego:LINE:COL: rego_parse_error: message`` (or
    ``rego_compile_error``), followed by regorus's snippet with a caret; one block per broken
    spot, every broken file reported.
    """

    file: str | None
    """The first failure's file, as the path was given (joined with the path inside a folder)."""
    line: int | None
    """The first failure's 1-based line (0 when regorus gave no location)."""
    column: int | None
    """The first failure's 1-based column (0 when regorus gave no location)."""
    errors: list[PolicyIssue]
    """Every failure: dicts with ``file``, ``line``, ``column``, ``code`` and ``message``
    (``regoguard.PolicyIssue``)."""

class DataError(RegoguardError):
    """A base document cannot be read or parsed, is not an object at its root, or conflicts
    with a rule of the same path."""

class EvaluationError(RegoguardError):
    """The entrypoint failed at runtime: conflicting outputs of a complete rule, an unknown
    entrypoint, or a result that is neither a boolean nor an object with a boolean ``allow``
    (or whose ``reason``/``status``/``headers``/``cache_ttl_seconds``/``tags`` have the wrong
    type). Never cached."""

    entrypoint: str
    """The rule that failed, e.g. ``data.authz.allow``."""
    decision_id: str | None
    """The id of the failed decision (the ``decision_id`` of its decision-log record, and the
    error id the middleware and ``Authorize`` answer 500 with); ``None`` when no decision was
    being made (an unknown entrypoint at construction or in ``prepare``)."""

class ConfigError(RegoguardError, ValueError):
    """An invalid argument to a constructor or method. Also a ``ValueError``."""

class InputError(RegoguardError, TypeError):
    """An input value with no JSON form: a set, bytes, NaN or an infinity, a non-str dict key,
    a lone surrogate, an arbitrary object, or nesting past ``MAX_INPUT_DEPTH``. Also a
    ``TypeError``."""

    path: str
    """Where the value is, e.g. ``input.user.roles[2]`` (``inputs[3].user`` in ``check_many``,
    ``data.projects`` for data)."""

@final
class CacheConfig:
    """Sizing and lifetimes of the in-process decision cache (L1).

    Args:
        max_entries: Most decisions kept (default 100,000); past it the least useful are evicted
            (S3-FIFO). From 1 to 2**32 - 1.
        ttl_seconds: How long an allow is served from the cache (default 60.0).
        deny_ttl_seconds: How long a deny is served; ``None`` (default) means ``ttl_seconds``,
            ``0`` never caches denials.

    A policy's ``cache_ttl_seconds`` can shorten either lifetime for one decision (``0``: never
    cache it) but never lengthen it. Raises ``ConfigError`` for negative, NaN or infinite
    seconds and for ``max_entries`` outside its range.
    """

    def __new__(
        cls,
        *,
        max_entries: int = 100_000,
        ttl_seconds: float = 60.0,
        deny_ttl_seconds: float | None = None,
    ) -> Self: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def ttl_seconds(self) -> float: ...
    @property
    def deny_ttl_seconds(self) -> float | None: ...

@final
class DecisionLogConfig:
    """OPA-style decision logging for an ``Authorizer`` (``Authorizer(..., decision_log=...)``).

    Each sampled decision becomes one JSON line written with
    ``logging.getLogger("regoguard.decisions").info(line)``: ``decision_id``, ``path`` (the
    entrypoint in OPA's form: ``data.authz.allow`` is ``authz/allow``), ``input`` (as the policy
    saw it), ``result`` (absent when undefined), ``error`` (``{"code", "message"}`` of a failed
    evaluation, instead of ``result``), ``revision``, ``timestamp`` (RFC 3339, UTC, ns),
    ``metrics`` (``{"timer_regoguard_decision_ns": n}``), ``labels`` (``id``: this process,
    ``version``: regoguard's, then ``labels``), ``source`` (``l1``/``l2``/``engine``) and
    ``erased`` (the mask pointers that removed something, and the pointer of each field
    removed by ``mask_names``).

    The same masks apply to evaluation error messages: a masked input value quoted by an
    error (regorus prints the operands of failed arithmetic) is replaced by ``***`` in the
    ``EvaluationError``, the ``regoguard`` logger and the decision log. An ``Authorizer``
    without ``decision_log=`` masks its errors with the defaults.

    Requests only queue records (a copy of the input's canonical bytes and a few ids; never
    blocking); a background daemon thread renders, masks and logs them. A full queue drops
    records and counts them (``regoguard_decision_logs_dropped_total``,
    ``stats()["decision_logs_dropped"]``). While the logger is not enabled for INFO, drained
    records are discarded without being rendered. What is queued at interpreter exit is written
    by an ``atexit`` hook (unless a handler has been blocked for over a second).

    Args:
        sample_rate: Fraction of decisions logged, from 0 (none) to 1 (default: all), chosen at
            random per decision.
        mask: JSON pointers under ``/input`` or ``/result`` removed from every record before it
            leaves the process (``~1`` escapes ``/``, ``~0`` escapes ``~``; a number indexes a
            list). Default: the ``authorization``, ``cookie``, ``proxy-authorization``,
            ``set-cookie`` and ``x-api-key`` headers (``/input/headers/<name>``). Passing
            ``mask`` replaces the default: include those to keep them.
        mask_names: Field-name patterns (``*`` is any run of characters, compared
            case-insensitively) removed wherever they appear in the input or result, any
            header or nested field. Default: ``("*token*", "*secret*", "*password*")``;
            ``()`` masks no names. A pattern of only ``*`` is refused.
        max_queue: Most records waiting to be logged (default 10,000), from 1 to 1,000,000.
            Memory follows what is queued (about 100 bytes plus the input per record); nothing
            is allocated up front.
        labels: str -> str added to every record's ``labels`` (default none).

    Raises ``ConfigError`` for a rate outside 0..1, a bad pointer, a queue outside its range,
    or labels that do not map str to str.
    """

    def __new__(
        cls,
        *,
        sample_rate: float = 1.0,
        mask: Sequence[str] | None = None,
        max_queue: int = 10_000,
        labels: Mapping[str, str] | None = None,
        mask_names: Sequence[str] | None = None,
    ) -> Self: ...
    @property
    def sample_rate(self) -> float:
        """The fraction of decisions logged."""
    @property
    def mask(self) -> list[str]:
        """The JSON pointers removed from every record."""
    @property
    def mask_names(self) -> list[str]:
        """The field-name patterns removed at any depth."""
    @property
    def max_queue(self) -> int:
        """The most records waiting to be logged."""
    @property
    def labels(self) -> dict[str, str]:
        """The labels added to every record."""

@final
class RedisConfig:
    """A shared L2 cache in Redis, for ``Authorizer(redis=...)`` and
    ``@cached_authorization(redis=...)``.

    Redis is an accelerator, never an authority: every Redis call is bounded by
    ``timeout_seconds``; an error, a timeout, or an entry that fails verification (undecodable,
    a bad or missing signature, another revision) is a miss, counted in ``stats()`` and logged
    on the ``regoguard`` logger at most once per 10 seconds. After an error Redis is skipped for
    a backoff (100 ms doubling to 5 s), then probed by one call; the client reconnects by
    itself. Every object built with one ``RedisConfig`` shares one connection and one set of
    counters. Nothing connects until first use.

    Args:
        url: ``redis://[user:password@]host:port/db`` (or ``unix:///path``); ``rediss://`` for
            TLS (the platform's roots, or ``ca_file``'s); ``redis+cluster://host:port,host:port``
            (or ``rediss+cluster://``) for a Cluster, any nodes as seeds; or
            ``redis+sentinel://host:port[,host:port]/master_name[/db]`` (or
            ``rediss+sentinel://``) for the master a Sentinel names, asked again after a
            connection error or a ``READONLY`` reply (a failover), and every 2 s. The password is shown as
            ``***`` everywhere (``repr``, ``url``, errors, warnings).
        ttl_seconds: Longest lifetime of an entry in Redis (default 300.0); an entry never
            outlives what the L1 would keep it for either. A hit is promoted to L1 for what is
            left of its Redis TTL.
        timeout_seconds: Bound of every Redis call (default 0.05), at most 60.
        key_prefix: Prefix of every Redis key (default ``"regoguard"``); keys are
            ``<prefix>:d:<revision>:<digest>`` for decisions, ``<prefix>:r1:<function>:<digest>``
            for decorated results, ``<prefix>:t:...`` for tag sets, ``<prefix>:e:...`` for
            invalidation epochs.
        signing_key: A secret of at least 16 bytes (``bytes`` or ``str``). With it every entry
            carries an HMAC-SHA256 over its key, revision, absolute expiry, invalidation epochs
            and value, and entries without a valid one are ignored; without it only unsigned
            entries are read. Required by ``Authorizer(redis=...)``: a decision read from
            Redis must be one we signed. Messages carry a sender, a sequence number and a
            timestamp under the same key; replays are refused (README, "Security").
        channel: The pub/sub channel of cross-instance messages (default
            ``"<key_prefix>:events"``): ``reload()``, ``set_data()``, ``invalidate()`` and
            ``invalidate_all()`` of every ``Authorizer``, and the invalidations of every
            decorated function, reach the instances subscribed to it (use one channel per policy
            set). Messages are signed like entries when ``signing_key`` is set, and unverified
            ones are ignored. The subscription starts on first use, in the background; when it
            is lost (a Redis restart) every subscribed cache drops its L1, and drops it again
            once resubscribed, since messages may have been missed meanwhile.
        decisions: When ``Authorizer.check_async`` consults Redis on an L1 miss: ``"auto"``
            (default) only while an L1 miss has recently cost more than a Redis round trip
            (both measured), which for an in-process policy is almost never (see the README);
            ``"always"``; or ``"never"``. Evaluated decisions are written under the same rule
            (``"auto"``: those that took longer than a round trip). ``Authorizer.check`` never
            waits for Redis; it only writes.
        ca_file: PEM roots that replace the platform's for a ``rediss`` URL.
        cert_file: PEM client certificate (chain) for mutual TLS; needs ``key_file``.
        key_file: PEM private key of ``cert_file``.
        tls_insecure: Accept any server certificate (default ``False``; test setups only).
            A server that fails verification is an error like any other (a miss, counted and
            logged), never retried in plaintext.
        heartbeat_seconds: Every instance publishes a signed heartbeat on ``channel`` this
            often (default 5.0; 0: off). An instance that hears nothing verified,
            its own heartbeat included, for ``heartbeat_misses`` intervals treats the
            subscription as lost: it drops its L1s, counts it in ``heartbeat_losses``, logs a
            warning and resubscribes, until it hears again.
        heartbeat_misses: Silent intervals before the subscription is lost (default 3, 1..100).

    Raises ``ConfigError`` for a URL the Redis client rejects, a TTL or timeout that is not a
    positive finite number of seconds, an empty or blank prefix or channel, a short or
    non-bytes ``signing_key``, an unknown ``decisions``, a TLS file that cannot be read or
    holds no PEM, ``cert_file`` without ``key_file`` (or the reverse), ``tls_insecure`` with
    ``ca_file``, TLS options on a plaintext URL, or a heartbeat outside its range.
    """

    def __new__(
        cls,
        url: str,
        *,
        ttl_seconds: float = 300.0,
        timeout_seconds: float = 0.05,
        key_prefix: str = "regoguard",
        signing_key: bytes | str | None = None,
        channel: str | None = None,
        decisions: Literal["auto", "always", "never"] = "auto",
        ca_file: _StrPath | None = None,
        cert_file: _StrPath | None = None,
        key_file: _StrPath | None = None,
        tls_insecure: bool = False,
        heartbeat_seconds: float = 5.0,
        heartbeat_misses: int = 3,
    ) -> Self: ...
    @property
    def url(self) -> str:
        """The URL with its password replaced by ``***`` (as in ``repr``, errors and warnings)."""
    @property
    def ttl_seconds(self) -> float: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def key_prefix(self) -> str: ...
    @property
    def signed(self) -> bool:
        """Whether a ``signing_key`` was given (the key itself is never shown)."""
    @property
    def channel(self) -> str: ...
    @property
    def decisions(self) -> Literal["auto", "always", "never"]: ...
    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (a ``rediss`` URL)."""
    @property
    def tls_insecure(self) -> bool:
        """Whether server certificates go unverified (``tls_insecure=True``)."""
    @property
    def heartbeat_seconds(self) -> float:
        """The heartbeat interval in seconds (0.0: off)."""
    @property
    def heartbeat_misses(self) -> int: ...
    def stats(self) -> RedisStats:
        """Counters shared by everything built with this config: ``hits``, ``misses``,
        ``errors`` (timeouts and Redis errors), ``bad_entries`` (failed verification),
        ``stale_entries`` (of those, signed entries past their sealed expiry or sealed before
        an invalidation), ``stale_writes`` (results not written because an invalidation
        happened while they were computed),
        ``skipped`` (calls not made while Redis was known to be down), ``writes``,
        ``unshareable`` (results with no JSON form, kept L1-only), ``deletes``, ``rtt_ns``
        (smoothed read round trip), ``messages_sent``, ``messages_received`` (verified messages
        seen on the channel, this config's own included; a sender never acts on its own),
        ``messages_rejected`` (failed verification, or replays: a repeated or older sequence,
        a timestamp more than 30 s off, a state change older than one applied), ``subscription_gaps`` (lost
        subscriptions, each dropping the L1s), ``heartbeats_sent``, ``heartbeats_received``
        (verified heartbeats heard, this config's own included), ``heartbeat_losses``
        (subscriptions treated as lost because nothing was heard for ``heartbeat_misses``
        intervals), ``healthy`` (Redis answered last time), ``subscribed`` and
        ``subscription_lost`` (lost by silence and not heard from since). Builds the client
        (without connecting) on first call."""

def _l2_shutdown() -> None:
    """Private: stops the L2 runtime; registered with ``atexit`` on first use of an L2."""

def _install(
    *,
    resolve: Callable[[Any, bool, Any], object],
    ready: Callable[[Any], Awaitable[Any]],
    running_loop: Callable[[], Any],
    finish: Callable[[Any, Any], Awaitable[Any]],
    register_atexit: Callable[[], object],
    ensure_drain: Callable[[], object],
    token_error: Callable[[str], BaseException],
) -> None:
    """Private: hands the native module the Python helpers it calls back (``_l2``'s
    ``resolve``, ``ready``, ``running_loop``, ``finish`` and ``register_atexit``,
    ``_decision_log._ensure_drain``, ``_identity.TokenError``), so it never imports its own
    package. Called once by ``regoguard/__init__.py``; the very same objects again are a no-op,
    others a ``RuntimeError``, a non-callable a ``TypeError``. Before it ran, a native call
    that needs a hook raises ``RuntimeError``."""

@final
class PendingDecision:
    """Private: a ``check_async`` that missed L1 and waits for Redis, or a request miss that
    ``_check_scope`` deferred to a worker thread (``RequestSpec.offload_after_seconds``)."""

    def evaluate(self) -> Decision:
        """Evaluates (Redis missed, or on the worker thread); releases the GIL."""

@final
class Decision:
    """One authorization decision. Immutable.

    A Decision has no truth value (``bool(decision)`` raises ``TypeError``) so that
    ``if authz.check(x):`` cannot grant by accident: test ``decision.allow``.
    """

    @property
    def allow(self) -> bool:
        """Whether the request is allowed. ``False`` for an undefined result."""
    @property
    def result(self) -> Any:
        """The raw value of the entrypoint (bool or dict); ``None`` when it was undefined.
        Built anew on each access."""
    @property
    def reason(self) -> str | None:
        """``reason`` of an object result; ``"undefined"`` for an undefined result."""
    @property
    def status(self) -> int | None:
        """``status`` of an object result (100-599)."""
    @property
    def headers(self) -> dict[str, str] | None:
        """``headers`` of an object result."""
    @property
    def tags(self) -> list[str]:
        """``tags`` of an object result, used by ``Authorizer.invalidate(tags=...)``."""
    @property
    def source(self) -> Literal["l1", "l2", "engine"]:
        """Where the decision came from: the in-process cache, Redis, or a fresh evaluation."""
    @property
    def revision(self) -> str:
        """The policy and data revision the decision was made under."""
    @property
    def decision_id(self) -> str:
        """Unique per call (a UUID), for decision logs."""
    @property
    def evaluator(self) -> Literal["rvm", "interpreter"]:
        """Which evaluator the entrypoint uses in this revision (why: ``stats()["evaluator_reasons"]``)."""

@final
class Bundle:
    """An OPA bundle: policies and data built by ``opa build`` (or any CI), given to
    ``Authorizer(policies=...)`` alone or in a list with paths and other bundles.

    A plain path ending ``.tar.gz``, or a folder holding a ``.manifest``, is a bundle too
    (named by its path); ``Bundle`` adds a name, a signature check and, for a URL, polling.

    Args:
        source: A ``.tar.gz`` file or a bundle folder (re-read by ``Authorizer.reload()``), or
            an ``http://``/``https://`` URL, downloaded when the Authorizer is built and then
            polled off the request path.
        name: The bundle's name in ``Authorizer.bundles``, decision logs (``bundles``) and
            metrics (``name`` label). Default: the path, or the URL without scheme, credentials
            and query.
        verification_key: Require a valid ``.signatures.json`` (OPA's format) before anything
            of the bundle is used: a PEM public key or certificate, or a JWK / JWK set (RS*,
            PS*, ES256/384, EdDSA), or else an HMAC secret (HS*).
        key_id: The key's id: a signature naming another ``kid``/``keyid`` is refused.
        scope: The scope the signature must carry (as in OPA, an unset scope only accepts
            signatures without one).
        headers: Request headers for the bundle service (``{"Authorization": "Bearer ..."}``).
        poll_min_seconds, poll_max_seconds: The delay between polls, drawn uniformly in this
            range (defaults 60 and 120, OPA's).
        persist_dir: A folder where the last good download is kept, so a restart while the
            service is down starts from it (remote bundles only).
        timeout_seconds: Bound on one download, connect to last byte (default 10).
        max_bytes: Bound on the download and on the decompressed archive (default 256 MiB).

    Raises:
        ConfigError: An unsupported URL scheme, a bad key, bad headers or bad durations.
    """

    def __new__(
        cls,
        source: _StrPath,
        *,
        name: str | None = None,
        verification_key: str | None = None,
        key_id: str | None = None,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        poll_min_seconds: float = 60.0,
        poll_max_seconds: float = 120.0,
        persist_dir: _StrPath | None = None,
        timeout_seconds: float = 10.0,
        max_bytes: int = 268_435_456,
    ) -> Self: ...
    @property
    def name(self) -> str:
        """The bundle's name."""
    @property
    def source(self) -> str:
        """The path, or the URL without its query."""
    @property
    def remote(self) -> bool:
        """Whether the bundle is downloaded and polled."""
    @property
    def verified(self) -> bool:
        """Whether a signature is required (a ``verification_key`` was given)."""

@final
class Authorizer:
    """An embedded Rego authorizer with a decision cache.

    Building one reads, parses and compiles everything and raises on any problem
    (``PolicyError``, ``DataError``, ``EvaluationError`` for an unknown entrypoint,
    ``ConfigError``). The GIL is released while compiling.

    Args:
        policies: A ``.rego`` file, a folder (searched recursively for ``.rego`` files, hidden
            folders skipped), a ``Bundle`` (a ``.tar.gz`` path or a folder holding a
            ``.manifest`` is one too), or a list of those. Bundles must have disjoint roots.
        entrypoint: The rule evaluated for every decision, as a full path (default
            ``"data.authz.allow"``).
        data: The base document: ``None`` (an empty object), a dict, or the path of a
            ``.json``/``.yaml``/``.yml`` file (re-read by ``reload()``).
        cache: ``CacheConfig()`` when omitted; ``None`` disables caching (every check evaluates).
        rego_v0: Parse policies as Rego v0 (``allow { ... }`` without ``if``). Default: v1.
        evaluator: ``"auto"`` (default) compiles each entrypoint to regorus's RVM and falls back
            to the interpreter where the RVM cannot compile it (``with``); ``"rvm"`` raises
            ``ConfigError`` instead of falling back; ``"interpreter"`` never uses the RVM.
        decision_log: ``None`` (default): no decision logs; a ``DecisionLogConfig``: log
            decisions OPA-style through the ``regoguard.decisions`` logger (starts the
            process's decision-log thread).
        redis: A ``RedisConfig`` (with a ``signing_key``, else ``ConfigError``) to share
            decisions between processes; ``None`` (default) keeps them in this process. Keys
            carry the revision, so processes on different policies never share decisions.
            See ``RedisConfig.decisions`` for when Redis is consulted.
        allow_net: URL prefixes (``http://``/``https://``, ending at a path boundary) that
            ``http.send`` may fetch; ``None`` (default) turns ``http.send`` off (its calls are
            undefined). A bad entry is a ``ConfigError``.
        eval_timeout_seconds: Wall-clock budget of one evaluation (default 0.1 s, at most a
            day). Past it the decision fails with ``EvaluationError`` (never cached, counted as
            ``regoguard_eval_budget_exceeded_total``).
        eval_memory_bytes: Memory budget of one evaluation (default 256 MiB, at least 1 MiB);
            exceeding it is an ``EvaluationError`` too, never a crash.

    Thread-safe: ``check`` may run on many threads at once; each thread evaluates on its own
    engine, with no global lock.
    """

    def __new__(
        cls,
        policies: _StrPath | Bundle | Sequence[_StrPath | Bundle],
        *,
        entrypoint: str = "data.authz.allow",
        data: Mapping[str, Any] | _StrPath | None = None,
        cache: CacheConfig | None = ...,
        rego_v0: bool = False,
        evaluator: Literal["auto", "rvm", "interpreter"] = "auto",
        decision_log: DecisionLogConfig | None = None,
        redis: RedisConfig | None = None,
        allow_net: Sequence[str] | None = None,
        eval_timeout_seconds: float = 0.1,
        eval_memory_bytes: int = 268_435_456,
    ) -> Self: ...
    def check(self, input: Mapping[str, Any], *, entrypoint: str | None = None) -> Decision:
        """Decides for one input.

        The input must be JSON-shaped (dict with str keys, list, tuple, str, int, float, bool,
        None, and subclasses of those); its canonical form (sorted keys, independent of dict
        order and hash seed) keys the cache together with the revision and entrypoint.

        An L1 hit returns without releasing the GIL (under a microsecond); a miss releases the
        GIL while evaluating, and concurrent misses of one input evaluate once.

        Args:
            input: The input document.
            entrypoint: Another rule to evaluate instead of the Authorizer's (compiled and
                registered on first use; an unknown rule raises ``EvaluationError``).

        Raises:
            InputError: The input has no JSON form (nothing is evaluated or cached).
            EvaluationError: The policy failed; errors are never cached.
        """
    def check_async(
        self, input: Mapping[str, Any], *, entrypoint: str | None = None
    ) -> Awaitable[Decision]:
        """``check`` for async code: ``await authz.check_async(input)``.

        An L1 hit is decided at the call (the awaitable is already finished: no thread, no
        event-loop round trip). On a miss, with ``redis=`` and when ``RedisConfig.decisions``
        says so, Redis is read by a task on regoguard's runtime while the event loop keeps
        running (at most ``timeout_seconds``); a verified entry is promoted to L1 and returned
        with ``source == "l2"``; otherwise the input is evaluated as by ``check``. Without a
        running asyncio loop (trio) Redis is not consulted. Raises as ``check``.
        """
    def _check_scope(
        self,
        scope: Mapping[str, Any],
        spec: RequestSpec,
        user: Any,
        *,
        include_body: bool = False,
        body: Any = None,
        raw_body: bytes | None = None,
        route: tuple[Any, Any] | None = None,
        entrypoint: str | None = None,
    ) -> Decision | PendingDecision:
        """Private: the middleware's and ``Authorize``'s fast path. Writes the request input
        document (see ``regoguard.build_input``) from the raw ASGI scope straight into the
        cache key, so an L1 hit builds no Python dict; same GIL behaviour as ``check``."""
    def prepare(self, entrypoint: str) -> None:
        """Compiles and registers ``entrypoint`` now (``check(..., entrypoint=...)`` would on
        first use), so a misspelt rule raises ``EvaluationError`` at startup. Releases the GIL."""
    def check_many(
        self, inputs: Iterable[Mapping[str, Any]], *, entrypoint: str | None = None
    ) -> list[Decision]:
        """Decides for many inputs, in order, in parallel on a thread pool with the GIL
        released, through the same cache as ``check``. Raises the first error (``InputError``
        before anything is evaluated)."""
    @property
    def revision(self) -> str:
        """A hash of every policy and data byte (16 hex digits). Every cache key includes it."""
    @property
    def bundles(self) -> dict[str, dict[str, Any]]:
        """The bundles of the revision in force, by name: ``revision`` (the manifest's),
        ``roots``, ``metadata``, ``source``, ``etag`` (remote bundles), ``loaded`` and
        ``failed`` (activations and failed downloads or activations so far),
        ``last_success`` (Unix seconds of the last activation or ``304``, or ``None``) and
        ``last_error`` (the last failure's message, ``None`` after a success). Empty without
        bundles."""
    @property
    def entrypoint(self) -> str:
        """The entrypoint given to the constructor."""
    def reload(self) -> str:
        """Re-reads the policies (and the data file, if ``data`` was a path) and swaps them in
        atomically; returns the new revision. On any error raises and keeps serving the
        previous revision. Cached decisions of older revisions become unreachable at once.
        When ``data`` was a file, the file is re-read and replaces the data, including any
        ``set_data()`` changes made since; when it was a dict, the current data (with those
        changes) is kept. Local bundles are read again; remote bundles keep the version in
        force and poll at once (a new version activates when its download succeeds). With
        ``redis=``, every other instance on the channel reloads too (from its own sources).
        Releases the GIL."""
    def set_data(self, path: str | Sequence[str], value: Any) -> str:
        """Replaces one subtree of data and returns the new revision.

        Args:
            path: ``"projects/42"`` or ``"/projects/42"`` (OPA's Data API form), or a list of
                keys; ``""`` replaces the whole document (then ``value`` must be a dict).
                Missing objects along the path are created.
            value: The new subtree (JSON-shaped).

        With ``redis=``, the same change is applied by every other instance on the channel.

        Raises:
            DataError: The path crosses a non-object, the value has no JSON form, or the
                path lies under (or above) a bundle's root: bundles own their roots.
        """
    def invalidate(self, *, tags: Sequence[str]) -> None:
        """Drops every cached decision whose result listed any of ``tags``; with ``redis=``,
        also in Redis (this revision) and in every instance on the channel (waiting, with the
        GIL released, at most about 2 ``timeout_seconds`` for the deletion, 20 for the ``SCAN``
        of ``invalidate_all``, and 2 for the message)."""
    def invalidate_all(self) -> None:
        """Drops every cached decision; with ``redis=``, as ``invalidate``."""
    def stats(self) -> Stats:
        """Counters for humans (``regoguard.Stats``): ``revision``, ``entries``, ``max_entries``, ``l1_hits``,
        ``l1_misses``, ``hit_ratio``, ``coalesced`` (misses served by a concurrent
        evaluation; counted as a miss and as an L1 hit), ``l2_hits``, ``l2_misses``,
        ``l2_errors`` (decisions served by Redis, misses there, and the Redis client's errors),
        ``evaluations``, ``rvm_evaluations``,
        ``interpreter_evaluations``, ``evaluation_errors``, ``budget_exceeded`` (evaluations
        stopped by their time or memory budget), ``time_dependent`` (entrypoint -> the
        non-deterministic builtin that makes its decisions depend on the moment; see caching
        rule 8 in the README), ``decisions``
        (``allow``/``deny``/``error``), ``reloads``, ``reload_errors``, ``evaluators``
        (entrypoint -> ``"rvm"``/``"interpreter"``), ``evaluator_reasons`` (entrypoint -> why it
        runs on the interpreter, ``None`` on the RVM), ``decision_seconds`` (per source
        ``l1``/``l2``/``engine``: ``{"count", "p50", "p99"}``, seconds estimated from the
        histogram buckets as Prometheus's ``histogram_quantile`` does, ``None`` before the first
        decision; failed decisions are not timed), ``decision_logs`` (records queued) and
        ``decision_logs_dropped`` (records dropped on a full queue); with ``redis=``, also
        ``l2`` (``RedisConfig.stats()``)."""
    def metrics_text(self) -> str:
        """This authorizer's series in the Prometheus text format 0.0.4 (``# HELP`` and
        ``# TYPE`` lines, every name prefixed ``regoguard_``); the README's "Operations"
        section lists them. ``regoguard.metrics_app`` serves it (with the
        ``@cached_authorization`` caches); ``regoguard.RegoguardCollector`` feeds it to a
        ``prometheus_client`` registry. Rendered in Rust from relaxed atomic counters; takes
        no lock on the decision path."""
    @property
    def decision_log(self) -> DecisionLogConfig | None:
        """The decision-log settings given to the constructor, or ``None``."""

@final
class RequestSpec:
    """Private: which request parts reach the policy, precomputed once per middleware.

    Args:
        include_headers: Header names (case-insensitive) copied into ``input.headers`` (first
            value) and ``input.header_values`` (every value).
        offload_after_seconds: ``None``: ``_check_scope`` always decides. A number: a miss
            is handed back as a ``PendingDecision`` (for a worker thread) while the moving
            average of this spec's misses is above it, or none was measured yet.

    Raises:
        ValueError: ``offload_after_seconds`` is negative or not finite.
    """

    def __new__(
        cls, *, include_headers: Sequence[str] = ..., offload_after_seconds: float | None = None
    ) -> Self: ...
    @property
    def include_headers(self) -> list[str]:
        """The lower-cased header names, sorted."""
    @property
    def offload_after_seconds(self) -> float | None:
        """The threshold given to the constructor."""

@final
class _Gate:
    """Private: ``RegoGuardMiddleware``'s plain path in one native call. Calling it returns
    the app's coroutine for an allowed decision (``scope["regoguard"]`` set), else
    ``resume(scope, receive, send, user, outcome)`` (``user`` is ``no_user`` when the identity
    raised; ``outcome`` is the denying ``Decision``, a ``PendingDecision`` or the exception),
    or ``call(scope, receive, send)`` for a scope it does not read."""

    def __new__(
        cls,
        *,
        app: Callable[[Any, Any, Any], Awaitable[None]],
        authorizer: Authorizer,
        spec: RequestSpec,
        identity: Callable[[Any], Any],
        default_identity: Callable[[Any], Any],
        exact: Iterable[str],
        prefixes: Sequence[str],
        resume: Callable[[Any, Any, Any, Any, Any], Awaitable[None]],
        call: Callable[[Any, Any, Any], Awaitable[None]],
        no_user: object,
    ) -> Self: ...
    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]: ...

@final
class JWTIdentity:
    """The request's identity from a bearer JWT, verified in Rust: use it as
    ``RegoGuardMiddleware(identity=...)`` or ``Authorize(identity=...)``.

    The token is read from ``header`` (``Authorization: Bearer <token>``) and verified with the
    same code as ``io.jwt.decode_verify``: the signature by a trusted key (``keys``, ``jwks``,
    or the JWK set at ``jwks_url``), ``alg`` among ``algorithms`` (never ``none``), ``iss``,
    ``aud``, ``exp`` and ``nbf`` (with ``leeway_seconds``). The policy then sees the chosen
    ``claims`` as ``input.user`` and ``{"alg", "exp", "kid"}`` as ``input.token``; a decision
    is cached no longer than the token's ``exp``. Verified tokens are cached (by the exact
    token) until ``min(exp + leeway, cache_ttl_seconds)``, so a repeated token costs no
    signature check and no Python.

    No token (or another scheme): ``input.user`` is ``null`` and the policy decides; with
    ``required=True`` the request is answered 401 with ``WWW-Authenticate: Bearer``. A refused
    token raises ``regoguard.TokenError`` (a Starlette ``HTTPException``): 401 with
    ``WWW-Authenticate: Bearer error="invalid_token"``, counted by reason in
    ``regoguard_token_rejections_total`` and ``stats()["rejections"]``.

    ``jwks_url``: fetched by a background thread (the first fetch is awaited at construction,
    at most ``jwks_timeout_seconds``; a failure is not fatal), again when the response's
    ``Cache-Control: max-age`` runs out (default 300 s), and when a token names an unknown
    ``kid`` (at most once per ``jwks_min_refresh_seconds``; that request is refused). A failed
    fetch keeps the last good set; a fetch is bounded by ``jwks_timeout_seconds`` and 256 KiB.

    Args:
        keys: A PEM public key or certificate (``str``), a JWK (``dict`` or JSON ``str``), an
            HMAC secret (``bytes``), or a list of them.
        jwks: A JWK set (``dict`` or JSON ``str``).
        jwks_url: The ``http(s)`` URL of a JWK set (an identity provider's ``jwks_uri``).
        issuer: The required ``iss``.
        audience: The required audience; a token with an ``aud`` claim is refused when this
            is ``None`` (as OPA and PyJWT do).
        algorithms: Accepted ``alg`` values. Default: the asymmetric ones (RS*, PS*, ES256,
            ES384, ES512, EdDSA); HMAC (HS*) must be listed.
        leeway_seconds: Clock skew allowed on ``exp`` and ``nbf``.
        header: The header carrying the token (case-insensitive).
        scheme: The scheme before the token (case-insensitive); ``""``: the whole value is
            the token.
        claims: The claims copied into ``input.user``; ``None``: every claim.
        required: Answer 401 when there is no token instead of ``input.user = null``.
        cache_ttl_seconds: The longest a verified token is kept (0: verify every request).
        cache_size: How many verified tokens are kept.
        max_token_bytes: Longer tokens are refused (``reason="too_large"``).
        jwks_timeout_seconds: A JWKS fetch's time limit.
        jwks_min_refresh_seconds: The shortest interval between two JWKS fetches.

    Raises:
        ConfigError: no key source, an unknown algorithm (``none`` included), a bad key.
    """

    def __new__(
        cls,
        *,
        keys: str
        | bytes
        | Mapping[str, Any]
        | Sequence[str | bytes | Mapping[str, Any]]
        | None = None,
        jwks: str | Mapping[str, Any] | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        algorithms: Sequence[str] | None = None,
        leeway_seconds: float = 30.0,
        header: str = "authorization",
        scheme: str = "Bearer",
        claims: Sequence[str] | None = None,
        required: bool = False,
        cache_ttl_seconds: float = 300.0,
        cache_size: int = 10000,
        max_token_bytes: int = 8192,
        jwks_timeout_seconds: float = 5.0,
        jwks_min_refresh_seconds: float = 30.0,
    ) -> Self: ...
    def __call__(self, scope: Mapping[str, Any]) -> VerifiedToken | None:
        """The identity of the request in ``scope``: its verified token, or ``None`` without
        one.

        Raises:
            TokenError: the token was refused (or is missing with ``required=True``).
        """
    def stats(self) -> dict[str, Any]:
        """``hits``, ``misses``, ``entries`` of the token cache, ``rejections`` by reason, and
        ``jwks`` (``url``, ``keys``, ``fetched``, ``failed``, ``error``) or ``None``."""
    def clear_cache(self) -> None:
        """Forgets every cached verification (tokens are verified again)."""
    @property
    def required(self) -> bool:
        """Whether a missing token is answered 401."""
    @property
    def header(self) -> str:
        """The lower-cased header name."""
    @property
    def algorithms(self) -> list[str]:
        """The accepted algorithms."""
    @property
    def issuer(self) -> str | None:
        """The required ``iss``."""
    @property
    def audience(self) -> str | None:
        """The required audience."""

@final
class VerifiedToken:
    """A bearer token ``JWTIdentity`` verified; the scope reader writes it into the input as
    ``input.user`` (the chosen claims) and ``input.token``."""

    @property
    def claims(self) -> dict[str, Any]:
        """Every claim of the payload."""
    @property
    def user(self) -> dict[str, Any]:
        """``input.user``: the chosen claims."""
    @property
    def alg(self) -> str:
        """The header's ``alg``."""
    @property
    def kid(self) -> str | None:
        """The header's ``kid``."""
    @property
    def exp(self) -> float | None:
        """The ``exp`` claim (seconds since the epoch)."""

def builtins() -> list[str]:
    """Every builtin function a policy can call (regorus's own and regoguard's), sorted."""

def build_request_input(
    scope: Mapping[str, Any],
    spec: RequestSpec,
    user: Any,
    *,
    include_body: bool = False,
    body: Any = None,
    raw_body: bytes | None = None,
    route: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Private: the request input document as a dict; use ``regoguard.build_input``."""

def _render_metrics(authorizers: Sequence[Authorizer], *, functions: bool = True) -> str:
    """Private: the exposition of ``authorizers`` (each labelled ``authorizer="<entrypoint>"``
    when there are several) and, with ``functions``, of every live ``@cached_authorization``
    cache (``cache="module.qualname"``). Use ``regoguard.metrics_app`` or
    ``regoguard.RegoguardCollector``.

    Raises:
        ConfigError: Two authorizers share an entrypoint.
    """

def _drain_decision_logs(max_records: int, render: bool) -> tuple[int, list[str]]:
    """Private: takes up to ``max_records`` queued decision-log records of every authorizer and
    returns how many it took and, with ``render``, their masked JSON lines. Never releases the
    GIL. Used by the drain thread in ``regoguard._decision_log``."""

@final
class ResultCache:
    """Private: the Rust cache behind one function decorated with
    ``regoguard.cached_authorization``; use the decorator.

    Results are kept as the Python objects the function returned, keyed by a BLAKE3 digest of
    the canonical JSON form of the key value (sorted keys, independent of dict order and hash
    seed; never ``repr``/``hash``) seeded with ``name``. A truthy result is kept
    ``ttl_seconds``, a falsy one ``deny_ttl_seconds`` (a ``Decision`` by its ``.allow``).

    Args:
        name: The function's ``module.qualname``; part of every key.
        max_entries: Most results kept (default 10,000), from 1 to 2**32 - 1; past it the
            least useful are evicted (S3-FIFO).
        ttl_seconds: How long a truthy result is kept (default 600.0).
        deny_ttl_seconds: How long a falsy result is kept; ``None`` (default) means
            ``ttl_seconds``, ``0`` never keeps falsy results.
        custom_key: Whether keys come from a ``key=`` callable (errors then point at
            ``key()``) rather than from the bound arguments (errors point at ``args``).
        redis: Share JSON-shaped results through this Redis L2 (see
            ``cached_authorization``); ``None`` (default): this process only.
        identity: A JSON-shaped value telling apart functions that share ``name`` (the
            decorator passes a closure's free variables and defaults); part of every key and
            of the Redis key space. ``None`` (default): the name alone.

    Raises ``ConfigError`` for negative, NaN or infinite seconds and for ``max_entries``
    outside its range. Every method that takes a key raises ``InputError`` (naming the value,
    e.g. ``args.db``) when it has no JSON form.

    While it lives, every cache shows in ``regoguard.metrics_app`` and
    ``regoguard.RegoguardCollector`` as the ``regoguard_cache_*`` series with
    ``cache="<name>"`` (caches sharing a name share the series; an empty name is not shown).
    """

    def __new__(
        cls,
        name: str,
        *,
        max_entries: int = 10_000,
        ttl_seconds: float = 600.0,
        deny_ttl_seconds: float | None = None,
        custom_key: bool = False,
        redis: RedisConfig | None = None,
        identity: Any = None,
    ) -> Self: ...
    def call(
        self,
        key: Any,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        tags: Callable[..., Any] | None = None,
    ) -> Any:
        """The sync path: the result kept for ``key``, else ``func(*args, **kwargs)``.

        A hit keeps the GIL and does not call ``func``. On a miss, concurrent calls with the
        same key call ``func`` once and share its result: the others wait with the GIL
        released. ``tags(*args, **kwargs)`` is called after ``func`` succeeds and must return a
        list of str. Exceptions propagate and are never kept; a result that is not kept (an
        exception, a zero lifetime, an invalidation meanwhile) is not shared either, and the
        next waiter calls ``func`` itself.

        Raises:
            InputError: ``key`` has no JSON form.
            TypeError: ``tags`` returned something other than a list of str, or ``func``
                returned an awaitable.
            RuntimeError: ``func`` called itself with the same key on the same thread.
        """
    def lookup(self, key: Any) -> Any:
        """The async path, first half: the result kept for ``key`` (counted as a hit), or a
        new ``CacheMiss`` for ``key`` (not counted). Never blocks."""
    def begin(self) -> None:
        """Counts a miss: the caller is about to call the function."""
    def store(self, miss: CacheMiss, value: Any, tags: Sequence[str]) -> bool:
        """The async path, second half: keeps ``value`` for the key of ``miss`` with ``tags``
        (what the ``tags=`` callable returned, a list of str; ``()`` without one), unless its lifetime is zero or an invalidation happened since
        ``miss`` was made. Returns whether it was kept.

        Raises:
            TypeError: ``tags`` is not a list of str, or ``value`` is an awaitable.
        """
    def invalidate(self, key: Any) -> bool:
        """Drops the result kept for ``key``; returns whether there was one. Results being
        computed at that moment (for any key) are not kept."""
    def invalidate_tags(self, tags: Sequence[str]) -> None:
        """Drops every result stored with any of ``tags``."""
    def invalidate_all(self) -> None:
        """Drops every result."""
    def l2_get(
        self, miss: CacheMiss, call_soon_threadsafe: Callable[..., Any], future: Any
    ) -> bool:
        """The async path between ``lookup`` and ``begin``: starts reading ``miss``'s key from
        Redis and returns ``True``; ``(found, value)`` then reaches ``future`` through
        ``call_soon_threadsafe`` (a found value is already in L1). Returns ``False`` (a miss,
        nothing started) without ``redis=`` or while Redis is known to be down."""
    @property
    def shared(self) -> bool:
        """Whether a Redis L2 was given."""
    def info(self) -> tuple[int, int, int]:
        """``(hits, misses, entries)``: calls answered from the cache (including waiters of a
        concurrent call), calls of the function, and results held (expired ones included until
        read or evicted)."""
    @property
    def name(self) -> str:
        """The ``name`` given to the constructor."""
    @property
    def max_entries(self) -> int:
        """The ``max_entries`` given to the constructor."""
    @property
    def ttl_seconds(self) -> float:
        """How long a truthy result is kept."""
    @property
    def deny_ttl_seconds(self) -> float:
        """How long a falsy result is kept (``ttl_seconds`` when given ``None``)."""

def _canonical(value: Any, root: str = "value") -> bytes:
    """Private: the canonical bytes of ``value`` (the key form of ``cached_authorization``).
    Raises ``InputError`` naming the part (under ``root``) that has no JSON form."""

@final
class CacheMiss:
    """Private: what ``ResultCache.lookup`` returns on a miss. Hashable and equal by key, so the
    async single flight can index calls in flight by it; remembers the invalidation epoch for
    ``ResultCache.store``."""

    def __hash__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...

@final
class _Workspace:
    """Private: policies and data loaded for ``python -m regoguard test|eval|check``
    (``regoguard._cli``), on an engine configured as the deciding one. Not for the request path.

    Args:
        policies: ``.rego`` files or folders, as ``Authorizer``.
        data_files: ``.json``/``.yaml`` base documents, merged at the root.
        data: A base document given as a dict.
        rego_v0: Parse as Rego v0.

    Raises ``ConfigError``, ``PolicyError`` or ``DataError`` as ``Authorizer`` does.
    """

    def __new__(
        cls,
        policies: Sequence[str],
        *,
        data_files: Sequence[str] = ...,
        data: Mapping[str, Any] | None = None,
        rego_v0: bool = False,
    ) -> Self: ...
    def packages(self) -> list[str]:
        """The packages of the loaded policies (``data.a.b``)."""
    def tests(self) -> list[dict[str, Any]]:
        """Every ``test_*``/``todo_test_*`` rule found at column 0: ``name``
        (``data.pkg.test_x``), ``package``, ``rule``, ``file``, ``line``, ``todo``."""
    def run_tests(
        self, names: Sequence[str] | None = None, *, coverage: bool = False, explain: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Runs the named tests (all when ``None``): one dict per test as ``tests()`` plus
        ``outcome`` (``pass``/``fail``/``error``/``skip``), ``duration_ns``, ``prints``,
        ``error``, ``failed_at`` (``(line, text)`` of the last evaluated expression of a failed
        test, with ``explain``) and, for a failure, ``value`` and ``undefined``; with
        ``coverage``, per-file ``{file, covered, not_covered, percent}``."""
    def eval_query(
        self, query: str, input: Any = None, *, has_input: bool = False
    ) -> list[tuple[list[Any], dict[str, Any]]]:
        """Evaluates any Rego query: ``(expression values, bindings)`` per result (empty when
        undefined). Raises ``EvaluationError`` for a query that does not parse or fails."""
