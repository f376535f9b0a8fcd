//! The L2: a Redis cache shared by every process that uses the same Redis and key prefix.
//!
//! ARCHITECTURE.md, "Caching rules", rule 6: Redis is an accelerator, never an authority. Every call is
//! bounded by [`RedisConfig::timeout`]; any error, timeout or entry that fails verification is
//! a miss, counted in [`L2Counters`] and reported through a rate-limited warning
//! ([`L2::take_warning`]). Nobody is allowed or denied because of Redis.
//!
//! # Entries
//! A value stored under a key is `RG2`, a flag byte (1: signed), the 32-byte HMAC-SHA256 tag
//! when signed, then the body: the absolute expiry (unix ms), the invalidation epochs the
//! entry was sealed under (its key space's, its own key's, and one per tag), the revision and
//! the payload (canonical JSON). The tag covers the Redis key and the whole body, so an entry
//! cannot be replayed under another key, revision or key space. A reader with a signing key
//! accepts only entries signed with it; a reader without one accepts only unsigned entries.
//!
//! # Revocation
//! Redis's own TTL is only housekeeping: the expiry inside the MAC is checked on every read,
//! so an entry written back with no expiry is still refused after its deadline. Every
//! invalidation (`invalidate_all`, a tag, one key) raises an epoch stored in Redis
//! (`<prefix>:e:...`, see [`L2::bump_blocking`]) and remembered by this process; an entry
//! sealed under an older epoch of its space, key or any of its tags is refused (counted in
//! `stale_entries`). Epochs are raised to `max(old + 1, now in ms)`, so they only grow even when
//! their key expires (two TTLs after the last raise, when every entry sealed before it has
//! expired too). A writer records the epochs it saw before computing and does not write if
//! they moved meanwhile, so a result computed across an invalidation is not shared.
//!
//! # Availability
//! A circuit breaker keeps an unreachable Redis from costing every request its timeout: after an
//! error the L2 is skipped (a miss, counted as `skipped`) for a backoff that doubles from
//! 100 ms to 5 s; then one call probes it. The `redis` crate's `ConnectionManager` reconnects
//! underneath.
//!
//! # Runtime
//! One small tokio runtime per process (one worker, at most two blocking threads), built on
//! first use and shut down by [`shutdown`] (the bindings call it from `atexit`, so no task is
//! left touching Python while the interpreter finalises).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;
use tokio::runtime::{Handle, Runtime};

use crate::cache::seconds;
use crate::error::{Error, Result};

pub mod connect;
pub mod heartbeat;
pub mod pubsub;

use connect::Conn;

/// When the Authorizer consults the L2 for decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionPolicy {
    /// Only when evaluating has recently taken longer than an L2 round trip (both measured).
    Auto,
    /// On every L1 miss of `check_async`.
    Always,
    /// Never; the L2 then only serves `@cached_authorization` results (and messages).
    Never,
}

impl DecisionPolicy {
    /// Parses the Python `Literal["auto", "always", "never"]`.
    ///
    /// # Errors
    /// `Error::Config` for any other string.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(Error::config(format!(
                "decisions must be 'auto', 'always' or 'never', got {other:?}"
            ))),
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// Shortest signing key accepted, in bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 16;

/// Everything an [`L2`] is built from.
#[derive(Clone)]
pub struct RedisConfig {
    pub url: String,
    /// Longest lifetime of an entry (an entry never outlives what the L1 would keep either).
    pub ttl: Duration,
    /// Bound of every Redis call.
    pub timeout: Duration,
    pub key_prefix: String,
    pub signing_key: Option<Vec<u8>>,
    /// The pub/sub channel of cross-instance messages.
    pub channel: String,
    pub decisions: DecisionPolicy,
    /// `rediss` roots, client certificate, verification (README, "Production Redis").
    pub tls: connect::Tls,
    /// The subscription heartbeat ([`heartbeat`]): the interval (`None`: off) and how many
    /// silent intervals mean the subscription is lost.
    pub heartbeat: Option<Duration>,
    pub heartbeat_misses: u32,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the signing key or the Redis password.
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .field("signed", &self.signing_key.is_some())
            .field("channel", &self.channel)
            .field("tls", &self.tls)
            .field("heartbeat", &self.heartbeat)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Validates user-given values.
    ///
    /// # Errors
    /// `Error::Config` for a URL the `redis` crate rejects, a TTL or timeout that is not a
    /// positive finite number of seconds (timeouts at most 60), an empty prefix or channel, or a
    /// signing key shorter than [`MIN_SIGNING_KEY_BYTES`].
    pub fn new(
        url: &str,
        ttl_seconds: f64,
        timeout_seconds: f64,
        key_prefix: &str,
        signing_key: Option<Vec<u8>>,
        channel: Option<&str>,
        decisions: DecisionPolicy,
    ) -> Result<Self> {
        connect::Mode::parse(url)?;
        let ttl = seconds("ttl_seconds", ttl_seconds)?;
        if ttl.is_zero() {
            return Err(Error::config("ttl_seconds must be > 0"));
        }
        let timeout = seconds("timeout_seconds", timeout_seconds)?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(Error::config(format!(
                "timeout_seconds must be > 0 and <= 60, got {timeout_seconds}"
            )));
        }
        if key_prefix.is_empty() || key_prefix.chars().any(char::is_whitespace) {
            return Err(Error::config(format!(
                "key_prefix must be non-empty without whitespace, got {key_prefix:?}"
            )));
        }
        if let Some(k) = &signing_key {
            if k.len() < MIN_SIGNING_KEY_BYTES {
                return Err(Error::config(format!(
                    "signing_key must be at least {MIN_SIGNING_KEY_BYTES} bytes, got {}",
                    k.len()
                )));
            }
        }
        let channel = match channel {
            None => format!("{key_prefix}:events"),
            Some("") => return Err(Error::config("channel must be non-empty (or None)")),
            Some(c) => c.to_owned(),
        };
        Ok(Self {
            url: url.to_owned(),
            ttl,
            timeout,
            key_prefix: key_prefix.to_owned(),
            signing_key,
            channel,
            decisions,
            tls: connect::Tls::default(),
            heartbeat: Some(heartbeat::DEFAULT_INTERVAL),
            heartbeat_misses: heartbeat::DEFAULT_MISSES,
        })
    }

    /// With TLS material (see [`connect::Tls::load`]).
    ///
    /// # Errors
    /// `Error::Config` when TLS options are given for a plaintext URL.
    pub fn with_tls(mut self, tls: connect::Tls) -> Result<Self> {
        connect::Target::new(&self.url, &tls)?;
        self.tls = tls;
        Ok(self)
    }

    /// With the heartbeat every `seconds` (`None` or 0: off), lost after `misses` silent
    /// intervals.
    ///
    /// # Errors
    /// `Error::Config` for an interval that is not finite and in `[0.05, 3600]` s (0 turns it
    /// off), or `misses` outside `1..=100`.
    pub fn with_heartbeat(mut self, seconds: Option<f64>, misses: u32) -> Result<Self> {
        self.heartbeat = heartbeat::interval(seconds)?;
        if !(1..=100).contains(&misses) {
            return Err(Error::config(format!(
                "heartbeat_misses must be between 1 and 100, got {misses}"
            )));
        }
        self.heartbeat_misses = misses;
        Ok(self)
    }
}

