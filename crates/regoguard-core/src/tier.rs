//! The shared tier of a cache: one key space in the L2, the epochs that revoke it, and its
//! place on the pub/sub bus (ARCHITECTURE.md, "Caching rules", rules 6 and 7).
//!
//! Both caches that share through Redis use it: the decision cache (entries of one policy
//! revision per key space, `d:<revision>`, all revoked by the epochs of `d`) and each
//! `@cached_authorization` result cache (one fixed key space per decorated function). What is
//! stored is the caller's: the decision pipeline writes canonical JSON of an outcome's result
//! ([`encode_outcome`], [`decode_outcome`]); the result cache writes a Python value's.
//!
//! Invalidations keep one order everywhere: raise the epoch first (from then on the entries
//! are refused by every instance), then tell the other instances, then delete, which only
//! frees memory.

use std::borrow::Cow;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cache::{Lookup, Tagged, TtlCache};
use crate::canonical;
use crate::decision::Outcome;
use crate::key::Key;
use crate::l2::pubsub::{Listener, Message, Publisher};
use crate::l2::{Found, Observed, L2};

/// Where a tier's entries live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spaces {
    /// One key space per revision, `<epochs>:<revision>` (decisions: a new policy revision
    /// never reads the old one's entries).
    PerRevision,
    /// One key space, the epoch space itself; the revision names the payload layout.
    Fixed,
}

/// One cache's share of an L2 (see the module docs).
pub struct SharedTier {
    l2: Arc<L2>,
    /// Sends this cache's invalidations (and the pipeline's reloads) to the other instances.
    publisher: Publisher,
    /// Applies theirs; the bus holds it weakly.
    _listener: Arc<dyn Listener>,
    /// The epoch space: every invalidation of this cache raises epochs here.
    epochs: String,
    spaces: Spaces,
}

impl SharedTier {
    /// Joins `l2` as `listener`, on the bus scope `scope`.
    pub fn new(
        l2: Arc<L2>,
        scope: &str,
        epochs: String,
        spaces: Spaces,
        listener: Arc<dyn Listener>,
    ) -> Self {
        let publisher = l2.listen(scope, Arc::downgrade(&listener));
        Self {
            l2,
            publisher,
            _listener: listener,
            epochs,
            spaces,
        }
    }

    pub fn l2(&self) -> &Arc<L2> {
        &self.l2
    }

    /// The key space of `revision`'s entries.
    fn space(&self, revision: &str) -> Cow<'_, str> {
        match self.spaces {
            Spaces::PerRevision => Cow::Owned(format!("{}:{revision}", self.epochs)),
            Spaces::Fixed => Cow::Borrowed(&self.epochs),
        }
    }

    /// The Redis key of `key` in `revision`'s space.
    pub fn redis_key(&self, revision: &str, key: &Key) -> String {
        self.l2.key(&self.space(revision), &key.0)
    }

    /// Starts reading `key`; `done` gets what was found (verified) and the epochs seen, on the
    /// L2 runtime. `false`, without calling `done`: no call can be made now (a miss at once).
    pub fn spawn_get(
        &self,
        revision: &str,
        key: &Key,
        done: impl FnOnce(Option<Found>, Option<Observed>) + Send + 'static,
    ) -> bool {
        let redis_key = self.redis_key(revision, key);
        self.l2
            .spawn_get(redis_key, &self.epochs, revision.to_owned(), done)
    }

    /// Reads `key`, waiting at most about the timeout. Call it without the GIL.
    pub fn get_blocking(&self, revision: &str, key: &Key) -> (Option<Found>, Option<Observed>) {
        self.l2
            .get_blocking(&self.redis_key(revision, key), &self.epochs, revision)
    }

    /// Shares `payload` under `key` for `ttl` (fire and forget; nothing for a zero `ttl`), with
    /// `tags`; with `observed`, not if an invalidation happened since they were read.
    pub fn spawn_set(
        &self,
        revision: &str,
        key: &Key,
        payload: &[u8],
        ttl: Duration,
        tags: &[Arc<str>],
        observed: Option<Observed>,
    ) {
        if ttl.is_zero() {
            return;
        }
        let space = self.space(revision);
        self.l2.spawn_set(
            self.l2.key(&space, &key.0),
            &self.epochs,
            revision,
            payload,
            ttl,
            tags.iter().map(ToString::to_string).collect(),
            self.l2.tag_space(&space),
            observed,
        );
    }

    /// Sends `message` to the other instances (bounded by the timeout; call it without the GIL).
    pub fn publish(&self, message: &Message) -> bool {
        self.publisher.publish(message)
    }

    /// Revokes `key` everywhere (epoch, message, delete). Blocking: call it without the GIL.
    pub fn invalidate_key(&self, revision: &str, key: &Key) {
        let redis_key = self.redis_key(revision, key);
        self.l2
            .bump_blocking(&self.epochs, false, &[], std::slice::from_ref(&redis_key));
        self.publish(&Message::InvalidateKey(key.0));
        self.l2.delete_blocking(
            vec![redis_key],
            &self.l2.tag_space(&self.space(revision)),
            &[],
            None,
        );
    }

    /// Revokes every entry tagged with any of `tags` (epoch, message, delete of `revision`'s
    /// entries). Blocking: call it without the GIL.
    pub fn invalidate_tags(&self, revision: &str, tags: &[String]) {
        self.l2.bump_blocking(&self.epochs, false, tags, &[]);
        self.publish(&Message::InvalidateTags(tags.to_vec()));
        self.l2.delete_blocking(
            Vec::new(),
            &self.l2.tag_space(&self.space(revision)),
            tags,
            None,
        );
    }

    /// Revokes every entry (epoch, message, delete of `revision`'s entries). Blocking: call it
    /// without the GIL.
    pub fn invalidate_all(&self, revision: &str) {
        self.l2.bump_blocking(&self.epochs, true, &[], &[]);
        self.publish(&Message::InvalidateAll);
        let space = self.space(revision);
        self.l2.delete_blocking(
            Vec::new(),
            &self.l2.tag_space(&space),
            &[],
            Some(self.l2.pattern(&space)),
        );
    }
}

