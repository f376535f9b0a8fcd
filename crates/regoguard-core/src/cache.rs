//! The L1 caches: bounded, per-entry deadlines, tag invalidation, single flight.
//!
//! [`TtlCache`] is the generic core, built on `quick_cache` (S3-FIFO eviction, sharded): a
//! 32-byte [`Key`], a value and a deadline per entry. Expiry is checked on read, so no timer
//! wheel costs memory per entry; an expired entry is simply a miss and is replaced. Two caches
//! are built on it:
//!
//! - [`DecisionCache`], the authorizer's decision cache: values are shared `Arc<Outcome>`s, so an
//!   entry is 16 bytes of value (a pointer and a deadline) beside its key.
//! - the result cache behind `@cached_authorization` (`bindings/result_cache.rs`), whose values
//!   hold Python objects. The core never sees them as such: it only needs `Clone + Send + Sync`
//!   and [`Tagged`].
//!
//! # Concurrent calls on the same key
//! [`TtlCache::get_or_insert_with`] runs one initialiser per missing key at a time: concurrent
//! callers of the same key wait for it and share its value. When the initialiser fails, or its
//! value is not cacheable (a TTL of zero), nothing is shared: the next waiter runs its own
//! initialiser, one at a time. Errors are never cached.
//!
//! # Invalidation races
//! Every invalidation bumps an epoch. A value computed across an invalidation (the epoch
//! changed between the start of its computation and its insert) is returned to its caller but
//! not kept, since it may have read what the invalidation was about.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::{Cache, GuardResult};

use crate::clock::now_ns;
use crate::decision::Outcome;
use crate::error::{Error, Result};
use crate::key::Key;

/// Cache sizing and lifetimes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CacheConfig {
    /// Most decisions kept; the least useful are evicted past it.
    pub max_entries: u64,
    /// How long an allow is served from the cache.
    pub ttl: Duration,
    /// How long a deny is served from the cache (`ZERO`: denials are never cached).
    pub deny_ttl: Duration,
}

impl CacheConfig {
    /// Validates user-given values (seconds as floats, `deny_ttl_seconds=None` meaning "as
    /// `ttl_seconds`").
    ///
    /// # Errors
    /// `Error::Config` for `max_entries` of 0 or past 2^32, or negative/non-finite seconds.
    pub fn new(max_entries: u64, ttl_seconds: f64, deny_ttl_seconds: Option<f64>) -> Result<Self> {
        if max_entries == 0 || max_entries > u64::from(u32::MAX) {
            return Err(Error::config(format!(
                "max_entries must be between 1 and {}, got {max_entries} (use cache=None to disable caching)",
                u32::MAX
            )));
        }
        let ttl = seconds("ttl_seconds", ttl_seconds)?;
        let deny_ttl = match deny_ttl_seconds {
            None => ttl,
            Some(s) => seconds("deny_ttl_seconds", s)?,
        };
        Ok(Self {
            max_entries,
            ttl,
            deny_ttl,
        })
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            ttl: Duration::from_secs(60),
            deny_ttl: Duration::from_secs(60),
        }
    }
}

/// Parses a user-given duration in seconds.
///
/// # Errors
/// `Error::Config` for negative, NaN or infinite values.
pub fn seconds(name: &str, s: f64) -> Result<Duration> {
    if s.is_finite() && s >= 0.0 {
        Duration::try_from_secs_f64(s).map_err(|e| Error::config(format!("{name}: {e}")))
    } else {
        Err(Error::config(format!(
            "{name} must be a finite number >= 0, got {s}"
        )))
    }
}

/// The deadline `ttl` from now.
#[inline]
fn deadline(ttl: Duration) -> u64 {
    now_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
}

/// What [`TtlCache::invalidate_tags`] needs to know of a value: the tags it was stored under.
pub trait Tagged {
    /// The tags of this value; empty when it has none.
    fn tags(&self) -> &[Arc<str>];
}

impl Tagged for Arc<Outcome> {
    fn tags(&self) -> &[Arc<str>] {
        &self.tags
    }
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    expires_ns: u64,
}

/// What a lookup that may compute produced.
pub enum Lookup<V = Arc<Outcome>> {
    /// Served from the cache (possibly filled by a concurrent caller's computation).
    Hit(V),
    /// Computed by this caller.
    Evaluated(V),
}