/// `url` with its password (the userinfo after `user:`, and any `pass=`/`password=` query
/// value) replaced by `***`: what every repr, error, log line and warning shows.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let start = scheme_end + 3;
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") =>
                {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

/// The secrets of `url` (its password and `pass=`/`password=` values, raw and
/// percent-decoded), which no message may carry.
fn url_secrets(url: &str) -> Vec<String> {
    let mut raw = Vec::new();
    if let Some(scheme_end) = url.find("://") {
        let start = scheme_end + 3;
        let end = url[start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| start + i);
        if let Some(at) = url[start..end].rfind('@').map(|i| start + i) {
            if let Some(colon) = url[start..at].find(':').map(|i| start + i) {
                raw.push(&url[colon + 1..at]);
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split(['&', '#']) {
            if let Some((k, v)) = pair.split_once('=') {
                if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") {
                    raw.push(v);
                }
            }
        }
    }
    let mut secrets: Vec<String> = raw
        .iter()
        .flat_map(|r| [percent_decode(r), (*r).to_owned()])
        .collect();
    secrets.retain(|s| !s.is_empty());
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every secret of `url` replaced by `***`.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.to_owned();
    for secret in url_secrets(url) {
        out = out.replace(&secret, "***");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The runtime

enum RuntimeState {
    NotStarted,
    /// The runtime and the process that built it.
    Running(Runtime, u32),
    Stopped,
}

static RUNTIME: Mutex<RuntimeState> = Mutex::new(RuntimeState::NotStarted);

/// The L2 runtime's handle, built on first use; `None` once [`shutdown`] ran (or if tokio
/// could not start a thread).
///
/// # Fork
/// A runtime inherited across `fork()` (a pre-forking server that imported the app first) has
/// no threads in the child: the child builds its own and forgets the parent's.
pub fn handle() -> Option<Handle> {
    let pid = std::process::id();
    let mut state = RUNTIME.lock();
    match &*state {
        RuntimeState::Running(rt, owner) if *owner == pid => return Some(rt.handle().clone()),
        RuntimeState::Stopped => return None,
        _ => {}
    }
    if let RuntimeState::Running(inherited, _) =
        std::mem::replace(&mut *state, RuntimeState::NotStarted)
    {
        // Dropping it would wait for threads that only exist in the parent.
        std::mem::forget(inherited);
        IN_FLIGHT.store(0, Ordering::SeqCst);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .thread_name("regoguard-l2")
        .enable_io()
        .enable_time()
        .build()
        .ok()?;
    let h = rt.handle().clone();
    *state = RuntimeState::Running(rt, pid);
    Some(h)
}

/// Tasks spawned and not finished: [`shutdown`] lets them finish (each is bounded by its
/// timeout), so a write made just before exit still reaches Redis.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one task in flight until dropped.
struct InFlight;

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lets the tasks in flight finish (at most `timeout`), then stops the runtime; every later L2
/// call is a miss. Call it without holding the GIL: a task may be waiting for it.
pub fn shutdown(timeout: Duration) {
    let started = Instant::now();
    let state = std::mem::replace(&mut *RUNTIME.lock(), RuntimeState::Stopped);
    if let RuntimeState::Running(rt, _) = state {
        while IN_FLIGHT.load(Ordering::SeqCst) > 0 && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(1));
        }
        rt.shutdown_timeout(
            timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(100)),
        );
    }
}

/// Whether the runtime has been stopped.
pub fn is_stopped() -> bool {
    matches!(*RUNTIME.lock(), RuntimeState::Stopped)
}

// ---------------------------------------------------------------------------------------------
// Counters and warnings

/// What the L2 did, as relaxed atomics.
#[derive(Debug, Default)]
pub struct L2Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Timeouts and Redis errors (each also a miss to its caller).
    pub errors: AtomicU64,
    /// Entries that failed verification: undecodable, bad or missing signature, other
    /// revision, expired or revoked.
    pub bad_entries: AtomicU64,
    /// Of `bad_entries`, the validly signed ones refused because their sealed expiry passed
    /// or an invalidation happened after they were sealed (a replay, or a late writer).
    pub stale_entries: AtomicU64,
    /// Writes not made because an invalidation happened while the value was computed.
    pub stale_writes: AtomicU64,
    /// Calls not made because the circuit breaker was open (Redis recently failed).
    pub skipped: AtomicU64,
    pub writes: AtomicU64,
    /// Results not written because they have no JSON form (they stay L1-only).
    pub unshareable: AtomicU64,
    pub deletes: AtomicU64,
}

#[inline]
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// [`crate::clock::now_ns`], never 0 (0 means "healthy" in `down_until_ns` and "never" in
/// `last_warning_ns`).
fn now_ns() -> u64 {
    crate::clock::now_ns().max(1)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

const WARNING_INTERVAL: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The round trip assumed before one was measured (loopback Redis through the runtime).
const INITIAL_RTT: Duration = Duration::from_micros(150);

/// What a verified read found.
pub struct Found {
    pub payload: Vec<u8>,
    /// What is left of the entry's lifetime (its sealed expiry, and Redis's TTL).
    pub remaining: Duration,
}

/// The epochs a reader saw before computing (see "Revocation"): handed to [`L2::spawn_set`],
/// which does not write if they moved meanwhile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub space: u64,
    pub key: u64,
    /// The space's tag generation: raised by every tag invalidation.
    pub tags: u64,
}

/// Where a key's invalidation epochs live.
#[derive(Clone, Debug)]
pub struct EpochKeys {
    pub space: String,
    pub key: String,
    pub tag_generation: String,
}

/// The metadata sealed with a payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Unix milliseconds after which the entry is refused.
    pub expires_ms: u64,
    pub space_epoch: u64,
    pub key_epoch: u64,
    /// `(tag, epoch)` of each tag of the entry.
    pub tags: Vec<(String, u64)>,
}