/// How [`read_through`] answered.
pub enum ReadThrough<V> {
    /// From L1 (or computed meanwhile by a concurrent caller of the same key).
    Hit(V),
    /// From the L2, promoted to L1.
    Shared(V),
    /// Computed here. `share`: it is kept in L1 (so not computed across an invalidation) and
    /// there is an L2 to write it back to, under the epochs `observed` before computing.
    Computed {
        value: V,
        ttl: Duration,
        share: bool,
        observed: Option<Observed>,
    },
}

/// The blocking miss path of a cache with an optional shared tier: single flight on `key` in
/// `cache`; the first caller reads the L2 (`decode` turns a verified entry into a value and its
/// lifetime) and computes only when it had nothing. The caller writes a `Computed` value back
/// when `share` says so (the payload is its own).
///
/// # Errors
/// Whatever `compute` returns (nothing is cached then).
///
/// # Concurrency
/// Blocks on the L2 and on a concurrent computation of `key`: call it without the GIL.
pub fn read_through<V: Tagged + Clone + Send + Sync + 'static, E>(
    cache: &TtlCache<V>,
    tier: Option<&SharedTier>,
    revision: &str,
    key: &Key,
    decode: impl FnOnce(&Found) -> Option<(V, Duration)>,
    compute: impl FnOnce() -> Result<(V, Duration), E>,
) -> Result<ReadThrough<V>, E> {
    let mut computed_ttl = None;
    let mut observed = None;
    let looked = cache.get_or_insert_with(key, || {
        if let Some(tier) = tier {
            let (found, seen) = tier.get_blocking(revision, key);
            observed = seen;
            if let Some(v) = found.as_ref().and_then(decode) {
                return Ok(v);
            }
        }
        let (value, ttl) = compute()?;
        computed_ttl = Some(ttl);
        Ok((value, ttl))
    })?;
    Ok(match (looked, computed_ttl) {
        (Lookup::Hit(v), _) => ReadThrough::Hit(v),
        (Lookup::Evaluated(v), None) => ReadThrough::Shared(v),
        (Lookup::Evaluated(value), Some(ttl)) => ReadThrough::Computed {
            share: tier.is_some() && cache.get(key).is_some(),
            value,
            ttl,
            observed,
        },
    })
}

/// Applies other instances' invalidations of one cache's entries to its L1 (held weakly).
pub struct CacheListener<V> {
    cache: Weak<TtlCache<V>>,
}

impl<V> CacheListener<V> {
    pub fn new(cache: &Arc<TtlCache<V>>) -> Self {
        Self {
            cache: Arc::downgrade(cache),
        }
    }
}

impl<V: Tagged + Clone + Send + Sync + 'static> Listener for CacheListener<V> {
    fn on_message(&self, message: Message) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        match message {
            Message::InvalidateKey(k) => {
                cache.remove(&Key(k));
            }
            Message::InvalidateTags(tags) => cache.invalidate_tags(&tags),
            Message::InvalidateAll => cache.clear(),
            Message::Reload | Message::SetData { .. } => {}
        }
    }

    fn on_gap(&self) {
        if let Some(cache) = self.cache.upgrade() {
            cache.clear();
        }
    }
}

/// The L2 payload of a decision: the canonical JSON of its result; `None` for a result with
/// no JSON form (counted in `unshareable`: it stays L1-only).
pub fn encode_outcome(l2: &L2, outcome: &Outcome) -> Option<Vec<u8>> {
    let payload = canonical::to_bytes(&outcome.result, "result").ok();
    if payload.is_none() {
        l2.counters
            .unshareable
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    payload
}

/// A decision read back from the L2 (already verified), interpreted as `entrypoint`'s value;
/// `None` if it does not decode.
pub fn decode_outcome(entrypoint: &str, payload: &[u8]) -> Option<Outcome> {
    let value = canonical::decode(payload).ok()?;
    Outcome::from_value(entrypoint, value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(allow: bool) -> Arc<Outcome> {
        Arc::new(Outcome::from_value("e", regorus::Value::Bool(allow)).unwrap())
    }

    #[test]
    fn read_through_computes_once_and_never_caches_an_error() {
        let cache: TtlCache<Arc<Outcome>> = TtlCache::new(16);
        let key = Key([7; 32]);
        let ttl = Duration::from_secs(60);
        let no_l2 =
            |_: &Found| -> Option<(Arc<Outcome>, Duration)> { panic!("there is no L2 to read") };
        let failed = read_through(&cache, None, "r", &key, no_l2, || {
            Err::<(Arc<Outcome>, Duration), _>("boom")
        });
        assert!(matches!(failed, Err("boom")));
        let first = read_through(&cache, None, "r", &key, no_l2, || {
            Ok::<_, ()>((outcome(true), ttl))
        });
        match first {
            Ok(ReadThrough::Computed { share, value, .. }) => {
                assert!(value.allow);
                assert!(!share, "nothing to share without an L2");
            }
            _ => panic!("the first call computes"),
        }
        let second = read_through(&cache, None, "r", &key, no_l2, || -> Result<_, ()> {
            panic!("a cached value is not computed again")
        });
        assert!(matches!(second, Ok(ReadThrough::Hit(v)) if v.allow));
    }
}
