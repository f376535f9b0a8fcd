//! OPA-style decision logs: sampling, a bounded queue, JSON-pointer masking and the record.
//!
//! The hot path only samples and enqueues what it already has (the canonical input bytes, the
//! shared outcome, ids and timing) without blocking: a full queue drops the record and counts
//! it, so a slow log handler never slows a request. The queue is an unbounded channel (its
//! memory grows in small blocks with what it holds, rather than `max_queue` slots allocated up
//! front) bounded by an atomic count. A background thread (in
//! Python, `regoguard/_decision_log.py`) drains the queues, and only then is each record
//! decoded, masked and written as one JSON line with OPA's field names.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value as Json};

use crate::authorizer::InputForm;
use crate::clock;
use crate::decision::{DecisionId, Outcome, Source};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// What OPA masks by default in our setting: credentials in the request headers.
pub const DEFAULT_MASK: [&str; 2] = ["/input/headers/authorization", "/input/headers/cookie"];

/// The largest queue a config may ask for (a queued record costs about 100 bytes plus the
/// input's canonical bytes).
pub const MAX_QUEUE: usize = 1_000_000;

/// Decision-log settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionLogConfig {
    /// Fraction of decisions logged, 0 to 1.
    pub sample_rate: f64,
    /// JSON pointers (under `/input` or `/result`) removed from every record.
    pub mask: Vec<String>,
    /// Most records waiting for the drain thread; more are dropped and counted.
    pub max_queue: usize,
    /// Added to every record's `labels`.
    pub labels: Vec<(String, String)>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            sample_rate: 1.0,
            mask: DEFAULT_MASK.iter().map(|s| (*s).to_owned()).collect(),
            max_queue: 10_000,
            labels: Vec::new(),
        }
    }
}

impl DecisionLogConfig {
    /// # Errors
    /// `Error::Config` for a rate outside 0..=1, a queue outside 1..=`MAX_QUEUE`, a mask that
    /// is not a JSON pointer under `/input` or `/result`, or an empty label name.
    pub fn new(sample_rate: f64, mask: Vec<String>, max_queue: usize, labels: Vec<(String, String)>) -> Result<Self> {
        if !(0.0..=1.0).contains(&sample_rate) {
            return Err(Error::config(format!("sample_rate must be between 0 and 1, got {sample_rate}")));
        }
        if !(1..=MAX_QUEUE).contains(&max_queue) {
            return Err(Error::config(format!("max_queue must be between 1 and {MAX_QUEUE}, got {max_queue}")));
        }
        for m in &mask {
            pointer(m)?;
        }
        if labels.iter().any(|(k, _)| k.is_empty()) {
            return Err(Error::config("decision_log labels must have non-empty names".to_owned()));
        }
        Ok(Self { sample_rate, mask, max_queue, labels })
    }
}

/// The segments of a mask pointer (`/input/headers/authorization` → `input`, `headers`,
/// `authorization`), unescaped (`~1` is `/`, `~0` is `~`).
fn pointer(p: &str) -> Result<Vec<String>> {
    let bad = || {
        Error::config(format!(
            "mask entries are JSON pointers under /input or /result (e.g. /input/headers/authorization), got {p:?}"
        ))
    };
    let rest = p.strip_prefix('/').ok_or_else(bad)?;
    let segments: Vec<String> = rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    match segments.first().map(String::as_str) {
        Some("input" | "result") => Ok(segments),
        _ => Err(bad()),
    }
}

/// One decision waiting to be logged: what the hot path already had, nothing rendered.
pub struct Record {
    pub id: DecisionId,
    pub entrypoint: Arc<str>,
    pub input: Box<[u8]>,
    pub form: InputForm,
    /// The outcome, or the error message of a failed evaluation.
    pub outcome: std::result::Result<Arc<Outcome>, Box<str>>,
    pub source: Option<Source>,
    pub revision: Arc<str>,
    pub unix_ns: u64,
    pub duration_ns: u64,
}