/// A verified entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub payload: &'a [u8],
    pub stamp: Stamp,
}

/// Raises each key in KEYS to `max(old + 1, ARGV[1])` with expiry `ARGV[2]` ms; returns them.
const BUMP_SCRIPT: &str = "local out = {} \
for i, k in ipairs(KEYS) do \
  local v = math.max((tonumber(redis.call('GET', k)) or 0) + 1, tonumber(ARGV[1])) \
  redis.call('SET', k, string.format('%d', v), 'PX', ARGV[2]) \
  out[i] = string.format('%d', v) \
end \
return out";

/// The wall clock in milliseconds: entries' expiries, messages' timestamps.
fn unix_ms() -> u64 {
    crate::clock::unix_ns() / 1_000_000
}

fn parse_epoch(v: Option<&String>) -> u64 {
    v.and_then(|s| s.parse().ok()).unwrap_or(0)
}

type HmacSha256 = Hmac<Sha256>;

/// A connection to one Redis, shared by every cache built with one `RedisConfig`.
pub struct L2 {
    config: RedisConfig,
    /// The server, Cluster or Sentinel it connects to ([`connect`]).
    target: connect::Target,
    /// The connection and the process that made it (see [`handle`] on `fork()`).
    manager: Mutex<Option<(u32, Option<Conn>)>>,
    pub counters: L2Counters,
    /// Skip Redis until this instant (`now_ns`); 0 when healthy.
    down_until_ns: AtomicU64,
    backoff_ns: AtomicU64,
    rtt_ewma_ns: AtomicU64,
    last_warning_ns: AtomicU64,
    warning: Mutex<Option<String>>,
    /// The highest epoch this process has seen per epoch key: a rolled-back epoch in Redis
    /// never makes this process accept an entry it knows to be revoked.
    epochs_seen: Mutex<std::collections::HashMap<String, u64>>,
    /// Cross-instance messages ([`pubsub`]).
    pub bus: pubsub::Bus,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A failed Redis call.
#[derive(Debug)]
enum CallError {
    Timeout,
    Redis(redis::RedisError),
    NoRuntime,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timed out"),
            CallError::Redis(e) => write!(f, "{e}"),
            CallError::NoRuntime => f.write_str("the L2 runtime is stopped"),
        }
    }
}

impl L2 {
    /// # Errors
    /// `Error::Config` if the URL does not parse (already checked by [`RedisConfig::new`]).
    pub fn new(config: RedisConfig) -> Result<Arc<Self>> {
        let target = connect::Target::new(&config.url, &config.tls)?;
        Ok(Arc::new(Self {
            config,
            target,
            manager: Mutex::new(None),
            counters: L2Counters::default(),
            down_until_ns: AtomicU64::new(0),
            backoff_ns: AtomicU64::new(ns(MIN_BACKOFF)),
            rtt_ewma_ns: AtomicU64::new(ns(INITIAL_RTT)),
            last_warning_ns: AtomicU64::new(0),
            warning: Mutex::new(None),
            epochs_seen: Mutex::new(std::collections::HashMap::new()),
            bus: pubsub::Bus::default(),
        }))
    }

    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The smoothed round trip of a read, measured (an initial guess until then).
    pub fn rtt(&self) -> Duration {
        Duration::from_nanos(self.rtt_ewma_ns.load(Ordering::Relaxed))
    }

    /// The pending rate-limited warning, if any (at most one per 10 s is produced).
    pub fn take_warning(&self) -> Option<String> {
        self.warning.lock().take()
    }

