//! The L2: a Redis cache shared by every process that uses the same Redis and key prefix.
//!
//! DESIGN.md section 3, rule 6: Redis is an accelerator, never an authority. Every call is
//! bounded by [`RedisConfig::timeout`]; any error, timeout or entry that fails verification is
//! a miss, counted in [`L2Counters`] and reported through a rate-limited warning
//! ([`L2::take_warning`]). Nobody is allowed or denied because of Redis.
//!
//! # Entries
//! A value stored under a key is `RG1`, a flag byte (1: signed), the 32-byte HMAC-SHA256 tag
//! when signed, a one-byte revision length, the revision and the payload (canonical JSON). The
//! tag covers the Redis key, the revision and the payload, so an entry cannot be replayed under
//! another key or revision. A reader with a signing key accepts only entries signed with it; a
//! reader without one accepts only unsigned entries.
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
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::Sha256;
use tokio::runtime::{Handle, Runtime};

use crate::cache::seconds;
use crate::error::{Error, Result};

pub mod pubsub;

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
            other => Err(Error::config(format!("decisions must be 'auto', 'always' or 'never', got {other:?}"))),
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
        redis::Client::open(url).map_err(|e| Error::config(scrub(&format!("url {}: {e}", redact_url(url)), url)))?;
        let ttl = seconds("ttl_seconds", ttl_seconds)?;
        if ttl.is_zero() {
            return Err(Error::config("ttl_seconds must be > 0"));
        }
        let timeout = seconds("timeout_seconds", timeout_seconds)?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(Error::config(format!("timeout_seconds must be > 0 and <= 60, got {timeout_seconds}")));
        }
        if key_prefix.is_empty() || key_prefix.chars().any(char::is_whitespace) {
            return Err(Error::config(format!("key_prefix must be non-empty without whitespace, got {key_prefix:?}")));
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
        Ok(Self { url: url.to_owned(), ttl, timeout, key_prefix: key_prefix.to_owned(), signing_key, channel, decisions })
    }
}

/// `url` with its password (the userinfo after `user:`, and any `pass=`/`password=` query
/// value) replaced by `***`: what every repr, error, log line and warning shows.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let start = scheme_end + 3;
        let end = out[start..].find(['/', '?', '#']).map_or(out.len(), |i| start + i);
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
                Some((k, _)) if k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password") => format!("{k}=***"),
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
        let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
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
    let mut secrets: Vec<String> = raw.iter().flat_map(|r| [percent_decode(r), (*r).to_owned()]).collect();
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
            if let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
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
    if let RuntimeState::Running(inherited, _) = std::mem::replace(&mut *state, RuntimeState::NotStarted) {
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
        rt.shutdown_timeout(timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(100)));
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
    /// Entries that failed verification: undecodable, bad or missing signature, other revision.
    pub bad_entries: AtomicU64,
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

fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1)
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
    /// What is left of the entry's lifetime in Redis.
    pub remaining: Duration,
}

type HmacSha256 = Hmac<Sha256>;

