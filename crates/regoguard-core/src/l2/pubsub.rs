//! Cross-instance messages over Redis pub/sub: `reload()`, `set_data()`, invalidations.
//!
//! Every cache or authorizer built with a `RedisConfig` registers a [`Listener`] under a scope
//! (`a` for authorizers, `r1:<function id>` for a decorated function). One subscriber task per
//! [`L2`] listens on the configured channel and hands each verified message to the listeners of
//! its scope, except the one that sent it.
//!
//! # Lost subscriptions
//! While the subscription is down an instance may miss messages, so when the subscription is
//! lost, and again when it is re-established, every listener drops its L1
//! ([`Listener::on_gap`]) before serving from it again. The subscriber reconnects with the
//! breaker's backoff (100 ms doubling to 5 s).
//!
//! # Wire format
//! `<tag> <json>`, where the JSON object has `v` (2), `from`, `scope`, `sender` (a random id
//! per process and `RedisConfig`), `seq` (per sender, increasing), `ts` (unix ms), `kind` and the fields
//! of the kind, and `<tag>` is the hex HMAC-SHA256 of the channel and the JSON under the signing
//! key, or `-` without one. A listener with a signing key ignores messages without a valid tag
//! (a forged `set_data` could otherwise change the data every instance decides with).
//!
//! # Replays
//! Whoever can publish on the channel can re-send a captured message. So a message is
//! refused (counted in `messages_rejected`) when its `ts` is more than [`REPLAY_WINDOW`] from
//! this host's clock, when its sender's `seq` was accepted already or is more than 64 below the
//! highest accepted from that sender (concurrent publishers may arrive slightly out of order),
//! and, for messages that change state (`reload`, `set_data`), when an instance of
//! its scope already applied or sent a newer state change (ordered by `(ts, sender, seq)`):
//! an instance never moves back to older data.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use hmac::Mac;
use parking_lot::Mutex;
use serde_json::{json, Value as Json};

use super::{handle, unix_ms, CallError, HmacSha256, InFlight, L2, MAX_BACKOFF, MIN_BACKOFF};

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `reload()`: reload from this instance's own sources.
    Reload,
    /// `set_data(path, value)`, the value as canonical JSON.
    SetData {
        path: Vec<String>,
        value: String,
    },
    InvalidateTags(Vec<String>),
    InvalidateAll,
    /// One decorated result, by its key digest.
    InvalidateKey([u8; 32]),
}

/// Something that acts on messages: an authorizer or a result cache.
pub trait Listener: Send + Sync {
    /// A message of this listener's scope from another instance. Runs on the L2 runtime: hand
    /// anything slow to a blocking thread.
    fn on_message(&self, message: Message);
    /// Messages may have been missed: drop every cached entry.
    fn on_gap(&self);
}

/// How far a message's timestamp may be from this host's clock.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// Senders remembered for the replay check; past it the longest silent is forgotten (its
/// messages then still need a timestamp inside the window).
const MAX_SENDERS: usize = 4096;

/// What a verified message says about where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    from: String,
    scope: String,
    sender: String,
    seq: u64,
    ts: u64,
}

/// Sequence numbers accepted from one sender: the highest, and which of the 64 below it were
/// seen (messages of concurrent publishers may arrive slightly out of order).
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    highest: u64,
    below: u64,
    ts: u64,
}

impl Seen {
    /// Whether `seq` is new; records it.
    fn accept(&mut self, seq: u64, ts: u64) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.below = if shift >= 64 {
                0
            } else {
                (self.below << shift) | (1 << (shift - 1))
            };
            if self.highest == 0 {
                self.below = 0;
            }
            self.highest = seq;
            self.ts = self.ts.max(ts);
            return true;
        }
        let back = self.highest - seq;
        if back == 0 || back > 64 || self.below & (1 << (back - 1)) != 0 {
            return false;
        }
        self.below |= 1 << (back - 1);
        true
    }
}

