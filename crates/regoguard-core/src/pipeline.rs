//! The decision pipeline: the one way from canonical input bytes to a decision, for every
//! caller (ARCHITECTURE.md, "The request's way").
//!
//! A [`Pipeline`] owns the [`Authorizer`] (revision state, engine, L1) and, with a Redis L2,
//! the decisions' [`SharedTier`] and its policy (`RedisConfig(decisions=...)`). A check is
//!
//! 1. [`Pipeline::resolve`]: the entrypoint in the current revision (compiled on first use);
//! 2. [`Pipeline::begin`]: the key and the L1 lookup, [`Step::Done`] on a hit (never blocks,
//!    never allocates beyond the decision), else [`Step::Miss`];
//! 3. on a miss either [`Pipeline::decide`] (the engine or a concurrent caller's evaluation,
//!    timed, shared through the L2 when that pays; blocking: without the GIL), or, for an
//!    awaiting caller, [`Pending::new`] + [`Pipeline::ask_l2`], whose answer
//!    [`Pipeline::finish`] turns into a decision (promoted to L1), or `None`: then
//!    [`Pipeline::decide`] the pending check.
//!
//! The bindings only write the input, hold or release the GIL and await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use regorus::Value;

use crate::authorizer::{Authorizer, AuthorizerConfig, Check, Decided, InputForm, Step};
use crate::cache::{DecisionCache, Ticket};
use crate::canonical;
use crate::clock;
use crate::decision::Source;
use crate::engine::Compiled;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::l2::pubsub::{self, Listener, Message};
use crate::l2::{DecisionPolicy, Found, L2};
use crate::tier::{self, SharedTier, Spaces};

/// The epochs that revoke decisions in the L2: one space for every revision, so an
/// `invalidate` revokes what any revision shared.
const DECISION_EPOCHS: &str = "d";

/// The bus scope of authorizers.
const SCOPE: &str = "a";

/// The decisions' share of the L2.
struct SharedDecisions {
    tier: SharedTier,
    /// Smoothed duration of an L1 miss decided here (nanoseconds): against the L2's round trip,
    /// it decides whether the L2 is worth consulting and writing to (`decisions="auto"`).
    miss_ewma_ns: AtomicU64,
}

/// An [`Authorizer`] and, optionally, the L2 its decisions are shared through.
pub struct Pipeline {
    authorizer: Arc<Authorizer>,
    shared: Option<SharedDecisions>,
}

/// A check's entrypoint resolved in the current revision: the revision is held (without
/// touching its reference count in the common case) until the check is done.
pub struct Resolved {
    compiled: arc_swap::Guard<Arc<Compiled>>,
    index: usize,
}

impl Resolved {
    #[inline]
    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    #[inline]
    pub fn index(&self) -> usize {
        self.index
    }

    /// The check of `canonical` for this entrypoint, started at `started_ns`.
    #[inline]
    pub fn check<'a>(&'a self, canonical: &'a [u8], form: InputForm, started_ns: u64) -> Check<'a> {
        Check {
            compiled: &self.compiled,
            index: self.index,
            canonical,
            form,
            started_ns,
        }
    }
}

/// A check that missed L1, owned, to be finished later (after the L2 answered, or on a worker
/// thread).
pub struct Pending {
    compiled: Arc<Compiled>,
    index: usize,
    key: Key,
    bytes: Vec<u8>,
    started_ns: u64,
    form: InputForm,
}

impl Pending {
    /// Keeps `c` (copying its bytes) and its `key`.
    pub fn new(c: &Check<'_>, key: Key) -> Self {
        Self {
            compiled: c.compiled.clone(),
            index: c.index,
            key,
            bytes: c.canonical.to_vec(),
            started_ns: c.started_ns,
            form: c.form,
        }
    }

    pub fn check(&self) -> Check<'_> {
        Check {
            compiled: &self.compiled,
            index: self.index,
            canonical: &self.bytes,
            form: self.form,
            started_ns: self.started_ns,
        }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }
}

