//! The L1 decision cache: bounded, per-entry deadlines, tag invalidation, single flight.
//!
//! Built on `quick_cache` (S3-FIFO eviction, sharded). Each entry is a 32-byte [`Key`] and a
//! 16-byte value: a shared `Arc<Outcome>` and a deadline. Expiry is checked on read, so no timer
//! wheel costs memory per entry; an expired entry is simply a miss and is replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use quick_cache::sync::{Cache, GuardResult};

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
        Ok(Self { max_entries, ttl, deny_ttl })
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_entries: 100_000, ttl: Duration::from_secs(60), deny_ttl: Duration::from_secs(60) }
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
        Err(Error::config(format!("{name} must be a finite number >= 0, got {s}")))
    }
}

/// Nanoseconds since the first use of the cache clock: monotonic, fits a u64 for 584 years.
#[inline]
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Clone)]
struct Entry {
    outcome: Arc<Outcome>,
    expires_ns: u64,
}

/// What a lookup that may evaluate produced.
pub enum Lookup {
    /// Served from the cache (possibly filled by a concurrent caller's evaluation).
    Hit(Arc<Outcome>),
    /// Evaluated by this caller.
    Evaluated(Arc<Outcome>),
}

/// The in-process decision cache.
///
/// # Concurrency
/// Reads take a shard's read lock for a few nanoseconds; concurrent misses of one key wait for
/// the first caller's evaluation instead of repeating it.
pub struct DecisionCache {
    inner: Cache<Key, Entry>,
    config: CacheConfig,
    /// Bumped by every invalidation: an evaluation that started before one does not insert,
    /// since it may have read what the invalidation was about.
    epoch: AtomicU64,
}

impl DecisionCache {
    pub fn new(config: CacheConfig) -> Self {
        let capacity = usize::try_from(config.max_entries).unwrap_or(usize::MAX);
        Self { inner: Cache::new(capacity), config, epoch: AtomicU64::new(0) }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The cached outcome for `key`, if present and not expired. Never blocks.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<Arc<Outcome>> {
        let entry = self.inner.get(key)?;
        (entry.expires_ns > now_ns()).then_some(entry.outcome)
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
    pub fn get_or_evaluate(&self, key: &Key, evaluate: impl FnOnce() -> Result<Arc<Outcome>>) -> Result<Lookup> {
        // At most two rounds: the second only when the first found an expired entry.
        for _ in 0..2 {
            match self.inner.get_value_or_guard(key, None) {
                GuardResult::Value(entry) => {
                    if entry.expires_ns > now_ns() {
                        return Ok(Lookup::Hit(entry.outcome));
                    }
                    // Expired: remove it (unless someone replaced it meanwhile) and try again.
                    let stale = entry.expires_ns;
                    self.inner.remove_if(key, |e| e.expires_ns == stale);
                }
                GuardResult::Guard(guard) => {
                    // Dropping the guard without inserting (error, or not cacheable) lets the
                    // next waiter evaluate in turn.
                    let epoch = self.epoch.load(Ordering::Acquire);
                    let outcome = evaluate()?;
                    let ttl = self.ttl_for(&outcome);
                    if !ttl.is_zero() && self.epoch.load(Ordering::Acquire) == epoch {
                        let expires_ns = now_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
                        let _ = guard.insert(Entry { outcome: outcome.clone(), expires_ns });
                    }
                    return Ok(Lookup::Evaluated(outcome));
                }
                GuardResult::Timeout => {}
            }
        }
        evaluate().map(Lookup::Evaluated)
    }

    /// How long `outcome` may be served: the allow or deny TTL, shortened (never lengthened) by
    /// the policy's `cache_ttl_seconds`.
    pub fn ttl_for(&self, outcome: &Outcome) -> Duration {
        let base = if outcome.allow { self.config.ttl } else { self.config.deny_ttl };
        outcome.cache_ttl.map_or(base, |t| t.min(base))
    }

    /// Drops every entry tagged with any of `tags`.
    pub fn invalidate_tags(&self, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.retain(|_, e| !e.outcome.tags.iter().any(|t| tags.iter().any(|x| **t == **x)));
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
        assert!(matches!(c.get_or_evaluate(&key(1), || Ok(outcome(true))).unwrap(), Lookup::Evaluated(_)));
        assert!(c.get(&key(1)).unwrap().allow);
        assert!(matches!(c.get_or_evaluate(&key(1), || unreachable!()).unwrap(), Lookup::Hit(_)));
    }

    #[test]
    fn errors_are_not_cached() {
        let c = DecisionCache::new(CacheConfig::default());
        assert!(c.get_or_evaluate(&key(1), || Err(Error::evaluation("e", "boom"))).is_err());
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
        assert!(matches!(c.get_or_evaluate(&key(1), || Ok(outcome(true))).unwrap(), Lookup::Evaluated(_)));
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
        assert_eq!(CacheConfig::new(1, 2.0, None).unwrap().deny_ttl, Duration::from_secs(2));
    }
}
