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
use std::sync::Arc;
use std::time::Duration;

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
