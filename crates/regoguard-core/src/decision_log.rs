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

use crate::clock;
use crate::decision::{DecisionId, Outcome, Source};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::request::InputForm;

/// What is masked by default: credentials in the request headers.
pub const DEFAULT_MASK: [&str; 5] = [
    "/input/headers/authorization",
    "/input/headers/cookie",
    "/input/headers/proxy-authorization",
    "/input/headers/set-cookie",
    "/input/headers/x-api-key",
];

/// Field names masked wherever they appear in the input or result (any depth, any header),
/// compared case-insensitively; `*` matches any run of characters.
pub const DEFAULT_MASK_NAMES: [&str; 3] = ["*token*", "*secret*", "*password*"];

/// Shown in place of a masked value inside an error message.
pub const REDACTED: &str = "***";

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
    /// Field-name patterns ([`DEFAULT_MASK_NAMES`]) removed at any depth.
    pub mask_names: Vec<String>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            sample_rate: 1.0,
            mask: DEFAULT_MASK.iter().map(|s| (*s).to_owned()).collect(),
            max_queue: 10_000,
            labels: Vec::new(),
            mask_names: DEFAULT_MASK_NAMES.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

impl DecisionLogConfig {
    /// # Errors
    /// `Error::Config` for a rate outside 0..=1, a queue outside 1..=`MAX_QUEUE`, a mask that
    /// is not a JSON pointer under `/input` or `/result`, or an empty label name.
    pub fn new(
        sample_rate: f64,
        mask: Vec<String>,
        max_queue: usize,
        labels: Vec<(String, String)>,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&sample_rate) {
            return Err(Error::config(format!(
                "sample_rate must be between 0 and 1, got {sample_rate}"
            )));
        }
        if !(1..=MAX_QUEUE).contains(&max_queue) {
            return Err(Error::config(format!(
                "max_queue must be between 1 and {MAX_QUEUE}, got {max_queue}"
            )));
        }
        for m in &mask {
            pointer(m)?;
        }
        if labels.iter().any(|(k, _)| k.is_empty()) {
            return Err(Error::config(
                "decision_log labels must have non-empty names".to_owned(),
            ));
        }
        let mask_names = DEFAULT_MASK_NAMES.iter().map(|s| (*s).to_owned()).collect();
        Ok(Self {
            sample_rate,
            mask,
            max_queue,
            labels,
            mask_names,
        })
    }

    /// The same settings masking the field names matching `patterns` instead of the default.
    ///
    /// # Errors
    /// `Error::Config` for an empty pattern or one that is only `*` (it would mask everything).
    pub fn with_mask_names(mut self, patterns: Vec<String>) -> Result<Self> {
        if let Some(p) = patterns.iter().find(|p| p.chars().all(|c| c == '*')) {
            return Err(Error::config(format!(
                "mask_names patterns need at least one character besides '*', got {p:?}"
            )));
        }
        self.mask_names = patterns;
        Ok(self)
    }

    /// What masks records and error messages under these settings.
    pub fn masker(&self) -> Result<Masker> {
        Masker::new(&self.mask, &self.mask_names)
    }
}

/// Whether `name` matches `pattern` (`*` is any run, the rest compared ASCII case-insensitively).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ni;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// The masks of one authorizer: JSON pointers and field-name patterns. Used for decision-log
/// records and for error messages, which must not quote a masked value either (an evaluation
/// error may print part of the input).
#[derive(Clone, Debug)]
pub struct Masker {
    pointers: Vec<(String, Vec<String>)>,
    names: Vec<String>,
}