impl Pipeline {
    /// Builds the authorizer and joins `l2` (its decisions and its reloads, data changes and
    /// invalidations are shared there).
    ///
    /// # Errors
    /// As [`Authorizer::new`]; `Error::Config` for an L2 without a signing key.
    pub fn new(config: AuthorizerConfig, l2: Option<Arc<L2>>) -> Result<Self> {
        if l2
            .as_ref()
            .is_some_and(|l2| l2.config().signing_key.is_none())
        {
            // Redis never decides alone: a shared decision must carry our signature.
            return Err(Error::config(
                "Authorizer(redis=...) needs RedisConfig(signing_key=...): decisions read from Redis must be signed",
            ));
        }
        let authorizer = Arc::new(Authorizer::new(config)?);
        let shared = l2.map(|l2| {
            let listener: Arc<dyn Listener> = Arc::new(AuthorizerListener {
                authorizer: Arc::downgrade(&authorizer),
            });
            SharedDecisions {
                tier: SharedTier::new(
                    l2,
                    SCOPE,
                    DECISION_EPOCHS.to_owned(),
                    Spaces::PerRevision,
                    listener,
                ),
                miss_ewma_ns: AtomicU64::new(0),
            }
        });
        Ok(Self { authorizer, shared })
    }

    #[inline]
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// The L2 decisions are shared through, if any.
    pub fn l2(&self) -> Option<&Arc<L2>> {
        self.shared.as_ref().map(|s| s.tier.l2())
    }

    /// The L2's pending rate-limited warning, for the caller to log.
    pub fn take_warning(&self) -> Option<String> {
        self.l2().and_then(|l2| l2.take_warning())
    }

    /// Resolves `entrypoint` (the main one when `None`), compiling it on first use.
    ///
    /// # Errors
    /// As [`Authorizer::entrypoint`].
    #[inline]
    pub fn resolve(&self, entrypoint: Option<&str>) -> Result<Resolved> {
        let guard = self.authorizer.current_guard();
        let index = match entrypoint {
            None => 0,
            Some(name) => {
                let Some(i) = guard.entrypoint_index(name) else {
                    let (compiled, index) = self.authorizer.register_entrypoint(name)?;
                    // Just compiled and registered (its first use): held by its own count.
                    return Ok(Resolved {
                        compiled: arc_swap::Guard::from_inner(compiled),
                        index,
                    });
                };
                i
            }
        };
        Ok(Resolved {
            compiled: guard,
            index,
        })
    }

    /// The L1 step of a check: a hit is decided here.
    #[inline]
    pub fn begin(&self, c: &Check<'_>) -> Step {
        self.authorizer.begin(c)
    }

    /// Decides a check that missed L1 (the engine, or a concurrent evaluation of the same key)
    /// and, by the L2's policy, shares an evaluated outcome there.
    ///
    /// # Errors
    /// As [`Authorizer::decide_miss`].
    ///
    /// # Concurrency
    /// May block on another thread's evaluation of the same key: call it without the GIL.
    pub fn decide(&self, c: &Check<'_>, key: &Key) -> Result<Decided> {
        let a = &*self.authorizer;
        let Some(shared) = &self.shared else {
            return a.decide_miss(c, key);
        };
        let started = clock::now_ns();
        let decided = a.decide_miss(c, key)?;
        let took_ns = clock::now_ns().saturating_sub(started);
        let old = shared.miss_ewma_ns.load(Ordering::Relaxed);
        shared.miss_ewma_ns.store(
            if old == 0 {
                took_ns
            } else {
                old - old / 8 + took_ns / 8
            },
            Ordering::Relaxed,
        );
        let l2 = shared.tier.l2();
        let write = match l2.config().decisions {
            DecisionPolicy::Always => true,
            DecisionPolicy::Auto => Duration::from_nanos(took_ns) > l2.rtt(),
            DecisionPolicy::Never => false,
        };
        if write && decided.source == Source::Engine {
            self.write_back(shared, c.compiled, key, &decided);
        }
        Ok(decided)
    }