    #[cold]
    fn warn(&self, message: impl FnOnce() -> String) {
        let now = now_ns();
        let last = self.last_warning_ns.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < ns(WARNING_INTERVAL) {
            return;
        }
        if self
            .last_warning_ns
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            // A Redis error may quote the connection string: never its password.
            *self.warning.lock() = Some(scrub(&message(), &self.config.url));
        }
    }

    /// Whether a call may go to Redis now; while the breaker is open only one caller per backoff
    /// period is let through (the probe).
    fn admit(&self) -> bool {
        let down = self.down_until_ns.load(Ordering::Relaxed);
        if down == 0 {
            return true;
        }
        let now = now_ns();
        if now < down {
            bump(&self.counters.skipped);
            return false;
        }
        // Claim the probe: others keep skipping for another backoff period meanwhile.
        let next = now.saturating_add(self.backoff_ns.load(Ordering::Relaxed));
        if self
            .down_until_ns
            .compare_exchange(down, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            true
        } else {
            bump(&self.counters.skipped);
            false
        }
    }

    /// Whether the breaker is closed (Redis answered last time).
    pub fn healthy(&self) -> bool {
        self.down_until_ns.load(Ordering::Relaxed) == 0
    }

    fn succeeded(&self) {
        if self.down_until_ns.load(Ordering::Relaxed) != 0 {
            self.down_until_ns.store(0, Ordering::Relaxed);
            self.backoff_ns.store(ns(MIN_BACKOFF), Ordering::Relaxed);
        }
    }

    #[cold]
    fn failed(&self, what: &str, e: &CallError) {
        bump(&self.counters.errors);
        let backoff = self.backoff_ns.load(Ordering::Relaxed);
        self.down_until_ns
            .store(now_ns().saturating_add(backoff), Ordering::Relaxed);
        self.backoff_ns.store(
            backoff.saturating_mul(2).min(ns(MAX_BACKOFF)),
            Ordering::Relaxed,
        );
        self.warn(|| {
            format!(
                "regoguard L2: Redis {what} failed ({e}); serving from L1 and the engine, retrying in {} ms",
                backoff / 1_000_000
            )
        });
    }

    fn manager(&self, handle: &Handle) -> Option<Conn> {
        let pid = std::process::id();
        let mut slot = self.manager.lock();
        if let Some((owner, conn)) = &*slot {
            if *owner == pid {
                return conn.clone();
            }
        }
        // Inherited across fork(): the connection and its tasks belong to the parent.
        if let Some(inherited) = slot.take() {
            std::mem::forget(inherited);
        }
        // The connection spawns its tasks on the current runtime.
        let conn = {
            let _entered = handle.enter();
            self.target.connect_lazy(self.config.timeout)
        };
        *slot = Some((pid, conn.clone()));
        conn
    }

    /// Runs `f` on the runtime, bounded by the timeout.
    async fn call<T, F>(
        conn: Conn,
        timeout: Duration,
        f: impl FnOnce(Conn) -> F,
    ) -> Result<T, CallError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// The runtime and a connection if a call may be made now (else counted as skipped).
    fn ready(self: &Arc<Self>) -> Option<(Handle, Conn)> {
        if !self.admit() {
            return None;
        }
        let Some(handle) = handle() else {
            bump(&self.counters.skipped);
            return None;
        };
        let Some(conn) = self.manager(&handle) else {
            self.failed("connection", &CallError::NoRuntime);
            return None;
        };
        self.ensure_subscriber(&handle);
        Some((handle, conn))
    }

    /// Reads and verifies `key` (an entry of `revision` in the epoch space `space`), waiting at
    /// most about the timeout. Call it without the GIL.
    pub fn get_blocking(
        self: &Arc<Self>,
        key: &str,
        space: &str,
        revision: &str,
    ) -> (Option<Found>, Option<Observed>) {
        let (tx, rx) = mpsc::sync_channel(1);
        let started = self.spawn_get(
            key.to_owned(),
            space,
            revision.to_owned(),
            move |found, observed| {
                let _ = tx.send((found, observed));
            },
        );
        if !started {
            return (None, None);
        }
        // The task is bounded by the timeout already; the margin covers scheduling.
        rx.recv_timeout(self.config.timeout * 2 + Duration::from_millis(20))
            .unwrap_or((None, None))
    }

    /// Starts reading `key` on the runtime and calls `done` with what was found and the epochs
    /// seen (on the runtime's thread). Returns `false`, without calling `done`, when no call
    /// can be made now (breaker open, runtime stopped): the caller treats that as a miss at once.
    pub fn spawn_get(
        self: &Arc<Self>,
        key: String,
        space: &str,
        revision: String,
        done: impl FnOnce(Option<Found>, Option<Observed>) + Send + 'static,
    ) -> bool {
        let Some((handle, conn)) = self.ready() else {
            return false;
        };
        let this = self.clone();
        let epochs = self.epoch_keys(space, &key);
        let space = space.to_owned();
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let read = this.get(conn, &key, &space, &epochs, &revision);
            let (found, observed) =
                if let Ok(r) = tokio::time::timeout(this.config.timeout, read).await {
                    r
                } else {
                    bump(&this.counters.misses);
                    this.failed("GET", &CallError::Timeout);
                    (None, None)
                };
            done(found, observed);
        });
        true
    }

    /// The epoch keys of `key` in `space`.
    pub fn epoch_keys(&self, space: &str, key: &str) -> EpochKeys {
        let p = &self.config.key_prefix;
        EpochKeys {
            space: format!("{p}:e:{space}"),
            key: format!("{p}:e:k:{key}"),
            tag_generation: format!("{p}:e:{space}:g"),
        }
    }

    /// The epoch key of `tag` in `space`.
    pub fn tag_epoch_key(&self, space: &str, tag: &str) -> String {
        format!("{}:e:{space}:t:{tag}", self.config.key_prefix)
    }

    /// `value` and what this process saw before, whichever is higher (and remembers it).
    fn at_least_seen(&self, epoch_key: &str, value: u64) -> u64 {
        let mut seen = self.epochs_seen.lock();
        let known = seen.get(epoch_key).copied().unwrap_or(0);
        if value > known {
            if seen.len() >= 100_000 {
                seen.clear();
            }
            seen.insert(epoch_key.to_owned(), value);
            value
        } else {
            known
        }
    }

    async fn get(
        &self,
        conn: Conn,
        key: &str,
        space: &str,
        epochs: &EpochKeys,
        revision: &str,
    ) -> (Option<Found>, Option<Observed>) {
        let started = Instant::now();
        let reply: Result<
            (
                Option<Vec<u8>>,
                i64,
                Option<String>,
                Option<String>,
                Option<String>,
            ),
            _,
        > = Self::call(conn.clone(), self.config.timeout, |mut c| async move {
            redis::pipe()
                .get(key)
                .pttl(key)
                .get(&epochs.space)
                .get(&epochs.key)
                .get(&epochs.tag_generation)
                .query_async(&mut c)
                .await
        })
        .await;
        let (bytes, pttl, e_space, e_key, e_tags) = match reply {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.misses);
                self.failed("GET", &e);
                return (None, None);
            }
        };
        self.succeeded();
        self.observe_rtt(started.elapsed());
        let observed = Observed {
            space: self.at_least_seen(&epochs.space, parse_epoch(e_space.as_ref())),
            key: self.at_least_seen(&epochs.key, parse_epoch(e_key.as_ref())),
            tags: self.at_least_seen(&epochs.tag_generation, parse_epoch(e_tags.as_ref())),
        };
        let Some(bytes) = bytes else {
            bump(&self.counters.misses);
            return (None, Some(observed));
        };
        let entry = match self.verify(key, revision, &bytes) {
            Ok(entry) => entry,
            Err(why) => return (self.refused(key, why, false), Some(observed)),
        };
        let now = unix_ms();
        if entry.stamp.expires_ms <= now {
            return (
                self.refused(key, "has expired (its sealed deadline passed)", true),
                Some(observed),
            );
        }
        if entry.stamp.space_epoch < observed.space || entry.stamp.key_epoch < observed.key {
            return (
                self.refused(key, "was sealed before an invalidation", true),
                Some(observed),
            );
        }
        if !entry.stamp.tags.is_empty() {
            let names: Vec<String> = entry
                .stamp
                .tags
                .iter()
                .map(|(t, _)| self.tag_epoch_key(space, t))
                .collect();
            let names2 = names.clone();
            let current: Result<Vec<Option<String>>, _> =
                Self::call(conn, self.config.timeout, |mut c| async move {
                    let mut pipe = redis::pipe();
                    for n in &names2 {
                        pipe.get(n);
                    }
                    pipe.query_async(&mut c).await
                })
                .await;
            let Ok(current) = current else {
                bump(&self.counters.misses);
                return (None, Some(observed));
            };
            for ((name, now_epoch), (_, sealed)) in
                names.iter().zip(&current).zip(&entry.stamp.tags)
            {
                if *sealed < self.at_least_seen(name, parse_epoch(now_epoch.as_ref())) {
                    return (
                        self.refused(key, "was sealed before an invalidation of its tag", true),
                        Some(observed),
                    );
                }
            }
        }
        // -1: no expiry (written by someone else); -2: gone since the GET.
        let redis_left = match pttl {
            -1 => self.config.ttl,
            p if p > 0 => Duration::from_millis(p.unsigned_abs()).min(self.config.ttl),
            _ => Duration::ZERO,
        };
        let remaining = redis_left.min(Duration::from_millis(entry.stamp.expires_ms - now));
        bump(&self.counters.hits);
        (
            Some(Found {
                payload: entry.payload.to_vec(),
                remaining,
            }),
            Some(observed),
        )
    }

    /// Counts and reports a refused entry; always `None` (a miss).
    #[cold]
    fn refused(&self, key: &str, why: &str, stale: bool) -> Option<Found> {
        bump(&self.counters.bad_entries);
        if stale {
            bump(&self.counters.stale_entries);
        }
        bump(&self.counters.misses);
        self.warn(|| format!("regoguard L2: ignored an entry that {why} (key {key})"));
        None
    }

    fn observe_rtt(&self, sample: Duration) {
        let old = self.rtt_ewma_ns.load(Ordering::Relaxed);
        let new = old - old / 8 + ns(sample) / 8;
        self.rtt_ewma_ns.store(new, Ordering::Relaxed);
    }

    /// Stores `payload` under `key` for `ttl` (capped at the configured TTL), sealed with the
    /// current epochs of `space`, the key and `tags`, and adds the key to the set of each tag in
    /// `tag_space`; fire and forget, bounded by the timeout. With `observed` (the epochs read
    /// before the value was computed) nothing is written if any of them moved since.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_set(
        self: &Arc<Self>,
        key: String,
        space: &str,
        revision: &str,
        payload: &[u8],
        ttl: Duration,
        tags: Vec<String>,
        tag_space: String,
        observed: Option<Observed>,
    ) {
        let ttl = ttl.min(self.config.ttl);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return;
        }
        let Some((handle, conn)) = self.ready() else {
            return;
        };
        let this = self.clone();
        let epochs = self.epoch_keys(space, &key);
        let tag_epochs: Vec<String> = tags.iter().map(|t| self.tag_epoch_key(space, t)).collect();
        let (revision, payload) = (revision.to_owned(), payload.to_vec());
        let tag_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let timeout = this.config.timeout;
            let work = async {
                let mut pipe = redis::pipe();
                pipe.get(&epochs.space)
                    .get(&epochs.key)
                    .get(&epochs.tag_generation);
                for t in &tag_epochs {
                    pipe.get(t);
                }
                let current: Vec<Option<String>> =
                    Self::call(conn.clone(), timeout, |mut c| async move {
                        pipe.query_async(&mut c).await
                    })
                    .await?;
                let at = |i: usize, name: &str| {
                    this.at_least_seen(name, parse_epoch(current.get(i).and_then(Option::as_ref)))
                };
                let now = Observed {
                    space: at(0, &epochs.space),
                    key: at(1, &epochs.key),
                    tags: at(2, &epochs.tag_generation),
                };
                if observed.is_some_and(|o| o != now) {
                    bump(&this.counters.stale_writes);
                    return Ok(false);
                }
                let stamp = Stamp {
                    expires_ms: unix_ms().saturating_add(ms),
                    space_epoch: now.space,
                    key_epoch: now.key,
                    tags: tags
                        .iter()
                        .zip(&tag_epochs)
                        .enumerate()
                        .map(|(i, (t, name))| (t.clone(), at(3 + i, name)))
                        .collect(),
                };
                let entry = this.seal(&key, &revision, &stamp, &payload);
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(entry)
                    .arg("PX")
                    .arg(ms)
                    .ignore();
                for tag in &tags {
                    let set = format!("{tag_space}:{tag}");
                    pipe.sadd(&set, &key)
                        .ignore()
                        .pexpire(&set, i64::try_from(tag_ms).unwrap_or(i64::MAX))
                        .ignore();
                }
                Self::call(conn, timeout, |mut c| async move {
                    pipe.query_async::<()>(&mut c).await
                })
                .await?;
                Ok::<bool, CallError>(true)
            };
            match tokio::time::timeout(timeout * 2, work).await {
                Ok(Ok(true)) => {
                    this.succeeded();
                    bump(&this.counters.writes);
                }
                Ok(Ok(false)) => this.succeeded(),
                Ok(Err(e)) => this.failed("SET", &e),
                Err(_) => this.failed("SET", &CallError::Timeout),
            }
        });
    }

    /// Raises the epochs named (`all`: the space's; each of `tags`, and then the space's tag
    /// generation; each of `keys`' own), in Redis and in this process, so every entry sealed
    /// before is refused everywhere. Waits (without the GIL) at most about the timeout; returns
    /// whether Redis confirmed it. Raised epochs expire two TTLs later, when every entry sealed
    /// under an older one has expired too.
    pub fn bump_blocking(
        self: &Arc<Self>,
        space: &str,
        all: bool,
        tags: &[String],
        keys: &[String],
    ) -> bool {
        let mut names = Vec::new();
        if all {
            names.push(format!("{}:e:{space}", self.config.key_prefix));
        }
        for k in keys {
            names.push(self.epoch_keys(space, k).key);
        }
        if !tags.is_empty() {
            names.extend(tags.iter().map(|t| self.tag_epoch_key(space, t)));
            names.push(format!("{}:e:{space}:g", self.config.key_prefix));
        }
        if names.is_empty() {
            return true;
        }
        // Remembered here first: this process refuses the old entries even if Redis is down.
        let now = unix_ms();
        for n in &names {
            let seen = self.epochs_seen.lock().get(n).copied().unwrap_or(0);
            self.at_least_seen(n, seen.saturating_add(1).max(now));
        }
        let Some((handle, conn)) = self.ready() else {
            return false;
        };
        let this = self.clone();
        let keep_ms = u64::try_from(self.config.ttl.as_millis())
            .unwrap_or(u64::MAX / 4)
            .saturating_mul(2)
            .saturating_add(1000);
        let (tx, rx) = mpsc::sync_channel(1);
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let names2 = names.clone();
            // One script per key: each touches one slot, as a Cluster requires.
            let result: Result<Vec<Vec<String>>, _> =
                Self::call(conn, this.config.timeout, |mut c| async move {
                    let mut pipe = redis::pipe();
                    for n in &names2 {
                        pipe.cmd("EVAL")
                            .arg(BUMP_SCRIPT)
                            .arg(1)
                            .arg(n)
                            .arg(now)
                            .arg(keep_ms);
                    }
                    pipe.query_async(&mut c).await
                })
                .await;
            let ok = match result {
                Ok(values) => {
                    let values: Vec<String> = values.into_iter().flatten().collect();
                    this.succeeded();
                    for (n, v) in names.iter().zip(&values) {
                        this.at_least_seen(n, v.parse().unwrap_or(0));
                    }
                    true
                }
                Err(e) => {
                    this.failed("invalidation epoch", &e);
                    false
                }
            };
            let _ = tx.send(ok);
        });
        rx.recv_timeout(self.config.timeout * 2 + Duration::from_millis(20))
            .unwrap_or(false)
    }

    /// Deletes `keys`, the keys in the sets of `tags` (under `tag_space`) and, with a `pattern`,
    /// every key matching it; waits (without the GIL) at most a few timeouts. Returns whether
    /// Redis confirmed it.
    pub fn delete_blocking(
        self: &Arc<Self>,
        keys: Vec<String>,
        tag_space: &str,
        tags: &[String],
        pattern: Option<String>,
    ) -> bool {
        let Some((handle, conn)) = self.ready() else {
            return false;
        };
        let this = self.clone();
        let tag_sets: Vec<String> = tags.iter().map(|t| format!("{tag_space}:{t}")).collect();
        let (tx, rx) = mpsc::sync_channel(1);
        // A SCAN over a large keyspace may take several round trips: give it 20 timeouts.
        let budget = this.config.timeout * 20;
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let timeout = this.config.timeout;
            let work = async {
                let mut doomed = keys;
                if !tag_sets.is_empty() {
                    let mut pipe = redis::pipe();
                    for s in &tag_sets {
                        pipe.smembers(s);
                    }
                    let members: Vec<Vec<String>> =
                        Self::call(conn.clone(), timeout, |mut c| async move {
                            pipe.query_async(&mut c).await
                        })
                        .await?;
                    doomed.extend(members.into_iter().flatten());
                    doomed.extend(tag_sets);
                }
                if let Some(pattern) = pattern {
                    // Every primary's keys on a Cluster (connect.rs).
                    let found = Self::call(conn.clone(), budget, |mut c| async move {
                        c.scan_match(&pattern).await
                    })
                    .await?;
                    doomed.extend(found);
                }
                for chunk in doomed.chunks(500) {
                    let chunk = chunk.to_vec();
                    let () = Self::call(conn.clone(), timeout, |mut c| async move {
                        redis::cmd("UNLINK").arg(chunk).query_async(&mut c).await
                    })
                    .await?;
                }
                Ok::<(), CallError>(())
            };
            let ok = match tokio::time::timeout(budget, work).await {
                Ok(Ok(())) => {
                    this.succeeded();
                    bump(&this.counters.deletes);
                    true
                }
                Ok(Err(e)) => {
                    this.failed("delete", &e);
                    false
                }
                Err(_) => {
                    this.failed("delete", &CallError::Timeout);
                    false
                }
            };
            let _ = tx.send(ok);
        });
        rx.recv_timeout(budget + Duration::from_millis(50))
            .unwrap_or(false)
    }

    /// The stored form of `payload` under `key`, sealed with `stamp`.
    pub fn seal(&self, key: &str, revision: &str, stamp: &Stamp, payload: &[u8]) -> Vec<u8> {
        let rev = &revision.as_bytes()[..revision.len().min(255)];
        let mut body = Vec::with_capacity(32 + rev.len() + payload.len());
        body.extend_from_slice(&stamp.expires_ms.to_le_bytes());
        body.extend_from_slice(&stamp.space_epoch.to_le_bytes());
        body.extend_from_slice(&stamp.key_epoch.to_le_bytes());
        let tags = &stamp.tags[..stamp.tags.len().min(usize::from(u16::MAX))];
        #[allow(clippy::cast_possible_truncation)] // at most u16::MAX by construction
        body.extend_from_slice(&(tags.len() as u16).to_le_bytes());
        for (t, e) in tags {
            let t = &t.as_bytes()[..t.len().min(usize::from(u16::MAX))];
            #[allow(clippy::cast_possible_truncation)] // at most u16::MAX by construction
            body.extend_from_slice(&(t.len() as u16).to_le_bytes());
            body.extend_from_slice(t);
            body.extend_from_slice(&e.to_le_bytes());
        }
        #[allow(clippy::cast_possible_truncation)] // at most 255 by construction
        body.push(rev.len() as u8);
        body.extend_from_slice(rev);
        body.extend_from_slice(payload);
        let mut out = Vec::with_capacity(4 + 32 + body.len());
        out.extend_from_slice(b"RG2");
        match &self.config.signing_key {
            Some(secret) => {
                out.push(1);
                out.extend_from_slice(&mac(secret, key, &body));
            }
            None => out.push(0),
        }
        out.extend_from_slice(&body);
        out
    }

    /// The payload and stamp of a stored entry, or why it is rejected. Expiry and epochs are
    /// checked by the caller (they need the clock and Redis).
    pub fn verify<'a>(
        &self,
        key: &str,
        revision: &str,
        bytes: &'a [u8],
    ) -> std::result::Result<Entry<'a>, &'static str> {
        const BAD: &str = "cannot be decoded";
        let rest = bytes.strip_prefix(b"RG2").ok_or(BAD)?;
        let (&flag, rest) = rest.split_first().ok_or(BAD)?;
        let body = match (flag, &self.config.signing_key) {
            (1, Some(secret)) => {
                if rest.len() < 32 {
                    return Err(BAD);
                }
                let (tag, body) = rest.split_at(32);
                let mut m = HmacSha256::new_from_slice(secret).map_err(|_| "cannot be verified")?;
                m.update(b"regoguard/l2/v2\0");
                m.update(key.as_bytes());
                m.update(b"\0");
                m.update(body);
                m.verify_slice(tag)
                    .map_err(|_| "fails signature verification")?;
                body
            }
            (0, None) => rest,
            (1, None) => return Err("is signed but this instance has no signing_key"),
            (0, Some(_)) => return Err("is not signed"),
            _ => return Err(BAD),
        };
        let mut r = Reader(body);
        let expires_ms = r.u64().ok_or(BAD)?;
        let space_epoch = r.u64().ok_or(BAD)?;
        let key_epoch = r.u64().ok_or(BAD)?;
        let n = r.u16().ok_or(BAD)?;
        let mut tags = Vec::with_capacity(usize::from(n).min(64));
        for _ in 0..n {
            let len = r.u16().ok_or(BAD)?;
            let t = std::str::from_utf8(r.take(usize::from(len)).ok_or(BAD)?)
                .map_err(|_| BAD)?
                .to_owned();
            tags.push((t, r.u64().ok_or(BAD)?));
        }
        let len = r.take(1).ok_or(BAD)?[0];
        let rev = r.take(usize::from(len)).ok_or(BAD)?;
        if rev != &revision.as_bytes()[..revision.len().min(255)] {
            return Err("belongs to another revision");
        }
        Ok(Entry {
            payload: r.0,
            stamp: Stamp {
                expires_ms,
                space_epoch,
                key_epoch,
                tags,
            },
        })
    }

    /// The Redis key of a decision (`revision` is the policy revision) or result.
    pub fn key(&self, space: &str, digest: &[u8; 32]) -> String {
        let mut k = String::with_capacity(self.config.key_prefix.len() + space.len() + 66);
        k.push_str(&self.config.key_prefix);
        k.push(':');
        k.push_str(space);
        k.push(':');
        for b in digest {
            let _ = write!(k, "{b:02x}");
        }
        k
    }

    /// Where the tag sets of a key space live.
    pub fn tag_space(&self, space: &str) -> String {
        format!("{}:t:{space}", self.config.key_prefix)
    }

    /// The SCAN pattern matching every key of a space.
    pub fn pattern(&self, space: &str) -> String {
        format!("{}:{space}:*", self.config.key_prefix)
    }
}