impl Masker {
    /// # Errors
    /// `Error::Config` for a pointer that is not under `/input` or `/result`.
    pub fn new(pointers: &[String], names: &[String]) -> Result<Self> {
        let pointers = pointers
            .iter()
            .map(|m| Ok((m.clone(), pointer(m)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            pointers,
            names: names.to_vec(),
        })
    }

    /// The default masks (for authorizers without a decision log).
    pub fn default_masks() -> &'static Masker {
        static DEFAULT: std::sync::OnceLock<Masker> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| {
            let pointers: Vec<String> = DEFAULT_MASK.iter().map(|s| (*s).to_owned()).collect();
            let names: Vec<String> = DEFAULT_MASK_NAMES.iter().map(|s| (*s).to_owned()).collect();
            Masker::new(&pointers, &names).unwrap_or(Masker {
                pointers: Vec::new(),
                names,
            })
        })
    }

    fn masks_name(&self, name: &str) -> bool {
        self.names.iter().any(|p| glob(p, name))
    }

    /// Removes every masked value from `doc` (an object with `input` and maybe `result`);
    /// returns the pointers that removed something, in mask order, then the named fields.
    fn apply(&self, doc: &mut Map<String, Json>) -> Vec<String> {
        let mut erased = Vec::new();
        for (text, segments) in &self.pointers {
            let mut removed = remove(doc, segments);
            // `/input/headers/<name>` masks that header's every value too: a request document
            // repeats them in `header_values` (README, "What the policy sees").
            if let [input, headers, name] = segments.as_slice() {
                if input == "input" && headers == "headers" {
                    removed |= remove(doc, &["input".into(), "header_values".into(), name.clone()]);
                }
            }
            if removed {
                erased.push(text.clone());
            }
        }
        if !self.names.is_empty() {
            for root in ["input", "result"] {
                if let Some(node) = doc.get_mut(root) {
                    let mut at = format!("/{root}");
                    self.remove_names(node, &mut at, &mut erased);
                }
            }
        }
        erased
    }

    fn remove_names(&self, node: &mut Json, at: &mut String, erased: &mut Vec<String>) {
        match node {
            Json::Object(map) => {
                let doomed: Vec<String> =
                    map.keys().filter(|k| self.masks_name(k)).cloned().collect();
                for k in doomed {
                    map.remove(&k);
                    erased.push(format!("{at}/{}", escape(&k)));
                }
                for (k, v) in map.iter_mut() {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&escape(k));
                    self.remove_names(v, at, erased);
                    at.truncate(len);
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    let len = at.len();
                    at.push('/');
                    at.push_str(&i.to_string());
                    self.remove_names(v, at, erased);
                    at.truncate(len);
                }
            }
            _ => {}
        }
    }

    /// Every masked text of `input` (string leaves under a masked pointer or field name, and
    /// masked numbers of four digits or more), longest first.
    fn secrets(&self, input: &Json) -> Vec<String> {
        let mut found = Vec::new();
        for (_, segments) in &self.pointers {
            if segments.first().map(String::as_str) != Some("input") {
                continue;
            }
            let mut node = Some(input);
            for seg in &segments[1..] {
                node = node.and_then(|n| match n {
                    Json::Object(m) => m.get(seg),
                    Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                });
            }
            if let Some(n) = node {
                leaves(n, &mut found);
            }
        }
        self.named_secrets(input, &mut found);
        found.retain(|s| !s.is_empty());
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        found.dedup();
        found
    }

    fn named_secrets(&self, node: &Json, found: &mut Vec<String>) {
        match node {
            Json::Object(map) => {
                for (k, v) in map {
                    if self.masks_name(k) {
                        leaves(v, found);
                    } else {
                        self.named_secrets(v, found);
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|v| self.named_secrets(v, found)),
            _ => {}
        }
    }

    /// `message` with every masked value of the input (canonical bytes of `form`) replaced by
    /// [`REDACTED`], raw and as a JSON string body (how policy errors quote strings).
    pub fn redact(&self, message: &str, input: &[u8], form: InputForm) -> String {
        let Ok(mut doc) = serde_json::from_slice::<Json>(input) else {
            return message.to_owned();
        };
        if form == InputForm::Request {
            complete_request(&mut doc);
        }
        let mut out = message.to_owned();
        for secret in self.secrets(&doc) {
            let quoted = Json::from(secret.as_str()).to_string();
            let escaped = &quoted[1..quoted.len() - 1];
            if escaped != secret {
                out = out.replace(escaped, REDACTED);
            }
            out = out.replace(&secret, REDACTED);
        }
        out
    }

    /// Masks `e` (an evaluation error's message) for the decision with this input.
    pub fn redact_error(&self, e: Error, input: &[u8], form: InputForm) -> Error {
        match e {
            Error::Evaluation(mut f) => {
                f.message = self.redact(&f.message, input, form);
                Error::Evaluation(f)
            }
            other => other,
        }
    }
}

/// A JSON pointer segment for `key` (`~` is `~0`, `/` is `~1`).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The string leaves (and numbers of 4+ characters) under `node`.
fn leaves(node: &Json, out: &mut Vec<String>) {
    match node {
        Json::String(s) => out.push(s.clone()),
        Json::Number(n) => {
            let t = n.to_string();
            if t.len() >= 4 {
                out.push(t);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        Json::Object(map) => map.values().for_each(|v| leaves(v, out)),
        _ => {}
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
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
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
    /// The bundles of the revision (OPA's `bundles: {name: {revision}}`); empty without.
    pub bundles: Arc<[crate::bundle::info::BundleInfo]>,
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
    masks: Masker,
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
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let threshold =
            (config.sample_rate < 1.0).then_some((config.sample_rate * u64::MAX as f64) as u64);
        let masks = config.masker()?;
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
            metrics
                .decision_logs_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The receiver lives as long as `self`, so the send cannot fail.
        if self.sender.send(record).is_ok() {
            metrics.decision_logs.fetch_add(1, Ordering::Relaxed);
        } else {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            metrics
                .decision_logs_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The masks of this log.
    pub fn masker(&self) -> &Masker {
        &self.masks
    }

    /// Marks the log as abandoned by its authorizer.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Up to `max` queued records, rendered as JSON lines when `render` (else discarded).
    /// Returns how many were taken and whether the queue was then seen empty.
    pub fn drain(&self, max: usize, render: bool, out: &mut Vec<String>) -> (usize, bool) {
        let Some(receiver) = self.receiver.try_lock() else {
            return (0, false);
        };
        let mut n = 0;
        while n < max {
            let Ok(record) = receiver.try_recv() else {
                return (n, true);
            };
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
                    doc.insert(
                        "result".into(),
                        serde_json::to_value(&o.result).unwrap_or(Json::Null),
                    );
                }
            }
            Err(message) => {
                let mut e = Map::new();
                e.insert("code".into(), Json::from("eval_error"));
                e.insert("message".into(), Json::from(&**message));
                doc.insert("error".into(), Json::Object(e));
            }
        }
        if let Some(Json::Object(e)) = doc.get_mut("error") {
            if let Some(Json::String(m)) = e.get_mut("message") {
                *m = self.masks.redact(m, &r.input, r.form);
            }
        }
        let erased: Vec<Json> = self
            .masks
            .apply(&mut doc)
            .into_iter()
            .map(Json::from)
            .collect();
        doc.insert("decision_id".into(), Json::from(r.id.to_string()));
        doc.insert("path".into(), Json::from(opa_path(&r.entrypoint)));
        doc.insert("revision".into(), Json::from(&*r.revision));
        if !r.bundles.is_empty() {
            doc.insert("bundles".into(), crate::bundle::info::log_field(&r.bundles));
        }
        doc.insert("timestamp".into(), Json::from(clock::rfc3339(r.unix_ns)));
        doc.insert("labels".into(), self.labels.clone());
        let mut metrics = Map::new();
        metrics.insert(
            "timer_regoguard_decision_ns".into(),
            Json::from(r.duration_ns),
        );
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
    for key in ["header_values", "headers", "query"] {
        fields
            .entry(key)
            .or_insert_with(|| Json::Object(Map::new()));
    }
    let Some(Json::String(path)) = fields.get("path") else {
        return;
    };
    let segments = crate::request::path_segments(path)
        .map(Json::from)
        .collect();
    fields.insert("path_segments".into(), Json::Array(segments));
}

/// `data.authz.allow` in OPA's decision-log form: `authz/allow`.
fn opa_path(entrypoint: &str) -> String {
    entrypoint
        .strip_prefix("data.")
        .unwrap_or(entrypoint)
        .replace('.', "/")
}

/// Removes the value at `segments` (object keys, or array indices); returns whether it was there.
fn remove(doc: &mut Map<String, Json>, segments: &[String]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return doc.remove(first).is_some();
    }
    let Some(mut node) = doc.get_mut(first) else {
        return false;
    };
    for (i, seg) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        match node {
            Json::Object(map) => {
                if last {
                    return map.remove(seg).is_some();
                }
                let Some(next) = map.get_mut(seg) else {
                    return false;
                };
                node = next;
            }
            Json::Array(items) => {
                let Ok(idx) = seg.parse::<usize>() else {
                    return false;
                };
                if idx >= items.len() {
                    return false;
                }
                if last {
                    items.remove(idx);
                    return true;
                }
                let Some(next) = items.get_mut(idx) else {
                    return false;
                };
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
        LOGS.lock()
            .retain(|l| !finished.iter().any(|f| Arc::ptr_eq(f, l)));
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
            bundles: Arc::from([]),
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
        assert!(DecisionLogConfig::new(
            1.0,
            vec!["/result".into(), "/input/a~1b".into()],
            1,
            vec![]
        )
        .is_ok());
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
        assert_eq!(
            v["erased"],
            serde_json::json!(["/input/headers/authorization", "/input/headers/cookie"])
        );
        assert!(!line.contains("Bearer"));
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
        let cfg = DecisionLogConfig::new(
            1.0,
            vec!["/input/items/0".into(), "/input/nope/x".into()],
            4,
            vec![],
        )
        .unwrap();
        let log = DecisionLog::new(cfg, "v").unwrap();
        let line = log.render(&record(r#"{"items":[1,2]}"#, Err("boom".into())));
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["input"]["items"], serde_json::json!([2]));
        assert_eq!(v["erased"], serde_json::json!(["/input/items/0"]));
        assert_eq!(v["error"]["message"], "boom");
        assert!(v.get("result").is_none());
    }

    #[test]
    fn default_masks_cover_credential_headers_and_secret_looking_names() {
        let log = DecisionLog::new(DecisionLogConfig::default(), "v").unwrap();
        let o = Arc::new(Outcome::from_value("e", regorus::Value::Bool(true)).unwrap());
        let input = r#"{"headers":{"proxy-authorization":"Basic P1","x-api-key":"K2","set-cookie":"S3",
            "x-auth-token":"T4","x-tenant":"t"},"user":{"Password":"P5","name":"bob",
            "creds":[{"client_SECRET":"S6"}]},"query":{"access_token":["T7"]}}"#;
        let line = log.render(&record(input, Ok(o)));
        for secret in ["P1", "K2", "S3", "T4", "P5", "S6", "T7"] {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
        let v: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(v["input"]["headers"], serde_json::json!({"x-tenant": "t"}));
        assert_eq!(v["input"]["user"]["name"], "bob");
        let erased = v["erased"].as_array().unwrap();
        assert!(
            erased.contains(&Json::from("/input/user/creds/0/client_SECRET")),
            "{erased:?}"
        );
        assert!(
            erased.contains(&Json::from("/input/headers/x-api-key")),
            "{erased:?}"
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*token*", "X-Auth-TOKEN"));
        assert!(glob("*token*", "token"));
        assert!(!glob("*token*", "tokn"));
        assert!(glob("a*b", "axxb"));
        assert!(!glob("a*b", "axxbc"));
        assert!(DecisionLogConfig::default()
            .with_mask_names(vec!["**".into()])
            .is_err());
    }

    #[test]
    fn error_messages_lose_masked_values() {
        let m = Masker::default_masks();
        let input = canonical::to_bytes(
            &regorus::Value::from_json_str(r#"{"headers":{"authorization":"Bearer s\"x"},"user":{"api_token":"abc123"},"n":"abc"}"#)
                .unwrap(),
            "input",
        )
        .unwrap();
        let msg = r#"policy.rego:3:5: cannot use "Bearer s"x" and abc123 as numbers (abc stays)"#;
        let e = m.redact_error(Error::evaluation("data.a.b", msg), &input, InputForm::Plain);
        let text = e.to_string();
        assert!(
            !text.contains("Bearer") && !text.contains("abc123"),
            "{text}"
        );
        assert!(
            text.contains("abc stays") && text.contains("policy.rego:3:5"),
            "{text}"
        );
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
        let half =
            DecisionLog::new(DecisionLogConfig::new(0.5, vec![], 1, vec![]).unwrap(), "v").unwrap();
        let n = (0..10_000).filter(|_| half.sampled()).count();
        assert!((4_500..5_500).contains(&n), "{n}");
        let none =
            DecisionLog::new(DecisionLogConfig::new(0.0, vec![], 1, vec![]).unwrap(), "v").unwrap();
        assert!(!(0..1000).any(|_| none.sampled()));
    }
}