    /// A whole check in the calling thread: [`Pipeline::begin`], then [`Pipeline::decide`].
    ///
    /// # Errors
    /// As [`Pipeline::decide`].
    pub fn check(&self, c: &Check<'_>) -> Result<Decided> {
        match self.begin(c) {
            Step::Done(d) => Ok(d),
            Step::Miss(key) => self.decide(c, &key),
        }
    }

    /// A whole check of canonical bytes (Rust callers; the bindings split it around the GIL).
    ///
    /// # Errors
    /// As [`Pipeline::resolve`] and [`Pipeline::decide`].
    pub fn check_canonical(&self, entrypoint: Option<&str>, canonical: &[u8]) -> Result<Decided> {
        let started_ns = clock::now_ns();
        let resolved = self.resolve(entrypoint)?;
        self.check(&resolved.check(canonical, InputForm::Plain, started_ns))
    }

    /// Whether a miss should ask the L2 before evaluating (an awaiting caller's choice: the
    /// round trip does not block it).
    pub fn wants_l2(&self) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let l2 = shared.tier.l2();
        self.authorizer.cache().is_some()
            && match l2.config().decisions {
                DecisionPolicy::Always => true,
                DecisionPolicy::Auto => {
                    Duration::from_nanos(shared.miss_ewma_ns.load(Ordering::Relaxed)) > l2.rtt()
                }
                DecisionPolicy::Never => false,
            }
    }

    /// Starts reading `pending` from the L2; `done` gets [`Pipeline::finish`]'s answer on the L2
    /// runtime. `false`, without calling `done`: no call can be made now (decide it instead).
    pub fn ask_l2(
        self: &Arc<Self>,
        pending: &Arc<Pending>,
        done: impl FnOnce(Option<Decided>) + Send + 'static,
    ) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let ticket = self.authorizer.cache().map(DecisionCache::ticket);
        let (this, p) = (self.clone(), pending.clone());
        shared.tier.spawn_get(
            &pending.compiled.revision.display,
            &pending.key,
            move |found, _| done(this.finish(&p, found, ticket)),
        )
    }

    /// The decision of `pending` from the L2's answer (verified already), promoted to L1 and
    /// counted; `None` (the caller decides it) when the L2 had nothing usable.
    pub fn finish(
        &self,
        pending: &Pending,
        found: Option<Found>,
        ticket: Option<Ticket>,
    ) -> Option<Decided> {
        let a = &*self.authorizer;
        let Some(found) = found else {
            a.metrics.l2_misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let (cache, ticket) = (a.cache()?, ticket?);
        let c = pending.check();
        let name = &c.compiled.entrypoints[c.index].name;
        let outcome = Arc::new(tier::decode_outcome(name, &found.payload)?);
        cache.promote(pending.key, outcome.clone(), found.remaining, ticket);
        Some(a.served_from_l2(&c, outcome))
    }

    /// Shares an evaluated outcome through the L2 (fire and forget), for as long as L1 keeps it.
    fn write_back(&self, shared: &SharedDecisions, compiled: &Compiled, key: &Key, d: &Decided) {
        let Some(cache) = self.authorizer.cache() else {
            return;
        };
        let ttl = cache.ttl_for(&d.outcome);
        let ttl = d.ttl_cap.map_or(ttl, |c| c.min(ttl));
        if ttl.is_zero() {
            return;
        }
        let Some(payload) = tier::encode_outcome(shared.tier.l2(), &d.outcome) else {
            return;
        };
        shared.tier.spawn_set(
            &compiled.revision.display,
            key,
            &payload,
            ttl,
            &d.outcome.tags,
            None,
        );
    }

    /// Sends `message` to the other instances (bounded by the L2 timeout).
    fn publish(&self, message: &Message) {
        if let Some(shared) = &self.shared {
            shared.tier.publish(message);
        }
    }

    /// [`Authorizer::reload`], then tells the other instances to reload. Blocking.
    ///
    /// # Errors
    /// As [`Authorizer::reload`] (nothing is sent then).
    pub fn reload(&self) -> Result<Arc<str>> {
        let revision = self.authorizer.reload()?;
        self.publish(&Message::Reload);
        Ok(revision)
    }

    /// [`Authorizer::set_data`], then sends the change to the other instances. Blocking.
    ///
    /// # Errors
    /// As [`Authorizer::set_data`] (nothing is sent then).
    pub fn set_data(&self, path: &[String], value: Value) -> Result<Arc<str>> {
        let message = self
            .shared
            .as_ref()
            .and_then(|_| canonical::to_bytes(&value, "data").ok())
            .and_then(|b| String::from_utf8(b).ok())
            .map(|value| Message::SetData {
                path: path.to_vec(),
                value,
            });
        let revision = self.authorizer.set_data(path, value)?;
        if let Some(m) = message {
            self.publish(&m);
        }
        Ok(revision)
    }

    /// Drops the decisions tagged with any of `tags` here, in the L2 and, through pub/sub, in
    /// every instance on the channel. Blocking (with an L2).
    pub fn invalidate_tags(&self, tags: &[String]) {
        self.authorizer.invalidate_tags(tags);
        if let Some(shared) = &self.shared {
            let revision = self.authorizer.current_guard().revision.display.clone();
            shared.tier.invalidate_tags(&revision, tags);
        }
    }

    /// Drops every decision here, in the L2 and in every instance. Blocking (with an L2).
    pub fn invalidate_all(&self) {
        self.authorizer.invalidate_all();
        if let Some(shared) = &self.shared {
            let revision = self.authorizer.current_guard().revision.display.clone();
            shared.tier.invalidate_all(&revision);
        }
    }

    /// Brings the Redis client's error count into the authorizer's metrics (the client may be
    /// shared with decorated functions using the same `RedisConfig`).
    pub fn sync_l2_errors(&self) {
        if let Some(l2) = self.l2() {
            let errors = l2.counters.errors.load(Ordering::Relaxed);
            self.authorizer
                .metrics
                .l2_errors
                .fetch_max(errors, Ordering::Relaxed);
        }
    }
}