/// The replay window's memory.
#[derive(Default)]
struct Replay {
    /// Sender → the sequence numbers accepted from it.
    senders: std::collections::HashMap<String, Seen>,
    /// Scope → the newest state change applied or sent here: `(ts, sender, seq)`.
    state: std::collections::HashMap<String, (u64, String, u64)>,
}

struct Registered {
    id: String,
    scope: String,
    listener: Weak<dyn Listener>,
}

/// The pub/sub state of one [`L2`].
#[derive(Default)]
pub struct Bus {
    listeners: Mutex<Vec<Registered>>,
    /// The process whose subscriber runs (0: none yet); after `fork()` the child starts its own.
    pub(super) started: AtomicU32,
    subscribed: AtomicBool,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub rejected: AtomicU64,
    /// Subscriptions lost, each followed by dropped L1s.
    pub gaps: AtomicU64,
    replay: Mutex<Replay>,
    /// This bus's sender id (the process's random id and a per-process number) and the
    /// sequence number of its last message.
    sender: OnceLock<String>,
    next_seq: AtomicU64,
    /// The subscription heartbeat ([`super::heartbeat`]).
    pub heartbeats: super::heartbeat::Heartbeats,
}

/// A per-process random prefix of listener ids.
fn process_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let n = u64::from_le_bytes(b) ^ u64::from(std::process::id());
        format!("{n:016x}")
    })
}

/// A listener's registration: keep it to publish as that listener.
#[derive(Clone, Debug)]
pub struct Publisher {
    l2: Arc<L2>,
    id: String,
    scope: String,
}