thread_local! {
    /// xorshift64* state for sampling; seeded per thread.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

fn random_u64() -> u64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        if x == 0 {
            let mut b = [0u8; 8];
            let _ = getrandom::fill(&mut b);
            x = u64::from_le_bytes(b) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        cell.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The decision log of one authorizer: its settings and its queue.
///
/// # Concurrency
/// [`DecisionLog::offer`] never blocks and takes no lock (an atomic count and a channel
/// send); [`DecisionLog::drain`] takes the receiver's lock and is meant for one drain thread.
pub struct DecisionLog {
    pub config: DecisionLogConfig,
    /// `sample_rate` as a threshold on a random u64 (`None`: log everything).
    threshold: Option<u64>,
    masks: Vec<(String, Vec<String>)>,
    labels: Json,
    sender: Sender<Record>,
    receiver: Mutex<Receiver<Record>>,
    /// Records in the channel; kept at most `config.max_queue`.
    queued: AtomicUsize,
    /// Set when the authorizer is gone: the drain writes what is left, then forgets this log.
    closed: AtomicBool,
}

impl DecisionLog {
    /// A log with an empty queue, registered for [`drain_all`].
    ///
    /// # Errors
    /// `Error::Config` for a mask that is not a pointer under `/input` or `/result`.
    pub fn new(config: DecisionLogConfig, version: &str) -> Result<Arc<Self>> {
        let (sender, receiver) = channel();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let threshold = (config.sample_rate < 1.0).then_some((config.sample_rate * u64::MAX as f64) as u64);
        let masks = config.mask.iter().map(|m| Ok((m.clone(), pointer(m)?))).collect::<Result<_>>()?;
        let mut labels = Map::new();
        labels.insert("id".into(), Json::from(instance_id()));
        labels.insert("version".into(), Json::from(version));
        for (k, v) in &config.labels {
            labels.insert(k.clone(), Json::from(v.as_str()));
        }
        let log = Arc::new(Self {
            config,
            threshold,
            masks,
            labels: Json::Object(labels),
            sender,
            receiver: Mutex::new(receiver),
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        LOGS.lock().push(log.clone());
        Ok(log)
    }

    /// Whether this decision is sampled (cheap: a thread-local xorshift).
    #[inline]
    pub fn sampled(&self) -> bool {
        match self.threshold {
            None => true,
            Some(0) => false,
            Some(t) => random_u64() < t,
        }
    }

    /// Queues `record`, or drops and counts it when the queue is full. Never blocks.
    pub fn offer(&self, record: Record, metrics: &Metrics) {
        // Claim a place first: concurrent offers past the bound each give theirs back.
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.config.max_queue {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            metrics.decision_logs_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The receiver lives as long as `self`, so the send cannot fail.
        if self.sender.send(record).is_ok() {
            metrics.decision_logs.fetch_add(1, Ordering::Relaxed);
        } else {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            metrics.decision_logs_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks the log as abandoned by its authorizer.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Up to `max` queued records, rendered as JSON lines when `render` (else discarded).
    /// Returns how many were taken and whether the queue was then seen empty.
    pub fn drain(&self, max: usize, render: bool, out: &mut Vec<String>) -> (usize, bool) {
        let Some(receiver) = self.receiver.try_lock() else { return (0, false) };
        let mut n = 0;
        while n < max {
            let Ok(record) = receiver.try_recv() else { return (n, true) };
            self.queued.fetch_sub(1, Ordering::Relaxed);
            n += 1;
            if render {
                out.push(self.render(&record));
            }
        }
        (n, false)
    }

    /// The OPA decision-log record of `r` as one JSON line, masked.
    pub fn render(&self, r: &Record) -> String {
        let mut doc = Map::new();
        // Canonical bytes are JSON: parse them as they are (several times faster than decoding
        // to a regorus value and converting that).
        let mut input: Json = serde_json::from_slice(&r.input).unwrap_or(Json::Null);
        if r.form == InputForm::Request {
            complete_request(&mut input);
        }
        doc.insert("input".into(), input);
        match &r.outcome {
            Ok(o) => {
                if !matches!(o.result, regorus::Value::Undefined) {
                    doc.insert("result".into(), serde_json::to_value(&o.result).unwrap_or(Json::Null));
                }
            }
            Err(message) => {
                let mut e = Map::new();
                e.insert("code".into(), Json::from("eval_error"));
                e.insert("message".into(), Json::from(&**message));
                doc.insert("error".into(), Json::Object(e));
            }
        }
        let mut erased = Vec::new();
        for (text, segments) in &self.masks {
            // `/input/headers/<name>` masks that header's every value too: a request document
            // repeats them in `header_values` (ARCHITECTURE.md, "What the policy sees").
            let mut removed = remove(&mut doc, segments);
            if let [input, headers, name] = segments.as_slice() {
                if input == "input" && headers == "headers" {
                    removed |= remove(&mut doc, &["input".into(), "header_values".into(), name.clone()]);
                }
            }
            if removed {
                erased.push(Json::from(text.as_str()));
            }
        }
        doc.insert("decision_id".into(), Json::from(r.id.to_string()));
        doc.insert("path".into(), Json::from(opa_path(&r.entrypoint)));
        doc.insert("revision".into(), Json::from(&*r.revision));
        doc.insert("timestamp".into(), Json::from(clock::rfc3339(r.unix_ns)));
        doc.insert("labels".into(), self.labels.clone());
        let mut metrics = Map::new();
        metrics.insert("timer_regoguard_decision_ns".into(), Json::from(r.duration_ns));
        doc.insert("metrics".into(), Json::Object(metrics));
        if let Some(s) = r.source {
            doc.insert("source".into(), Json::from(s.as_str()));
        }
        if !erased.is_empty() {
            doc.insert("erased".into(), Json::Array(erased));
        }
        Json::Object(doc).to_string()
    }
}

/// [`crate::request::complete`] for the logged copy: adds `path_segments`, so the record shows
/// the document the policy saw.
fn complete_request(input: &mut Json) {
    let Json::Object(fields) = input else { return };
    let Some(Json::String(path)) = fields.get("path") else { return };
    let segments = crate::request::path_segments(path).map(Json::from).collect();
    fields.insert("path_segments".into(), Json::Array(segments));
}

/// `data.authz.allow` in OPA's decision-log form: `authz/allow`.
fn opa_path(entrypoint: &str) -> String {
    entrypoint.strip_prefix("data.").unwrap_or(entrypoint).replace('.', "/")
}

/// Removes the value at `segments` (object keys, or array indices); returns whether it was there.
fn remove(doc: &mut Map<String, Json>, segments: &[String]) -> bool {
    let Some((first, rest)) = segments.split_first() else { return false };
    if rest.is_empty() {
        return doc.remove(first).is_some();
    }
    let Some(mut node) = doc.get_mut(first) else { return false };
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match node {
            Json::Object(map) => {
                if last {
                    return map.remove(seg).is_some();
                }
                let Some(next) = map.get_mut(seg) else { return false };
                node = next;
            }
            Json::Array(items) => {
                let Ok(idx) = seg.parse::<usize>() else { return false };
                if idx >= items.len() {
                    return false;
                }
                if last {
                    items.remove(idx);
                    return true;
                }
                let Some(next) = items.get_mut(idx) else { return false };
                node = next;
            }
            _ => return false,
        }
    }
    false
}

/// A per-process id for the `labels.id` of every record (OPA's instance id).
fn instance_id() -> String {
    use std::sync::OnceLock;
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(DecisionId::random_prefix_uuid).clone()
}

/// Every decision log whose records may still need writing. Held strongly, so what an
/// authorizer queued is written even after the authorizer is gone.
static LOGS: Mutex<Vec<Arc<DecisionLog>>> = Mutex::new(Vec::new());

/// Takes up to `max` records from the decision logs (rendered when `render`); returns how many
/// were taken and the lines. Logs closed by their authorizer are forgotten once drained.
pub fn drain_all(max: usize, render: bool) -> (usize, Vec<String>) {
    let logs: Vec<Arc<DecisionLog>> = LOGS.lock().clone();
    let mut lines = Vec::new();
    let mut taken = 0;
    let mut finished: Vec<&Arc<DecisionLog>> = Vec::new();
    for log in &logs {
        if taken >= max {
            break;
        }
        // Read `closed` first: a log closed before its queue was seen empty has nothing left.
        let closed = log.closed.load(Ordering::Acquire);
        let (n, empty) = log.drain(max - taken, render, &mut lines);
        taken += n;
        if closed && empty {
            finished.push(log);
        }
    }
    if !finished.is_empty() {
        LOGS.lock().retain(|l| !finished.iter().any(|f| Arc::ptr_eq(f, l)));
    }
    (taken, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::canonical;

    fn record(input: &str, outcome: std::result::Result<Arc<Outcome>, Box<str>>) -> Record {
        let v = regorus::Value::from_json_str(input).unwrap();
        Record {
            id: DecisionId::next(),
            entrypoint: Arc::from("data.authz.allow"),
            input: canonical::to_bytes(&v, "input").unwrap().into_boxed_slice(),
            form: InputForm::Plain,
            outcome,
            source: Some(Source::Engine),
            revision: Arc::from("abc"),
            unix_ns: 0,
            duration_ns: 1234,
        }
    }

    #[test]
    fn config_validation() {
        assert!(DecisionLogConfig::new(1.5, vec![], 1, vec![]).is_err());
        assert!(DecisionLogConfig::new(f64::NAN, vec![], 1, vec![]).is_err());
        assert!(DecisionLogConfig::new(1.0, vec![], 0, vec![]).is_err());
        assert!(DecisionLogConfig::new(1.0, vec!["input/x".into()], 1, vec![]).is_err());
        assert!(DecisionLogConfig::new(1.0, vec!["/data/x".into()], 1, vec![]).is_err());
        assert!(DecisionLogConfig::new(1.0, vec!["/result".into(), "/input/a~1b".into()], 1, vec![]).is_ok());
    }

    #[test]
    fn record_is_masked_and_has_opa_fields() {
        let log = DecisionLog::new(DecisionLogConfig::default(), "0.1.0").unwrap();
        let o = Arc::new(Outcome::from_value("e", regorus::Value::Bool(true)).unwrap());
        let line = log.render(&record(
            r#"{"headers":{"authorization":"Bearer x","cookie":"c","x-tenant":"t"},"items":[1,2]}"#,
            Ok(o),
        ));
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["input"]["headers"], serde_json::json!({"x-tenant": "t"}));
        assert_eq!(v["erased"], serde_json::json!(["/input/headers/authorization", "/input/headers/cookie"]));
        assert_eq!(v["result"], Json::Bool(true));
        assert_eq!(v["path"], "authz/allow");
        assert_eq!(v["revision"], "abc");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!(v["metrics"]["timer_regoguard_decision_ns"], 1234);
        assert_eq!(v["labels"]["version"], "0.1.0");
        assert!(!line.contains("Bearer"));
    }

    #[test]
    fn masks_reach_into_arrays_and_errors_are_logged() {
        let cfg = DecisionLogConfig::new(1.0, vec!["/input/items/0".into(), "/input/nope/x".into()], 4, vec![]).unwrap();
        let log = DecisionLog::new(cfg, "v").unwrap();
        let line = log.render(&record(r#"{"items":[1,2]}"#, Err("boom".into())));
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["input"]["items"], serde_json::json!([2]));
        assert_eq!(v["erased"], serde_json::json!(["/input/items/0"]));
        assert_eq!(v["error"]["message"], "boom");
        assert!(v.get("result").is_none());
    }

    #[test]
    fn the_queue_is_bounded_and_drops_are_counted() {
        let cfg = DecisionLogConfig::new(1.0, vec![], 3, vec![]).unwrap();
        let log = DecisionLog::new(cfg, "v").unwrap();
        let m = Metrics::default();
        for _ in 0..5 {
            log.offer(record("{}", Err("x".into())), &m);
        }
        let s = m.snapshot();
        assert_eq!((s.decision_logs, s.decision_logs_dropped), (3, 2));
        let mut out = Vec::new();
        assert_eq!(log.drain(10, true, &mut out), (3, true));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn sampling_rate_is_roughly_honoured() {
        let half = DecisionLog::new(DecisionLogConfig::new(0.5, vec![], 1, vec![]).unwrap(), "v").unwrap();
        let n = (0..10_000).filter(|_| half.sampled()).count();
        assert!((4_500..5_500).contains(&n), "{n}");
        let none = DecisionLog::new(DecisionLogConfig::new(0.0, vec![], 1, vec![]).unwrap(), "v").unwrap();
        assert!(!(0..1000).any(|_| none.sampled()));
    }
}