/// Applies other instances' reloads, data changes and invalidations to an authorizer (held
/// weakly: the bus never keeps one alive).
struct AuthorizerListener {
    authorizer: Weak<Authorizer>,
}

impl Listener for AuthorizerListener {
    fn on_message(&self, message: Message) {
        let Some(a) = self.authorizer.upgrade() else {
            return;
        };
        match message {
            Message::InvalidateTags(tags) => a.invalidate_tags(&tags),
            Message::InvalidateAll | Message::InvalidateKey(_) => a.invalidate_all(),
            Message::Reload => pubsub::blocking(move || {
                let _ = a.reload();
            }),
            Message::SetData { path, value } => pubsub::blocking(move || {
                if let Ok(v) = canonical::decode(value.as_bytes()) {
                    let _ = a.set_data(&path, v);
                }
            }),
        }
    }

    fn on_gap(&self) {
        if let Some(a) = self.authorizer.upgrade() {
            a.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::RedisConfig;

    const POLICY: &str =
        "package authz\ndefault allow := false\nallow if input.user == \"admin\"\n";

    /// A policy file of its own per test (removed at the end of the test).
    struct PolicyFile(std::path::PathBuf);

    impl PolicyFile {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "regoguard-pipeline-{}-{name}.rego",
                std::process::id()
            ));
            std::fs::write(&path, POLICY).unwrap();
            Self(path)
        }