impl Bus {
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Whether a verified message from `o` may be applied now (see "Replays"); records it.
    fn admit(&self, o: &Origin, changes_state: bool, now_ms: u64) -> Result<(), &'static str> {
        let window = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(u64::MAX);
        if o.ts.abs_diff(now_ms) > window {
            return Err("is outside the replay window (old, or from a clock far off)");
        }
        let mut r = self.replay.lock();
        let mut seen = r.senders.get(&o.sender).copied().unwrap_or_default();
        if !seen.accept(o.seq, o.ts) {
            return Err(
                "was already received, or is older than what its sender sent since (a replay)",
            );
        }
        let order = (o.ts, o.sender.clone(), o.seq);
        if changes_state {
            if let Some(newest) = r.state.get(&o.scope) {
                // Equal: this process's own message coming back (duplicates failed above).
                if order < *newest {
                    return Err("would move this instance back to an older state");
                }
            }
        }
        if r.senders.len() >= MAX_SENDERS && !r.senders.contains_key(&o.sender) {
            if let Some(oldest) = r
                .senders
                .iter()
                .min_by_key(|(_, s)| s.ts)
                .map(|(k, _)| k.clone())
            {
                r.senders.remove(&oldest);
            }
        }
        r.senders.insert(o.sender.clone(), seen);
        if changes_state {
            r.state.insert(o.scope.clone(), order);
        }
        Ok(())
    }

    /// This bus's sender id: every `RedisConfig` of a process sends as its own sender.
    fn sender(&self) -> &str {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        self.sender
            .get_or_init(|| format!("{}.{}", process_id(), NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// Records a state change this bus sends, so an older one is never applied after it.
    fn sent_state(&self, scope: &str, ts: u64, seq: u64) {
        let order = (ts, self.sender().to_owned(), seq);
        let mut r = self.replay.lock();
        if r.state.get(scope).is_none_or(|newest| order > *newest) {
            r.state.insert(scope.to_owned(), order);
        }
    }
}

impl Message {
    /// Whether applying it changes the data or policies (`reload`, `set_data`).
    fn changes_state(&self) -> bool {
        matches!(self, Message::Reload | Message::SetData { .. })
    }
}

impl L2 {
    /// Registers `listener` for messages of `scope` and starts the subscriber on first use.
    pub fn listen(self: &Arc<Self>, scope: &str, listener: Weak<dyn Listener>) -> Publisher {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = format!("{}-{}", process_id(), NEXT.fetch_add(1, Ordering::Relaxed));
        {
            let mut all = self.bus.listeners.lock();
            all.retain(|r| r.listener.strong_count() > 0);
            all.push(Registered {
                id: id.clone(),
                scope: scope.to_owned(),
                listener,
            });
        }
        if let Some(h) = handle() {
            self.ensure_subscriber(&h);
        }
        Publisher {
            l2: self.clone(),
            id,
            scope: scope.to_owned(),
        }
    }

    /// Starts this process's subscriber if listeners are registered and none runs here yet.
    pub(super) fn ensure_subscriber(self: &Arc<Self>, handle: &tokio::runtime::Handle) {
        let pid = std::process::id();
        if self.bus.started.load(Ordering::Relaxed) == pid || self.bus.listeners.lock().is_empty() {
            return;
        }
        if self.bus.started.swap(pid, Ordering::SeqCst) != pid {
            self.bus.subscribed.store(false, Ordering::Relaxed);
            handle.spawn(subscribe(Arc::downgrade(self)));
            if self.config.heartbeat.is_some() {
                handle.spawn(super::heartbeat::publish(Arc::downgrade(self), pid));
            }
        }
    }

    /// Verifies and dispatches one message; returns whether it was verified and admitted
    /// (what the heartbeat counts as hearing).
    fn deliver(&self, raw: &[u8]) -> bool {
        let Some((origin, message)) = self.decode_any(raw) else {
            self.bus.rejected.fetch_add(1, Ordering::Relaxed);
            self.warn(|| {
                "regoguard L2: ignored a pub/sub message that failed verification".to_owned()
            });
            return false;
        };
        let changes_state = message.as_ref().is_some_and(Message::changes_state);
        if let Err(why) = self.bus.admit(&origin, changes_state, unix_ms()) {
            self.bus.rejected.fetch_add(1, Ordering::Relaxed);
            self.warn(|| {
                format!(
                    "regoguard L2: ignored a pub/sub message that {why} (sender {})",
                    origin.sender
                )
            });
            return false;
        }
        let Some(message) = message else {
            self.bus.heartbeats.received.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        let (from, scope) = (origin.from, origin.scope);
        self.bus.received.fetch_add(1, Ordering::Relaxed);
        let targets: Vec<Arc<dyn Listener>> = self
            .bus
            .listeners
            .lock()
            .iter()
            .filter(|r| r.scope == scope && r.id != from)
            .filter_map(|r| r.listener.upgrade())
            .collect();
        for t in targets {
            t.on_message(message.clone());
        }
        true
    }

    fn gap(&self) {
        self.bus.gaps.fetch_add(1, Ordering::Relaxed);
        let targets: Vec<Arc<dyn Listener>> = self
            .bus
            .listeners
            .lock()
            .iter()
            .filter_map(|r| r.listener.upgrade())
            .collect();
        for t in targets {
            t.on_gap();
        }
    }

    /// The wire form of `message` from listener `from` in `scope`, with this process's next
    /// sequence number and `ts` (unix ms).
    fn encode(&self, from: &str, scope: &str, message: &Message, ts: u64) -> String {
        let seq = self.bus.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        if message.changes_state() {
            self.bus.sent_state(scope, ts, seq);
        }
        let fields = match message {
            Message::Reload => json!({"kind": "reload"}),
            Message::SetData { path, value } => {
                json!({"kind": "set_data", "path": path, "value": value})
            }
            Message::InvalidateTags(tags) => json!({"kind": "invalidate_tags", "tags": tags}),
            Message::InvalidateAll => json!({"kind": "invalidate_all"}),
            Message::InvalidateKey(k) => {
                json!({"kind": "invalidate_key", "key": k.iter().map(|b| format!("{b:02x}")).collect::<String>()})
            }
        };
        self.wire(from, scope, seq, ts, fields)
    }

    /// The wire form of a heartbeat (no listener's, no scope), with the next sequence number.
    pub(super) fn encode_heartbeat(&self, ts: u64) -> String {
        let seq = self.bus.next_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.wire("", "", seq, ts, json!({"kind": "heartbeat"}))
    }

    fn wire(&self, from: &str, scope: &str, seq: u64, ts: u64, fields: Json) -> String {
        let mut body = json!({"v": 2, "from": from, "scope": scope, "sender": self.bus.sender(), "seq": seq, "ts": ts});
        if let (Some(b), Json::Object(f)) = (body.as_object_mut(), fields) {
            b.extend(f);
        }
        let body = body.to_string();
        format!("{} {body}", self.sign(&body))
    }

    fn sign(&self, json: &str) -> String {
        match &self.config.signing_key {
            Some(secret) => {
                let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
                    return "-".to_owned();
                };
                m.update(b"regoguard/bus/v1\0");
                m.update(self.config.channel.as_bytes());
                m.update(b"\0");
                m.update(json.as_bytes());
                m.finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            }
            None => "-".to_owned(),
        }
    }

    /// The origin and message of a verified message (not yet checked against replays).
    #[cfg(test)]
    fn decode(&self, raw: &[u8]) -> Option<(Origin, Message)> {
        match self.decode_any(raw)? {
            (o, Some(m)) => Some((o, m)),
            (_, None) => None,
        }
    }

    /// Like `decode`, with `None` for a verified heartbeat.
    fn decode_any(&self, raw: &[u8]) -> Option<(Origin, Option<Message>)> {
        let text = std::str::from_utf8(raw).ok()?;
        let (tag, body) = text.split_once(' ')?;
        if let Some(secret) = &self.config.signing_key {
            // Only the spelling `sign` writes: upper case, `+f` (which `from_str_radix` takes)
            // or a trailing odd digit made one message verify under several tags (fuzz/,
            // regression fuzz/regressions/pubsub_message/).
            let bytes = hex32(tag)?;
            let mut m = HmacSha256::new_from_slice(secret).ok()?;
            m.update(b"regoguard/bus/v1\0");
            m.update(self.config.channel.as_bytes());
            m.update(b"\0");
            m.update(body.as_bytes());
            m.verify_slice(&bytes).ok()?;
        } else if tag != "-" {
            return None;
        }
        let v: Json = serde_json::from_str(body).ok()?;
        if v.get("v")?.as_u64()? != 2 {
            return None;
        }
        let origin = Origin {
            from: v.get("from")?.as_str()?.to_owned(),
            scope: v.get("scope")?.as_str()?.to_owned(),
            sender: v.get("sender")?.as_str()?.to_owned(),
            seq: v.get("seq")?.as_u64()?,
            ts: v.get("ts")?.as_u64()?,
        };
        let strings = |field: &str| -> Option<Vec<String>> {
            v.get(field)?
                .as_array()?
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect()
        };
        let message = match v.get("kind")?.as_str()? {
            "reload" => Message::Reload,
            "set_data" => Message::SetData {
                path: strings("path")?,
                value: v.get("value")?.as_str()?.to_owned(),
            },
            "invalidate_tags" => Message::InvalidateTags(strings("tags")?),
            "invalidate_all" => Message::InvalidateAll,
            "invalidate_key" => Message::InvalidateKey(hex32(v.get("key")?.as_str()?)?),
            "heartbeat" => return Some((origin, None)),
            _ => return None,
        };
        Some((origin, Some(message)))
    }
}

/// The 32 bytes spelt by exactly 64 lower-case hex digits (as `encode` and `sign` write them).
fn hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (b, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *b = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl Publisher {
    /// Sends `message` to every other listener of this scope, waiting (without the GIL) at most
    /// about the timeout. Returns whether Redis took it.
    pub fn publish(&self, message: &Message) -> bool {
        let wire = self.l2.encode(&self.id, &self.scope, message, unix_ms());
        let l2 = &self.l2;
        let Some((handle, conn)) = l2.ready() else {
            return false;
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let this = l2.clone();
        let guard = InFlight::new();
        handle.spawn(async move {
            let _guard = guard;
            let channel = this.config.channel.clone();
            let result = L2::call(conn, this.config.timeout, |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(wire)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
            let ok = match result {
                Ok(_) => {
                    this.succeeded();
                    this.bus.sent.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(e) => {
                    this.failed("PUBLISH", &e);
                    false
                }
            };
            let _ = tx.send(ok);
        });
        rx.recv_timeout(l2.config.timeout * 2 + Duration::from_millis(20))
            .unwrap_or(false)
    }

    pub fn l2(&self) -> &Arc<L2> {
        &self.l2
    }
}

/// The subscriber: subscribe, deliver, and on a lost connection drop every L1, back off and
/// subscribe again (dropping every L1 once more before trusting messages again).
async fn subscribe(l2: Weak<L2>) {
    let mut backoff = MIN_BACKOFF;
    let mut missed_some = false;
    loop {
        let Some(this) = l2.upgrade() else { return };
        let connect_timeout = this.config.timeout.max(Duration::from_millis(500));
        let channel = this.config.channel.clone();
        let target = this.clone();
        let connected = tokio::time::timeout(connect_timeout, async move {
            let client = target.target.pubsub_client().await?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        match connected {
            Ok(Ok(ps)) => {
                backoff = MIN_BACKOFF;
                this.bus.subscribed.store(true, Ordering::Relaxed);
                if missed_some {
                    this.gap();
                }
                missed_some = true;
                let mut stream = ps.into_on_message();
                // Hear something within this long, or the subscription is lost (heartbeat.rs).
                let silence = this
                    .config
                    .heartbeat
                    .map(|every| every * this.config.heartbeat_misses);
                drop(this);
                let mut heard = tokio::time::Instant::now();
                let mut silent = false;
                loop {
                    let next = match silence {
                        Some(s) => tokio::time::timeout_at(heard + s, stream.next()).await,
                        None => Ok(stream.next().await),
                    };
                    let Some(this) = l2.upgrade() else { return };
                    match next {
                        Ok(Some(msg)) => {
                            if this.deliver(msg.get_payload_bytes()) {
                                heard = tokio::time::Instant::now();
                                if this.bus.heartbeats.lost.swap(false, Ordering::Relaxed) {
                                    this.warn(|| {
                                        "regoguard L2: the pub/sub subscription is heard again"
                                            .to_owned()
                                    });
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            silent = true;
                            break;
                        }
                    }
                }
                let Some(this) = l2.upgrade() else { return };
                this.bus.subscribed.store(false, Ordering::Relaxed);
                if silent {
                    this.bus.heartbeats.lost.store(true, Ordering::Relaxed);
                    this.bus.heartbeats.losses.fetch_add(1, Ordering::Relaxed);
                    let n = this.config.heartbeat_misses;
                    this.warn(|| {
                        format!("regoguard L2: nothing heard on the pub/sub subscription for {n} heartbeat intervals; treating it as lost, dropping L1 and resubscribing")
                    });
                } else {
                    this.warn(|| {
                        "regoguard L2: the pub/sub subscription was lost; dropping L1 and resubscribing"
                            .to_owned()
                    });
                }
                this.gap();
            }
            Ok(Err(e)) => {
                missed_some = true;
                this.warn(|| format!("regoguard L2: cannot subscribe ({e}); retrying"));
            }
            Err(_) => {
                missed_some = true;
                let e = CallError::Timeout;
                this.warn(|| format!("regoguard L2: cannot subscribe ({e}); retrying"));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs `f` on the L2 runtime's blocking pool (at most two threads), so reloads never stall
/// the task that reads Redis.
pub fn blocking(f: impl FnOnce() + Send + 'static) {
    if let Some(h) = handle() {
        let guard = InFlight::new();
        h.spawn_blocking(move || {
            let _guard = guard;
            f();
        });
    }
}

/// The wire codec on its own, for the fuzz targets (`fuzz/`) and `tests/fuzz_corpus.rs`; not API.
#[doc(hidden)]
pub mod wire {
    use super::{Message, L2};

    /// What [`decode`] found: `from`, `scope`, `sender`, `seq`, `ts` and the message.
    pub type Decoded = (String, String, String, u64, u64, Message);

    /// The wire form of `message` (as [`super::Publisher::publish`] sends it).
    pub fn encode(l2: &L2, from: &str, scope: &str, message: &Message, ts: u64) -> String {
        l2.encode(from, scope, message, ts)
    }

    /// A received message, if it verifies (before the replay checks); `None` for a heartbeat
    /// too, which carries no message.
    pub fn decode(l2: &L2, raw: &[u8]) -> Option<Decoded> {
        let (o, m) = l2.decode_any(raw)?;
        Some((o.from, o.scope, o.sender, o.seq, o.ts, m?))
    }

    /// The tag [`encode`] puts in front of `json`.
    pub fn sign(l2: &L2, json: &str) -> String {
        l2.sign(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::{DecisionPolicy, RedisConfig};

    fn l2(key: Option<&[u8]>) -> Arc<L2> {
        let cfg = RedisConfig::new(
            "redis://127.0.0.1:1/",
            300.0,
            0.05,
            "rg",
            key.map(<[u8]>::to_vec),
            None,
            DecisionPolicy::Auto,
        )
        .unwrap();
        L2::new(cfg).unwrap()
    }

    #[test]
    fn messages_round_trip_and_forgeries_are_rejected() {
        let signed = l2(Some(b"0123456789abcdef-secret"));
        let all = [
            Message::Reload,
            Message::SetData {
                path: vec!["a".into(), "b".into()],
                value: "[1,2]".into(),
            },
            Message::InvalidateTags(vec!["t1".into(), "t2".into()]),
            Message::InvalidateAll,
            Message::InvalidateKey([7; 32]),
        ];
        for m in &all {
            let wire = signed.encode("me", "a", m, 1000);
            let (origin, back) = signed.decode(wire.as_bytes()).unwrap();
            assert_eq!(
                (origin.from.as_str(), origin.scope.as_str(), &back),
                ("me", "a", m)
            );
            assert_eq!(
                (origin.sender.as_str(), origin.ts),
                (signed.bus.sender(), 1000)
            );
            for (from, to) in [
                ("\"scope\":\"a\"", "\"scope\":\"b\""),
                ("\"ts\":1000", "\"ts\":9000"),
            ] {
                let forged = wire.replace(from, to);
                assert_ne!(forged, wire);
                assert_eq!(signed.decode(forged.as_bytes()), None, "tampered {to}");
            }
            assert_eq!(
                l2(Some(b"another-secret-of-16+")).decode(wire.as_bytes()),
                None,
                "other key"
            );
            assert_eq!(
                l2(None).decode(wire.as_bytes()),
                None,
                "signed, reader unsigned"
            );
        }
        let plain = l2(None);
        let wire = plain.encode("me", "r1:x", &Message::InvalidateAll, 5);
        assert!(wire.starts_with("- "));
        assert_eq!(
            plain.decode(wire.as_bytes()).map(|m| m.1),
            Some(Message::InvalidateAll)
        );
        assert_eq!(
            signed.decode(wire.as_bytes()),
            None,
            "unsigned, reader signed"
        );
        assert_eq!(plain.decode(b"garbage"), None);
        assert_eq!(
            plain.decode(b"- {\"v\":1}"),
            None,
            "v1 messages carry no sequence"
        );
    }

    struct Counting(AtomicU64);

    impl Listener for Counting {
        fn on_message(&self, _: Message) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn on_gap(&self) {}
    }

    #[test]
    fn heartbeats_are_heard_only_when_verified_and_reach_no_listener() {
        let signed = l2(Some(b"0123456789abcdef-secret"));
        let counting = Arc::new(Counting(AtomicU64::new(0)));
        let listener: Arc<dyn Listener> = counting.clone();
        signed.bus.listeners.lock().push(Registered {
            id: "other".into(),
            scope: String::new(),
            listener: Arc::downgrade(&listener),
        });
        let now = unix_ms();
        let wire = signed.encode_heartbeat(now);
        assert!(signed
            .decode_any(wire.as_bytes())
            .is_some_and(|(_, m)| m.is_none()));
        assert!(
            signed.deliver(wire.as_bytes()),
            "a valid heartbeat is heard"
        );
        assert!(!signed.deliver(wire.as_bytes()), "a replayed one is not");
        // Forged: another key, no signature, a tampered body.
        let other = l2(Some(b"another-secret-of-16+"));
        let forged = other.encode_heartbeat(now);
        assert!(!signed.deliver(forged.as_bytes()));
        let body = wire.split_once(' ').unwrap().1;
        assert!(!signed.deliver(format!("- {body}").as_bytes()));
        let later = signed.encode_heartbeat(now);
        assert!(!signed.deliver(later.replace("heartbeat", "heartbeaT").as_bytes()));
        assert!(signed.deliver(later.as_bytes()));
        assert_eq!(signed.bus.heartbeats.received.load(Ordering::Relaxed), 2);
        assert_eq!(signed.bus.rejected.load(Ordering::Relaxed), 4);
        assert_eq!(
            signed.bus.received.load(Ordering::Relaxed),
            0,
            "not a message"
        );
        assert_eq!(
            counting.0.load(Ordering::Relaxed),
            0,
            "no listener sees one"
        );
    }

    fn origin(sender: &str, seq: u64, ts: u64) -> Origin {
        Origin {
            from: "x".into(),
            scope: "a".into(),
            sender: sender.into(),
            seq,
            ts,
        }
    }

    #[test]
    fn replays_duplicates_stale_and_rollbacks_are_refused() {
        let bus = Bus::default();
        let now = 1_000_000;
        assert!(bus.admit(&origin("A", 1, now), true, now).is_ok());
        assert!(
            bus.admit(&origin("A", 1, now), true, now).is_err(),
            "duplicate"
        );
        assert!(bus.admit(&origin("A", 2, now + 5), true, now).is_ok());
        assert!(
            bus.admit(&origin("A", 1, now), false, now).is_err(),
            "older sequence"
        );
        // Another sender's older state change (delayed, or replayed) never rolls data back...
        assert!(bus.admit(&origin("B", 7, now + 1), true, now).is_err());
        // ...but its newer one and its invalidations pass.
        assert!(bus.admit(&origin("B", 8, now + 2), false, now).is_ok());
        assert!(bus.admit(&origin("B", 9, now + 9), true, now).is_ok());
        let window = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap();
        assert!(
            bus.admit(&origin("C", 1, now - window - 1), false, now)
                .is_err(),
            "too old"
        );
        assert!(
            bus.admit(&origin("C", 1, now + window + 1), false, now)
                .is_err(),
            "from the future"
        );
        // What this process sends counts as applied.
        bus.sent_state("a", now + 100, 1);
        assert!(bus.admit(&origin("D", 1, now + 50), true, now).is_err());
    }

    #[test]
    fn concurrent_publishers_may_arrive_out_of_order_but_never_twice() {
        let mut s = Seen::default();
        assert!(s.accept(1, 0) && s.accept(3, 0) && s.accept(2, 0));
        assert!(!s.accept(2, 0) && !s.accept(3, 0) && !s.accept(1, 0));
        assert!(s.accept(100, 0));
        assert!(s.accept(99, 0) && s.accept(37, 0));
        assert!(
            s.accept(36, 0) && !s.accept(35, 0),
            "64 behind is the edge of the window"
        );
        assert!(!s.accept(99, 0) && !s.accept(100, 0));
        let (a, b) = (l2(None), l2(None));
        assert_ne!(
            a.bus.sender(),
            b.bus.sender(),
            "two configs of one process are two senders"
        );
    }
}