/// The invalidation epoch seen when a computation started; see [`TtlCache::ticket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// A bounded cache of `V` by [`Key`] with a lifetime chosen per insert, tag invalidation and
/// single flight.
///
/// # Concurrency
/// Reads take a shard's read lock for a few nanoseconds and never block on a computation.
/// [`TtlCache::get_or_insert_with`] may block while another thread computes the same key (see
/// the module docs). Values are dropped inside shard locks: a `V` whose drop can run arbitrary
/// code (a Python object) must be inserted, removed and invalidated from a thread that cannot
/// re-enter the cache from that code (for Python: with the GIL released, so the decref is
/// deferred).
pub struct TtlCache<V> {
    inner: Cache<Key, Entry<V>>,
    /// Bumped by every invalidation; see the module docs.
    epoch: AtomicU64,
}

impl<V: Tagged + Clone + Send + Sync + 'static> TtlCache<V> {
    /// An empty cache holding about `max_entries` values (allocated as they come).
    pub fn new(max_entries: u64) -> Self {
        let capacity = usize::try_from(max_entries).unwrap_or(usize::MAX);
        Self {
            inner: Cache::new(capacity),
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached value for `key`, if present and not expired. Never blocks on a computation.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<V> {
        self.get_at(key, now_ns())
    }

    /// [`TtlCache::get`] with the current time of [`crate::clock::now_ns`] given, so a caller
    /// that times the lookup reads the clock once for both.
    #[inline]
    pub fn get_at(&self, key: &Key, now_ns: u64) -> Option<V> {
        let entry = self.inner.get(key)?;
        (entry.expires_ns > now_ns).then_some(entry.value)
    }

    /// The cached value for `key`, or the one `compute` returns, which runs at most once at a
    /// time per key: concurrent callers wait for it and share its value (single flight).
    ///
    /// `compute` returns the value and how long to keep it. Errors are never cached; neither
    /// are values whose lifetime is zero, nor values computed across an invalidation.
    ///
    /// # Errors
    /// Whatever `compute` returns.
    ///
    /// # Concurrency
    /// May block while another thread computes the same key: call it without the GIL, and never
    /// from inside `compute` for the same key (that waits for itself).
    pub fn get_or_insert_with<E>(
        &self,
        key: &Key,
        compute: impl FnOnce() -> Result<(V, Duration), E>,
    ) -> Result<Lookup<V>, E> {
        // At most two rounds: the second only when the first found an expired entry.
        for _ in 0..2 {
            match self.inner.get_value_or_guard(key, None) {
                GuardResult::Value(entry) => {
                    if entry.expires_ns > now_ns() {
                        return Ok(Lookup::Hit(entry.value));
                    }
                    // Expired: remove it (unless someone replaced it meanwhile) and try again.
                    let stale = entry.expires_ns;
                    self.inner.remove_if(key, |e| e.expires_ns == stale);
                }
                GuardResult::Guard(guard) => {
                    // Dropping the guard without inserting (error, or not cacheable) lets the
                    // next waiter compute in turn.
                    let ticket = self.ticket();
                    let (value, ttl) = compute()?;
                    if !ttl.is_zero() && self.is_current(ticket) {
                        let expires_ns = deadline(ttl);
                        if guard
                            .insert(Entry {
                                value: value.clone(),
                                expires_ns,
                            })
                            .is_ok()
                        {
                            self.undo_if_invalidated(key, ticket, expires_ns);
                        }
                    }
                    return Ok(Lookup::Evaluated(value));
                }
                GuardResult::Timeout => {}
            }
        }
        compute().map(|(value, _)| Lookup::Evaluated(value))
    }

    /// The current invalidation epoch: take it before computing a value that
    /// [`TtlCache::insert`] will store, so an invalidation in between can veto the insert.
    #[inline]
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    #[inline]
    fn is_current(&self, ticket: Ticket) -> bool {
        self.epoch.load(Ordering::Acquire) == ticket.0
    }

    /// After an insert: if an invalidation started since `ticket`, it may have scanned the
    /// cache before the insert landed, so remove the entry again (only ours: same deadline).
    fn undo_if_invalidated(&self, key: &Key, ticket: Ticket, expires_ns: u64) {
        if !self.is_current(ticket) {
            self.inner.remove_if(key, |e| e.expires_ns == expires_ns);
        }
    }

    /// Stores `value` for `ttl` unless `ttl` is zero or an invalidation happened since
    /// `ticket` was taken. Returns whether it was stored. Replaces any current value.
    ///
    /// This is the insert half of a computation whose single flight is managed elsewhere (the
    /// async path of `@cached_authorization`, which cannot wait on a blocking guard).
    pub fn insert(&self, key: Key, value: V, ttl: Duration, ticket: Ticket) -> bool {
        if ttl.is_zero() || !self.is_current(ticket) {
            return false;
        }
        let expires_ns = deadline(ttl);
        self.inner.insert(key, Entry { value, expires_ns });
        self.undo_if_invalidated(&key, ticket, expires_ns);
        self.is_current(ticket)
    }

    /// Drops the entry of `key`; returns whether there was one (expired or not). Counts as an
    /// invalidation: computations in flight (of any key) will not be stored.
    pub fn remove(&self, key: &Key) -> bool {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.remove(key).is_some()
    }

    /// Drops every entry tagged with any of `tags`.
    pub fn invalidate_tags(&self, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.retain(|_, e| {
            !e.value
                .tags()
                .iter()
                .any(|t| tags.iter().any(|x| **t == **x))
        });
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.clear();
    }

    /// Entries held (expired ones included until they are read or evicted).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// The in-process decision cache: a [`TtlCache`] of shared outcomes whose lifetime follows
/// [`CacheConfig`] and the policy's `cache_ttl_seconds`.
///
/// # Concurrency
/// Reads take a shard's read lock for a few nanoseconds; concurrent misses of one key wait for
/// the first caller's evaluation instead of repeating it.
pub struct DecisionCache {
    inner: TtlCache<Arc<Outcome>>,
    config: CacheConfig,
}

impl DecisionCache {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            inner: TtlCache::new(config.max_entries),
            config,
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The cached outcome for `key`, if present and not expired. Never blocks.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<Arc<Outcome>> {
        self.inner.get(key)
    }

    /// [`DecisionCache::get`] at a time the caller already read.
    #[inline]
    pub fn get_at(&self, key: &Key, now_ns: u64) -> Option<Arc<Outcome>> {
        self.inner.get_at(key, now_ns)
    }

    /// The cached outcome for `key`, or the result of `evaluate`, which runs at most once at a
    /// time per key: concurrent callers wait for it and share its result (single flight).
    ///
    /// Errors are never cached; neither are outcomes whose lifetime comes out as zero.
    ///
    /// # Errors
    /// Whatever `evaluate` returns.
    ///
    /// # Concurrency
    /// May block while another thread evaluates the same key: call it without the GIL.
    pub fn get_or_evaluate(
        &self,
        key: &Key,
        evaluate: impl FnOnce() -> Result<Arc<Outcome>>,
    ) -> Result<Lookup> {
        self.get_or_evaluate_capped(key, || evaluate().map(|o| (o, None)))
    }

    /// [`DecisionCache::get_or_evaluate`] where the evaluation also bounds how long its own
    /// outcome holds (caching rule 8: a decision that read the clock, a token's `exp`): the
    /// entry lives no longer than the cap, and a cap of zero keeps it out of the cache.
    ///
    /// # Errors
    /// Whatever `evaluate` returns.
    pub fn get_or_evaluate_capped(
        &self,
        key: &Key,
        evaluate: impl FnOnce() -> Result<(Arc<Outcome>, Option<Duration>)>,
    ) -> Result<Lookup> {
        self.inner.get_or_insert_with(key, || {
            let (outcome, cap) = evaluate()?;
            let ttl = self.ttl_for(&outcome);
            Ok((outcome, cap.map_or(ttl, |c| c.min(ttl))))
        })
    }

    /// How long `outcome` may be served: the allow or deny TTL, shortened (never lengthened) by
    /// the policy's `cache_ttl_seconds`.
    pub fn ttl_for(&self, outcome: &Outcome) -> Duration {
        let base = if outcome.allow {
            self.config.ttl
        } else {
            self.config.deny_ttl
        };
        outcome.cache_ttl.map_or(base, |t| t.min(base))
    }

    /// Drops every entry tagged with any of `tags`.
    pub fn invalidate_tags(&self, tags: &[String]) {
        self.inner.invalidate_tags(tags);
    }

    /// The invalidation epoch now; pass it to [`DecisionCache::promote`].
    pub fn ticket(&self) -> Ticket {
        self.inner.ticket()
    }

    /// Stores an outcome found elsewhere (the L2) for at most `remaining`, and never longer
    /// than [`DecisionCache::ttl_for`]; not when an invalidation happened since `ticket`.
    /// Returns whether it was stored.
    pub fn promote(
        &self,
        key: Key,
        outcome: Arc<Outcome>,
        remaining: Duration,
        ticket: Ticket,
    ) -> bool {
        let ttl = self.ttl_for(&outcome).min(remaining);
        self.inner.insert(key, outcome, ttl, ticket)
    }
    /// Drops every entry.
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Entries held (expired ones included until they are read or evicted).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::Value;
    use std::sync::atomic::AtomicUsize;

    fn outcome(allow: bool) -> Arc<Outcome> {
        Arc::new(Outcome::from_value("e", Value::Bool(allow)).unwrap())
    }

    fn with(f: impl FnOnce(&mut Outcome)) -> Arc<Outcome> {
        let mut o = Outcome::from_value("e", Value::Bool(true)).unwrap();
        f(&mut o);
        Arc::new(o)
    }

    fn key(n: u8) -> Key {
        Key([n; 32])
    }

    #[test]
    fn hit_after_evaluate() {
        let c = DecisionCache::new(CacheConfig::default());
        assert!(c.get(&key(1)).is_none());
        assert!(matches!(
            c.get_or_evaluate(&key(1), || Ok(outcome(true))).unwrap(),
            Lookup::Evaluated(_)
        ));
        assert!(c.get(&key(1)).unwrap().allow);
        assert!(matches!(
            c.get_or_evaluate(&key(1), || unreachable!()).unwrap(),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn errors_are_not_cached() {
        let c = DecisionCache::new(CacheConfig::default());
        assert!(c
            .get_or_evaluate(&key(1), || Err(Error::evaluation("e", "boom")))
            .is_err());
        assert!(c.get(&key(1)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn ttls_expire_and_deny_ttl_is_separate() {
        let cfg = CacheConfig::new(10, 0.05, Some(0.0)).unwrap();
        let c = DecisionCache::new(cfg);
        c.get_or_evaluate(&key(1), || Ok(outcome(true))).unwrap();
        c.get_or_evaluate(&key(2), || Ok(outcome(false))).unwrap();
        assert!(c.get(&key(1)).is_some());
        assert!(c.get(&key(2)).is_none(), "deny_ttl 0 never caches denials");
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.get(&key(1)).is_none(), "expired");
        assert!(matches!(
            c.get_or_evaluate(&key(1), || Ok(outcome(true))).unwrap(),
            Lookup::Evaluated(_)
        ));
    }

    #[test]
    fn policy_ttl_zero_forbids_caching_and_only_shortens() {
        let c = DecisionCache::new(CacheConfig::default());
        let o = with(|o| o.cache_ttl = Some(Duration::ZERO));
        c.get_or_evaluate(&key(1), || Ok(o)).unwrap();
        assert!(c.get(&key(1)).is_none());
        let long = with(|o| o.cache_ttl = Some(Duration::from_secs(3600)));
        assert_eq!(c.ttl_for(&long), Duration::from_secs(60));
    }

    #[test]
    fn tags_invalidate_only_their_entries() {
        let c = DecisionCache::new(CacheConfig::default());
        let tagged = with(|o| o.tags = vec![Arc::from("project:1")].into_boxed_slice());
        c.get_or_evaluate(&key(1), || Ok(tagged)).unwrap();
        c.get_or_evaluate(&key(2), || Ok(outcome(true))).unwrap();
        c.invalidate_tags(&["project:1".to_owned()]);
        assert!(c.get(&key(1)).is_none());
        assert!(c.get(&key(2)).is_some());
    }

    #[test]
    fn concurrent_misses_evaluate_once() {
        let c = Arc::new(DecisionCache::new(CacheConfig::default()));
        let calls = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (c, calls, barrier) = (c.clone(), calls.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    c.get_or_evaluate(&key(7), || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        Ok(outcome(true))
                    })
                    .unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn bounded() {
        let c = DecisionCache::new(CacheConfig::new(100, 60.0, None).unwrap());
        for i in 0..1000u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            c.get_or_evaluate(&Key(k), || Ok(outcome(true))).unwrap();
        }
        assert!(c.len() <= 110, "{}", c.len());
    }

    #[test]
    fn config_validation() {
        assert!(CacheConfig::new(0, 1.0, None).is_err());
        assert!(CacheConfig::new(1, -1.0, None).is_err());
        assert!(CacheConfig::new(1, f64::NAN, None).is_err());
        assert!(CacheConfig::new(1, 1.0, Some(f64::INFINITY)).is_err());
        assert_eq!(
            CacheConfig::new(1, 2.0, None).unwrap().deny_ttl,
            Duration::from_secs(2)
        );
    }

    /// A value of the generic cache with its own tags, as the Python result cache stores.
    #[derive(Clone, Debug, PartialEq)]
    struct Val {
        n: u32,
        tags: Arc<[Arc<str>]>,
    }

    impl Tagged for Val {
        fn tags(&self) -> &[Arc<str>] {
            &self.tags
        }
    }

    fn val(n: u32, tags: &[&str]) -> Val {
        Val {
            n,
            tags: tags.iter().map(|t| Arc::from(*t)).collect(),
        }
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn generic_ttl_is_chosen_per_insert() {
        let c: TtlCache<Val> = TtlCache::new(10);
        let r: Result<_, ()> = c.get_or_insert_with(&key(1), || Ok((val(1, &[]), LONG)));
        assert!(matches!(r, Ok(Lookup::Evaluated(Val { n: 1, .. }))));
        let r: Result<_, ()> =
            c.get_or_insert_with(&key(2), || Ok((val(2, &[]), Duration::from_millis(30))));
        assert!(r.is_ok());
        assert!(c.insert(key(3), val(3, &[]), Duration::from_millis(30), c.ticket()));
        assert_eq!(c.get(&key(2)).map(|v| v.n), Some(2));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&key(1)).map(|v| v.n), Some(1));
        assert!(c.get(&key(2)).is_none(), "expired");
        assert!(c.get(&key(3)).is_none(), "expired");
        // An expired entry is recomputed, not served.
        let r: Result<_, ()> = c.get_or_insert_with(&key(2), || Ok((val(20, &[]), LONG)));
        assert!(matches!(r, Ok(Lookup::Evaluated(Val { n: 20, .. }))));
        let r: Result<_, ()> = c.get_or_insert_with(&key(2), || unreachable!());
        assert!(matches!(r, Ok(Lookup::Hit(Val { n: 20, .. }))));
    }

    #[test]
    fn generic_zero_ttl_and_errors_are_not_stored() {
        let c: TtlCache<Val> = TtlCache::new(10);
        let r: Result<_, &str> =
            c.get_or_insert_with(&key(1), || Ok((val(1, &[]), Duration::ZERO)));
        assert!(
            matches!(r, Ok(Lookup::Evaluated(_))),
            "returned to its caller"
        );
        assert!(c.get(&key(1)).is_none());
        assert!(!c.insert(key(1), val(1, &[]), Duration::ZERO, c.ticket()));
        let r: Result<Lookup<Val>, &str> = c.get_or_insert_with(&key(2), || Err("boom"));
        assert!(matches!(r, Err("boom")));
        assert!(c.is_empty());
    }

    #[test]
    fn generic_tags_remove_and_clear() {
        let c: TtlCache<Val> = TtlCache::new(10);
        let t = c.ticket();
        assert!(c.insert(key(1), val(1, &["project:1", "user:7"]), LONG, t));
        assert!(c.insert(key(2), val(2, &["project:2"]), LONG, t));
        assert!(c.insert(key(3), val(3, &[]), LONG, t));
        c.invalidate_tags(&[]);
        assert_eq!(c.len(), 3, "no tags: nothing dropped");
        c.invalidate_tags(&["user:7".to_owned(), "nope".to_owned()]);
        assert!(c.get(&key(1)).is_none());
        assert!(c.get(&key(2)).is_some());
        assert!(c.remove(&key(2)));
        assert!(!c.remove(&key(2)));
        assert!(c.get(&key(3)).is_some());
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn invalidation_vetoes_an_insert_computed_across_it() {
        let c: TtlCache<Val> = TtlCache::new(10);
        // The async path: ticket, compute, insert.
        let t = c.ticket();
        c.invalidate_tags(&["x".to_owned()]);
        assert!(!c.insert(key(1), val(1, &[]), LONG, t));
        assert!(c.get(&key(1)).is_none());
        assert!(c.insert(key(1), val(1, &[]), LONG, c.ticket()));
        // The single-flight path: an invalidation (of any key) while computing.
        let r: Result<_, ()> = c.get_or_insert_with(&key(2), || {
            c.remove(&key(9));
            Ok((val(2, &[]), LONG))
        });
        assert!(
            matches!(r, Ok(Lookup::Evaluated(Val { n: 2, .. }))),
            "still returned"
        );
        assert!(c.get(&key(2)).is_none(), "but not kept");
    }

    #[test]
    fn a_failed_computation_lets_the_next_waiter_compute() {
        let c: Arc<TtlCache<Val>> = Arc::new(TtlCache::new(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(std::sync::Barrier::new(2));
        let first = {
            let (c, calls, started) = (c.clone(), calls.clone(), started.clone());
            std::thread::spawn(move || {
                c.get_or_insert_with(&key(1), || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    started.wait();
                    std::thread::sleep(Duration::from_millis(50));
                    Err("boom")
                })
                .map(|_| ())
            })
        };
        started.wait();
        let second = c.get_or_insert_with(&key(1), || {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>((val(2, &[]), LONG))
        });
        assert_eq!(first.join().unwrap(), Err("boom"));
        assert!(
            matches!(second, Ok(Lookup::Evaluated(Val { n: 2, .. }))),
            "retried, not handed the error"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