        fn config(&self) -> AuthorizerConfig {
            AuthorizerConfig::new(vec![self.0.to_string_lossy().into_owned()])
        }
    }

    impl Drop for PolicyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// An L2 on a port nothing listens on: every call fails fast and is a miss.
    fn unreachable_l2(signing_key: Option<&[u8]>) -> Arc<L2> {
        let cfg = RedisConfig::new(
            "redis://127.0.0.1:1/",
            300.0,
            0.05,
            "rg-test",
            signing_key.map(<[u8]>::to_vec),
            None,
            DecisionPolicy::Always,
        )
        .unwrap();
        L2::new(cfg).unwrap()
    }

    #[test]
    fn an_unsigned_l2_is_refused() {
        let f = PolicyFile::new("unsigned");
        match Pipeline::new(f.config(), Some(unreachable_l2(None))) {
            Err(Error::Config(m)) => assert!(m.contains("signing_key"), "{m}"),
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("an L2 without a signing key must be refused"),
        }
    }

    #[test]
    fn begin_decides_hits_and_hands_back_misses() {
        let file = PolicyFile::new("steps");
        let p = Pipeline::new(file.config(), None).unwrap();
        let bytes = canonical::to_bytes(
            &Value::from_json_str(r#"{"user":"admin"}"#).unwrap(),
            "input",
        )
        .unwrap();
        let resolved = p.resolve(None).unwrap();
        let c = resolved.check(&bytes, InputForm::Plain, clock::now_ns());
        let Step::Miss(key) = p.begin(&c) else {
            panic!("a first check cannot hit");
        };
        let d = p.decide(&c, &key).unwrap();
        assert!(d.outcome.allow);
        assert_eq!(d.source, Source::Engine);
        let Step::Done(hit) = p.begin(&c) else {
            panic!("the decision was cached");
        };
        assert_eq!(hit.source, Source::L1);
        // The same bytes as a request document are another key (rule 7).
        let request = resolved.check(&bytes, InputForm::Request, clock::now_ns());
        assert!(matches!(p.begin(&request), Step::Miss(_)));
    }

    const KEY: &[u8] = b"0123456789abcdef-test-key";

    /// The first check of `{"user": user}`: a miss, kept.
    fn first_miss(p: &Pipeline, user: &str) -> Pending {
        let input = Value::from_json_str(&format!(r#"{{"user":"{user}"}}"#)).unwrap();
        let bytes = canonical::to_bytes(&input, "input").unwrap();
        let resolved = p.resolve(None).unwrap();
        let c = resolved.check(&bytes, InputForm::Plain, clock::now_ns());
        let Step::Miss(key) = p.begin(&c) else {
            panic!("a first check cannot hit");
        };
        Pending::new(&c, key)
    }

    fn found(payload: &[u8]) -> Found {
        Found {
            payload: payload.to_vec(),
            remaining: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_pending_miss_finishes_without_the_l2_and_an_unreachable_l2_never_decides() {
        let f = PolicyFile::new("pending");
        let p = Pipeline::new(f.config(), Some(unreachable_l2(Some(KEY)))).unwrap();
        assert!(p.wants_l2(), "decisions=\"always\" asks the L2");
        let pending = first_miss(&p, "eve");
        // Nothing found: no decision, and the miss is counted.
        assert!(p.finish(&pending, None, None).is_none());
        assert_eq!(p.authorizer().metrics.snapshot().l2_misses, 1);
        // A payload that is no decision does not become one.
        let ticket = p.authorizer().cache().map(DecisionCache::ticket);
        assert!(p
            .finish(&pending, Some(found(b"not json")), ticket)
            .is_none());
        assert!(p
            .finish(&pending, Some(found(b"\"yes\"")), ticket)
            .is_none());
        let d = p.decide(&pending.check(), pending.key()).unwrap();
        assert!(!d.outcome.allow);
        assert_eq!(d.source, Source::Engine);
    }

    #[test]
    fn an_l2_answer_is_promoted_to_l1_unless_invalidated_meanwhile() {
        let f = PolicyFile::new("promote");
        let p = Pipeline::new(f.config(), Some(unreachable_l2(Some(KEY)))).unwrap();
        let pending = first_miss(&p, "bob");
        let ticket = p.authorizer().cache().map(DecisionCache::ticket);
        let d = p.finish(&pending, Some(found(b"true")), ticket).unwrap();
        assert_eq!(d.source, Source::L2);
        let Step::Done(hit) = p.begin(&pending.check()) else {
            panic!("the L2's answer was promoted");
        };
        assert_eq!(hit.source, Source::L1);
        // An invalidation while the L2 was asked: the answer serves this call, never L1.
        let stale = p.authorizer().cache().map(DecisionCache::ticket);
        p.invalidate_all();
        assert!(p.finish(&pending, Some(found(b"true")), stale).is_some());
        assert!(matches!(p.begin(&pending.check()), Step::Miss(_)));
    }
}