/// A connection to one Redis, shared by every cache built with one `RedisConfig`.
pub struct L2 {
    config: RedisConfig,
    client: redis::Client,
    /// The connection and the process that made it (see [`handle`] on `fork()`).
    manager: Mutex<Option<(u32, Option<ConnectionManager>)>>,
    pub counters: L2Counters,
    /// Skip Redis until this instant (`now_ns`); 0 when healthy.
    down_until_ns: AtomicU64,
    backoff_ns: AtomicU64,
    rtt_ewma_ns: AtomicU64,
    last_warning_ns: AtomicU64,
    warning: Mutex<Option<String>>,
    /// Cross-instance messages ([`pubsub`]).
    pub bus: pubsub::Bus,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2").field("config", &self.config).finish_non_exhaustive()
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
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| Error::config(scrub(&format!("url {}: {e}", redact_url(&config.url)), &config.url)))?;
        Ok(Arc::new(Self {
            config,
            client,
            manager: Mutex::new(None),
            counters: L2Counters::default(),
            down_until_ns: AtomicU64::new(0),
            backoff_ns: AtomicU64::new(ns(MIN_BACKOFF)),
            rtt_ewma_ns: AtomicU64::new(ns(INITIAL_RTT)),
            last_warning_ns: AtomicU64::new(0),
            warning: Mutex::new(None),
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
        if self.last_warning_ns.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
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
        if self.down_until_ns.compare_exchange(down, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
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
        self.down_until_ns.store(now_ns().saturating_add(backoff), Ordering::Relaxed);
        self.backoff_ns.store(backoff.saturating_mul(2).min(ns(MAX_BACKOFF)), Ordering::Relaxed);
        self.warn(|| {
            format!(
                "regoguard L2: Redis {what} failed ({e}); serving from L1 and the engine, retrying in {} ms",
                backoff / 1_000_000
            )
        });
    }

    fn manager(&self, handle: &Handle) -> Option<ConnectionManager> {
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
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            .set_response_timeout(Some(self.config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(MAX_BACKOFF);
        // The manager spawns its tasks on the current runtime.
        let conn = {
            let _entered = handle.enter();
            ConnectionManager::new_lazy_with_config(self.client.clone(), config).ok()
        };
        *slot = Some((pid, conn.clone()));
        conn
    }

    /// Runs `f` on the runtime, bounded by the timeout.
    async fn call<T, F>(conn: ConnectionManager, timeout: Duration, f: impl FnOnce(ConnectionManager) -> F) -> Result<T, CallError>
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
    fn ready(self: &Arc<Self>) -> Option<(Handle, ConnectionManager)> {
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

    /// Reads and verifies `key` (an entry of `revision`), waiting at most about the timeout.
    /// Call it without the GIL.
    pub fn get_blocking(self: &Arc<Self>, key: &str, revision: &str) -> Option<Found> {
        let (tx, rx) = mpsc::sync_channel(1);
        let started = self.spawn_get(key.to_owned(), revision.to_owned(), move |found| {
            let _ = tx.send(found);
        });
        if !started {
            return None;
        }
        // The task is bounded by the timeout already; the margin covers scheduling.
        rx.recv_timeout(self.config.timeout * 2 + Duration::from_millis(20)).ok().flatten()
    }

    /// Starts reading `key` on the runtime and calls `done` with what was found (on the
    /// runtime's thread). Returns `false`, without calling `done`, when no call can be made now
    /// (breaker open, runtime stopped): the caller treats that as a miss at once.
    pub fn spawn_get(
        self: &Arc<Self>,
        key: String,
        revision: String,
        done: impl FnOnce(Option<Found>) + Send + 'static,
    ) -> bool {
        let Some((handle, conn)) = self.ready() else { return false };
        let this = self.clone();
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let found = this.get(conn, &key, &revision).await;
            done(found);
        });
        true
    }

    async fn get(&self, conn: ConnectionManager, key: &str, revision: &str) -> Option<Found> {
        let started = Instant::now();
        let reply: Result<(Option<Vec<u8>>, i64), _> = Self::call(conn, self.config.timeout, |mut c| async move {
            redis::pipe().get(key).pttl(key).query_async(&mut c).await
        })
        .await;
        match reply {
            Ok((bytes, pttl)) => {
                self.succeeded();
                self.observe_rtt(started.elapsed());
                let Some(bytes) = bytes else {
                    bump(&self.counters.misses);
                    return None;
                };
                // -1: no expiry (written by someone else); -2: gone since the GET.
                let remaining = match pttl {
                    -1 => self.config.ttl,
                    p if p > 0 => Duration::from_millis(p.unsigned_abs()).min(self.config.ttl),
                    _ => Duration::ZERO,
                };
                match self.verify(key, revision, &bytes) {
                    Ok(payload) => {
                        bump(&self.counters.hits);
                        Some(Found { payload: payload.to_vec(), remaining })
                    }
                    Err(why) => {
                        bump(&self.counters.bad_entries);
                        bump(&self.counters.misses);
                        self.warn(|| format!("regoguard L2: ignored an entry that {why} (key {key})"));
                        None
                    }
                }
            }
            Err(e) => {
                bump(&self.counters.misses);
                self.failed("GET", &e);
                None
            }
        }
    }

    fn observe_rtt(&self, sample: Duration) {
        let old = self.rtt_ewma_ns.load(Ordering::Relaxed);
        let new = old - old / 8 + ns(sample) / 8;
        self.rtt_ewma_ns.store(new, Ordering::Relaxed);
    }

    /// Stores `payload` under `key` for `ttl` (capped at the configured TTL) and adds the key to
    /// the set of each tag in `tag_space`; fire and forget, bounded by the timeout.
    pub fn spawn_set(self: &Arc<Self>, key: String, revision: &str, payload: &[u8], ttl: Duration, tags: Vec<String>, tag_space: String) {
        let ttl = ttl.min(self.config.ttl);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return;
        }
        let entry = self.seal(&key, revision, payload);
        let Some((handle, conn)) = self.ready() else { return };
        let this = self.clone();
        let tag_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let result = Self::call(conn, this.config.timeout, |mut c| async move {
                let mut pipe = redis::pipe();
                pipe.cmd("SET").arg(&key).arg(entry).arg("PX").arg(ms).ignore();
                for tag in &tags {
                    let set = format!("{tag_space}:{tag}");
                    pipe.sadd(&set, &key).ignore().pexpire(&set, i64::try_from(tag_ms).unwrap_or(i64::MAX)).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
            .await;
            match result {
                Ok(()) => {
                    this.succeeded();
                    bump(&this.counters.writes);
                }
                Err(e) => this.failed("SET", &e),
            }
        });
    }

    /// Deletes `keys`, the keys in the sets of `tags` (under `tag_space`) and, with a `pattern`,
    /// every key matching it; waits (without the GIL) at most a few timeouts. Returns whether
    /// Redis confirmed it.
    pub fn delete_blocking(self: &Arc<Self>, keys: Vec<String>, tag_space: &str, tags: &[String], pattern: Option<String>) -> bool {
        let Some((handle, conn)) = self.ready() else { return false };
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
                        Self::call(conn.clone(), timeout, |mut c| async move { pipe.query_async(&mut c).await }).await?;
                    doomed.extend(members.into_iter().flatten());
                    doomed.extend(tag_sets);
                }
                if let Some(pattern) = pattern {
                    let mut cursor: u64 = 0;
                    loop {
                        let pattern = pattern.clone();
                        let (next, found): (u64, Vec<String>) = Self::call(conn.clone(), timeout, |mut c| async move {
                            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query_async(&mut c).await
                        })
                        .await?;
                        doomed.extend(found);
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
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
        rx.recv_timeout(budget + Duration::from_millis(50)).unwrap_or(false)
    }

    /// The stored form of `payload` under `key`.
    pub fn seal(&self, key: &str, revision: &str, payload: &[u8]) -> Vec<u8> {
        let rev = &revision.as_bytes()[..revision.len().min(255)];
        let mut out = Vec::with_capacity(4 + 32 + 1 + rev.len() + payload.len());
        out.extend_from_slice(b"RG1");
        let mut body = Vec::with_capacity(1 + rev.len() + payload.len());
        #[allow(clippy::cast_possible_truncation)] // at most 255 by construction
        body.push(rev.len() as u8);
        body.extend_from_slice(rev);
        body.extend_from_slice(payload);
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

    /// The payload of a stored entry, or why it is rejected.
    pub fn verify<'a>(&self, key: &str, revision: &str, bytes: &'a [u8]) -> std::result::Result<&'a [u8], &'static str> {
        let rest = bytes.strip_prefix(b"RG1").ok_or("cannot be decoded")?;
        let (&flag, rest) = rest.split_first().ok_or("cannot be decoded")?;
        let body = match (flag, &self.config.signing_key) {
            (1, Some(secret)) => {
                if rest.len() < 32 {
                    return Err("cannot be decoded");
                }
                let (tag, body) = rest.split_at(32);
                let mut m = HmacSha256::new_from_slice(secret).map_err(|_| "cannot be verified")?;
                m.update(b"regoguard/l2/v1\0");
                m.update(key.as_bytes());
                m.update(b"\0");
                m.update(body);
                m.verify_slice(tag).map_err(|_| "fails signature verification")?;
                body
            }
            (0, None) => rest,
            (1, None) => return Err("is signed but this instance has no signing_key"),
            (0, Some(_)) => return Err("is not signed"),
            _ => return Err("cannot be decoded"),
        };
        let (&len, body) = body.split_first().ok_or("cannot be decoded")?;
        let len = usize::from(len);
        if body.len() < len {
            return Err("cannot be decoded");
        }
        let (rev, payload) = body.split_at(len);
        if rev != &revision.as_bytes()[..revision.len().min(255)] {
            return Err("belongs to another revision");
        }
        Ok(payload)
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

fn mac(secret: &[u8], key: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else { return [0; 32] };
    m.update(b"regoguard/l2/v1\0");
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
        ("skipped", g(&c.skipped)),
        ("writes", g(&c.writes)),
        ("unshareable", g(&c.unshareable)),
        ("deletes", g(&c.deletes)),
        ("rtt_ns", l2.rtt_ewma_ns.load(Ordering::Relaxed)),
        ("messages_sent", g(&l2.bus.sent)),
        ("messages_received", g(&l2.bus.received)),
        ("messages_rejected", g(&l2.bus.rejected)),
        ("subscription_gaps", g(&l2.bus.gaps)),
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
        let c = RedisConfig::new("redis://x", 1.0, 0.05, "rg", None, None, DecisionPolicy::Auto).unwrap();
        assert_eq!(c.channel, "rg:events");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(redact_url("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact_url("redis://bob:p%40ss@h/0"), "redis://bob:***@h/0");
        assert_eq!(redact_url("rediss://bob:a:b@c@h:1"), "rediss://bob:***@h:1");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("redis://bob@h/0"), "redis://bob@h/0");
        assert_eq!(redact_url("redis+unix:///tmp/r.sock?db=1&pass=s3cret"), "redis+unix:///tmp/r.sock?db=1&pass=***");
        assert_eq!(redact_url("unix:///tmp/r.sock?password=s3cret&db=2"), "unix:///tmp/r.sock?password=***&db=2");
        let url = "redis://bob:p%40ss@h/0";
        assert_eq!(scrub("AUTH p@ss failed for p%40ss", url), "AUTH *** failed for ***");
        let c = RedisConfig::new("redis://:hunter2@localhost:6379/0", 1.0, 0.05, "rg", None, None, DecisionPolicy::Auto).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        let Err(e) = RedisConfig::new("redis://:hunter2@[bad", 1.0, 0.05, "rg", None, None, DecisionPolicy::Auto) else {
            panic!("a bad url must be refused")
        };
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn sealed_entries_verify_only_under_their_key_revision_and_secret() {
        let signed = l2(Some(b"0123456789abcdef-secret"));
        let entry = signed.seal("rg:d:k1", "rev1", b"true");
        assert_eq!(signed.verify("rg:d:k1", "rev1", &entry), Ok(&b"true"[..]));
        assert!(signed.verify("rg:d:k2", "rev1", &entry).is_err(), "replayed under another key");
        assert!(signed.verify("rg:d:k1", "rev2", &entry).is_err(), "another revision");
        let mut forged = entry.clone();
        *forged.last_mut().unwrap() = b'x';
        assert_eq!(signed.verify("rg:d:k1", "rev1", &forged), Err("fails signature verification"));
        let other = l2(Some(b"another-secret-of-16+"));
        assert!(other.verify("rg:d:k1", "rev1", &entry).is_err());
        let unsigned = l2(None);
        let plain = unsigned.seal("rg:d:k1", "rev1", b"true");
        assert_eq!(unsigned.verify("rg:d:k1", "rev1", &plain), Ok(&b"true"[..]));
        assert_eq!(signed.verify("rg:d:k1", "rev1", &plain), Err("is not signed"));
        assert!(unsigned.verify("rg:d:k1", "rev1", &entry).is_err());
        assert!(unsigned.verify("rg:d:k1", "rev1", b"garbage").is_err());
        assert!(unsigned.verify("rg:d:k1", "rev1", b"").is_err());
    }

    #[test]
    fn unreachable_redis_is_a_bounded_miss_then_skipped() {
        let l2 = l2(None);
        let started = Instant::now();
        assert!(l2.get_blocking("rg:d:x", "r").is_none());
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(l2.counters.errors.load(Ordering::Relaxed), 1);
        // The breaker is open now: the next call does not even try.
        assert!(l2.get_blocking("rg:d:x", "r").is_none());
        assert_eq!(l2.counters.skipped.load(Ordering::Relaxed), 1);
        assert!(l2.take_warning().is_some());
        assert!(l2.take_warning().is_none());
    }
}