/// Reads a sealed body front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    }
}

fn mac(secret: &[u8], key: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
        return [0; 32];
    };
    m.update(b"regoguard/l2/v2\0");
    m.update(key.as_bytes());
    m.update(b"\0");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// A plain copy of [`L2Counters`] plus state, in `RedisConfig.stats()` order.
pub fn snapshot(l2: &L2) -> Vec<(&'static str, u64)> {
    let c = &l2.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    vec![
        ("hits", g(&c.hits)),
        ("misses", g(&c.misses)),
        ("errors", g(&c.errors)),
        ("bad_entries", g(&c.bad_entries)),
        ("stale_entries", g(&c.stale_entries)),
        ("stale_writes", g(&c.stale_writes)),
        ("skipped", g(&c.skipped)),
        ("writes", g(&c.writes)),
        ("unshareable", g(&c.unshareable)),
        ("deletes", g(&c.deletes)),
        ("rtt_ns", l2.rtt_ewma_ns.load(Ordering::Relaxed)),
        ("messages_sent", g(&l2.bus.sent)),
        ("messages_received", g(&l2.bus.received)),
        ("messages_rejected", g(&l2.bus.rejected)),
        ("subscription_gaps", g(&l2.bus.gaps)),
        ("heartbeats_sent", g(&l2.bus.heartbeats.sent)),
        ("heartbeats_received", g(&l2.bus.heartbeats.received)),
        ("heartbeat_losses", g(&l2.bus.heartbeats.losses)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l2(key: Option<&[u8]>) -> Arc<L2> {
        let cfg = RedisConfig::new(
            "redis://127.0.0.1:1/",
            300.0,
            0.05,
            "rg",
            key.map(<[u8]>::to_vec),
            None,
            DecisionPolicy::Always,
        )
        .unwrap();
        L2::new(cfg).unwrap()
    }

    #[test]
    fn config_validation() {
        let ok = |url: &str, ttl: f64, t: f64, p: &str, k: Option<Vec<u8>>| {
            RedisConfig::new(url, ttl, t, p, k, None, DecisionPolicy::Auto).is_ok()
        };
        assert!(ok("redis://localhost:6379/0", 300.0, 0.05, "rg", None));
        assert!(!ok("http://x", 300.0, 0.05, "rg", None));
        assert!(!ok("not a url", 300.0, 0.05, "rg", None));
        assert!(!ok("redis://x", 0.0, 0.05, "rg", None));
        assert!(!ok("redis://x", f64::NAN, 0.05, "rg", None));
        assert!(!ok("redis://x", 1.0, 0.0, "rg", None));
        assert!(!ok("redis://x", 1.0, 61.0, "rg", None));
        assert!(!ok("redis://x", 1.0, 0.05, "", None));
        assert!(!ok("redis://x", 1.0, 0.05, "a b", None));
        assert!(!ok("redis://x", 1.0, 0.05, "rg", Some(b"short".to_vec())));
        assert!(DecisionPolicy::parse("sometimes").is_err());
        let c = RedisConfig::new(
            "redis://x",
            1.0,
            0.05,
            "rg",
            None,
            None,
            DecisionPolicy::Auto,
        )
        .unwrap();
        assert_eq!(c.channel, "rg:events");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("redis://:hunter2@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://bob:p%40ss@h/0"), "redis://bob:***@h/0");
        assert_eq!(redact_url("rediss://bob:a:b@c@h:1"), "rediss://bob:***@h:1");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("redis://bob@h/0"), "redis://bob@h/0");
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?db=1&pass=s3cret"),
            "redis+unix:///tmp/r.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("unix:///tmp/r.sock?password=s3cret&db=2"),
            "unix:///tmp/r.sock?password=***&db=2"
        );
        let url = "redis://bob:p%40ss@h/0";
        assert_eq!(
            scrub("AUTH p@ss failed for p%40ss", url),
            "AUTH *** failed for ***"
        );
        let c = RedisConfig::new(
            "redis://:hunter2@localhost:6379/0",
            1.0,
            0.05,
            "rg",
            None,
            None,
            DecisionPolicy::Auto,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let Err(e) = RedisConfig::new(
            "redis://:hunter2@[bad",
            1.0,
            0.05,
            "rg",
            None,
            None,
            DecisionPolicy::Auto,
        ) else {
            panic!("a bad url must be refused")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn sealed_entries_verify_only_under_their_key_revision_and_secret() {
        let signed = l2(Some(b"0123456789abcdef-secret"));
        let stamp = Stamp {
            expires_ms: 123,
            space_epoch: 4,
            key_epoch: 5,
            tags: vec![("t1".into(), 6), ("t2".into(), 7)],
        };
        let entry = signed.seal("rg:d:k1", "rev1", &stamp, b"true");
        let ok = Entry {
            payload: &b"true"[..],
            stamp: stamp.clone(),
        };
        assert_eq!(signed.verify("rg:d:k1", "rev1", &entry), Ok(ok));
        assert!(
            signed.verify("rg:d:k2", "rev1", &entry).is_err(),
            "replayed under another key"
        );
        assert!(
            signed.verify("rg:d:k1", "rev2", &entry).is_err(),
            "another revision"
        );
        let mut forged = entry.clone();
        *forged.last_mut().unwrap() = b'x';
        assert_eq!(
            signed.verify("rg:d:k1", "rev1", &forged),
            Err("fails signature verification")
        );
        // Every stamp byte is under the MAC: a later expiry or a newer epoch cannot be forged.
        for i in 36..36 + 24 {
            let mut moved = entry.clone();
            moved[i] ^= 0x40;
            assert_eq!(
                signed.verify("rg:d:k1", "rev1", &moved),
                Err("fails signature verification"),
                "byte {i}"
            );
        }
        let other = l2(Some(b"another-secret-of-16+"));
        assert!(other.verify("rg:d:k1", "rev1", &entry).is_err());
        let unsigned = l2(None);
        let plain = unsigned.seal("rg:d:k1", "rev1", &Stamp::default(), b"true");
        assert_eq!(
            unsigned
                .verify("rg:d:k1", "rev1", &plain)
                .map(|e| e.payload),
            Ok(&b"true"[..])
        );
        assert_eq!(
            signed.verify("rg:d:k1", "rev1", &plain).map(|e| e.payload),
            Err("is not signed")
        );
        assert!(unsigned.verify("rg:d:k1", "rev1", &entry).is_err());
        assert!(unsigned.verify("rg:d:k1", "rev1", b"garbage").is_err());
        assert!(unsigned.verify("rg:d:k1", "rev1", b"").is_err());
        assert!(
            unsigned
                .verify("rg:d:k1", "rev1", &plain[..plain.len() - 10])
                .is_err(),
            "truncated"
        );
        // A v1 entry (no expiry, no epochs) is never accepted.
        let mut v1 = plain.clone();
        v1[2] = b'1';
        assert!(unsigned.verify("rg:d:k1", "rev1", &v1).is_err());
    }

    #[test]
    fn unreachable_redis_is_a_bounded_miss_then_skipped() {
        let l2 = l2(None);
        let started = Instant::now();
        assert!(l2.get_blocking("rg:d:x", "d", "r").0.is_none());
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(l2.counters.errors.load(Ordering::Relaxed), 1);
        // The breaker is open now: the next call does not even try.
        assert!(l2.get_blocking("rg:d:x", "d", "r").0.is_none());
        assert_eq!(l2.counters.skipped.load(Ordering::Relaxed), 1);
        assert!(l2.take_warning().is_some());
        assert!(l2.take_warning().is_none());
    }
}
