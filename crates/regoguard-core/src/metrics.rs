//! Counters and histograms, kept as relaxed atomics (no lock on the hot path), and the
//! Prometheus text exposition (format 0.0.4) of every series, rendered here and only here.
//!
//! A histogram is granian's shape: fixed bucket bounds, one atomic count per bucket and an
//! atomic sum; its total count is the sum of its buckets, so an observation costs two relaxed
//! `fetch_add`s and a short scan of the bounds.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::decision::Source;

/// Upper bounds of the decision-time buckets, in nanoseconds, with their `le` label as Go's
/// and `prometheus_client`'s formatting writes it. The last bucket (`+Inf`) is implicit.
/// An L1 hit takes about 0.5 µs, a miss 5 to 50 µs, a slow policy milliseconds.
pub const BUCKETS: [(u64, &str); 20] = [
    (250, "2.5e-07"),
    (500, "5e-07"),
    (1_000, "1e-06"),
    (2_500, "2.5e-06"),
    (5_000, "5e-06"),
    (10_000, "1e-05"),
    (25_000, "2.5e-05"),
    (50_000, "5e-05"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (1_000_000_000, "1.0"),
];

const NBUCKETS: usize = BUCKETS.len() + 1;

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    counts: [AtomicU64; NBUCKETS],
    sum_ns: AtomicU64,
}

/// A plain copy of a [`Histogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub counts: [u64; NBUCKETS],
    pub sum_ns: u64,
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, ns: u64) {
        let i = BUCKETS
            .iter()
            .position(|&(bound, _)| ns <= bound)
            .unwrap_or(BUCKETS.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0; NBUCKETS];
        for (out, c) in counts.iter_mut().zip(&self.counts) {
            *out = c.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            counts,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in seconds, interpolated linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; `None` without observations. A quantile in the
    /// `+Inf` bucket is reported as the largest finite bound.
    #[allow(clippy::cast_precision_loss)]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        let mut lower = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            let Some(&(upper, _)) = BUCKETS.get(i) else {
                return Some(BUCKETS[BUCKETS.len() - 1].0 as f64 / 1e9);
            };
            if n > 0 && (below + n) as f64 >= rank {
                let within = (rank - below as f64) / n as f64;
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e9);
            }
            below += n;
            lower = upper;
        }
        Some(BUCKETS[BUCKETS.len() - 1].0 as f64 / 1e9)
    }
}

/// Every counter of one authorizer.
#[derive(Debug, Default)]
pub struct Metrics {
    pub l1_misses: AtomicU64,
    /// Misses served by another caller's in-flight evaluation (single flight).
    pub coalesced: AtomicU64,
    pub evaluations: AtomicU64,
    pub rvm_evaluations: AtomicU64,
    pub interpreter_evaluations: AtomicU64,
    pub evaluation_errors: AtomicU64,
    /// Evaluations stopped by their time or memory budget (src/budget.rs); also errors.
    pub budget_exceeded: AtomicU64,
    /// Failed decisions (allows and denies are counted by the histograms).
    pub error: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
    /// L2 lookups of L1 misses (`check_async`, [`crate::pipeline::Pipeline::finish`]) that
    /// found a decision / found none; L2 errors are the Redis client's (shared with decorated
    /// functions), brought in when read.
    pub l2_hits: AtomicU64,
    pub l2_misses: AtomicU64,
    pub l2_errors: AtomicU64,
    /// Decision-log records queued, and dropped because the queue was full.
    pub decision_logs: AtomicU64,
    pub decision_logs_dropped: AtomicU64,
    /// Decision time by source (`[l1, l2, engine]`) and result (`[deny, allow]`). A decision
    /// is counted by its histogram alone, so a hit costs two atomic adds: its bucket and the sum.
    seconds: [[Histogram; 2]; 3],
}

/// A plain copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub l1_hits: u64,
    pub l1_misses: u64,
    pub coalesced: u64,
    pub evaluations: u64,
    pub rvm_evaluations: u64,
    pub interpreter_evaluations: u64,
    pub evaluation_errors: u64,
    pub budget_exceeded: u64,
    pub allow: u64,
    pub deny: u64,
    pub error: u64,
    pub reloads: u64,
    pub reload_errors: u64,
    pub l2_hits: u64,
    pub l2_misses: u64,
    pub l2_errors: u64,
    pub decision_logs: u64,
    pub decision_logs_dropped: u64,
    pub l1_seconds: HistogramSnapshot,
    pub l2_seconds: HistogramSnapshot,
    pub engine_seconds: HistogramSnapshot,
}

/// The index of a source in [`Metrics`]' histograms.
const fn source_index(source: Source) -> usize {
    match source {
        Source::L1 => 0,
        Source::L2 => 1,
        Source::Engine => 2,
    }
}

impl HistogramSnapshot {
    fn merge(&self, other: &Self) -> Self {
        let mut counts = self.counts;
        for (c, o) in counts.iter_mut().zip(other.counts) {
            *c += o;
        }
        Self {
            counts,
            sum_ns: self.sum_ns + other.sum_ns,
        }
    }
}

impl Snapshot {
    /// `l1_hits / (l1_hits + l1_misses)`, 0 before any lookup.
    #[allow(clippy::cast_precision_loss)]
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.l1_hits + self.l1_misses;
        if lookups == 0 {
            0.0
        } else {
            self.l1_hits as f64 / lookups as f64
        }
    }

    pub fn seconds(&self, source: Source) -> &HistogramSnapshot {
        match source {
            Source::L1 => &self.l1_seconds,
            Source::L2 => &self.l2_seconds,
            Source::Engine => &self.engine_seconds,
        }
    }
}

#[inline]
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a finished decision and how long it took.
    #[inline]
    pub fn decided(&self, allow: bool, source: Source, ns: u64) {
        if let Some(by_result) = self.seconds.get(source_index(source)) {
            by_result[usize::from(allow)].observe(ns);
        }
    }

    #[inline]
    pub fn miss(&self) {
        bump(&self.l1_misses);
    }

    #[inline]
    pub fn coalesced(&self) {
        bump(&self.coalesced);
    }

    #[inline]
    pub fn evaluated(&self, rvm: bool) {
        bump(&self.evaluations);
        bump(if rvm {
            &self.rvm_evaluations
        } else {
            &self.interpreter_evaluations
        });
    }

    #[cold]
    pub fn failed(&self) {
        bump(&self.evaluation_errors);
        bump(&self.error);
    }

    pub fn reloaded(&self, ok: bool) {
        bump(if ok {
            &self.reloads
        } else {
            &self.reload_errors
        });
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by = |source: Source| {
            let [deny, allow] = &self.seconds[source_index(source)];
            (deny.snapshot(), allow.snapshot())
        };
        let (l1, l2, engine) = (by(Source::L1), by(Source::L2), by(Source::Engine));
        let allow = l1.1.count() + l2.1.count() + engine.1.count();
        let deny = l1.0.count() + l2.0.count() + engine.0.count();
        let l1_seconds = l1.0.merge(&l1.1);
        Snapshot {
            l1_hits: l1_seconds.count(),
            l1_misses: g(&self.l1_misses),
            coalesced: g(&self.coalesced),
            evaluations: g(&self.evaluations),
            rvm_evaluations: g(&self.rvm_evaluations),
            interpreter_evaluations: g(&self.interpreter_evaluations),
            evaluation_errors: g(&self.evaluation_errors),
            budget_exceeded: g(&self.budget_exceeded),
            allow,
            deny,
            error: g(&self.error),
            reloads: g(&self.reloads),
            reload_errors: g(&self.reload_errors),
            l2_hits: g(&self.l2_hits),
            l2_misses: g(&self.l2_misses),
            l2_errors: g(&self.l2_errors),
            decision_logs: g(&self.decision_logs),
            decision_logs_dropped: g(&self.decision_logs_dropped),
            l1_seconds,
            l2_seconds: l2.0.merge(&l2.1),
            engine_seconds: engine.0.merge(&engine.1),
        }
    }
}

/// What the exposition shows of one authorizer.
#[derive(Debug, Clone)]
pub struct AuthorizerSample {
    /// The `authorizer` label (its entrypoint) when several authorizers share one exposition.
    pub label: Option<String>,
    pub counters: Snapshot,
    pub entries: u64,
    pub max_entries: u64,
    pub revision: String,
    /// The bundles of the revision in force (`regoguard_bundle_*`); empty without.
    pub bundles: std::sync::Arc<[crate::bundle::info::BundleInfo]>,
}

/// What the exposition shows of one `@cached_authorization` cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSample {
    /// The function's `module.qualname`: the `cache` label.
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
    pub max_entries: u64,
}

/// A cache that can report a [`CacheSample`] (the result caches of the bindings).
pub trait CacheSource: Send + Sync {
    fn sample(&self) -> CacheSample;
}

static CACHES: Mutex<Vec<Weak<dyn CacheSource>>> = Mutex::new(Vec::new());

/// Bearer tokens `JWTIdentity` refused, by reason, in the order of
/// [`TOKEN_REJECTION_REASONS`] (process-wide: an identity serves any authorizer).
pub static TOKEN_REJECTIONS: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];

/// The `reason` labels of `regoguard_token_rejections_total`, in the order of `identity.rs`'s
/// `Rejection` variants (a test there checks it).
pub const TOKEN_REJECTION_REASONS: [&str; 11] = [
    "missing",
    "malformed",
    "too_large",
    "algorithm",
    "unknown_kid",
    "signature",
    "issuer",
    "audience",
    "expired",
    "not_yet_valid",
    "no_keys",
];

/// Registers a function cache for [`live_caches`]; it leaves when its last `Arc` is dropped.
pub fn register_cache(cache: &Arc<dyn CacheSource>) {
    let mut caches = CACHES.lock();
    caches.retain(|c| c.strong_count() > 0);
    caches.push(Arc::downgrade(cache));
}

/// Samples of every live function cache, merged by name (two live functions with one
/// `module.qualname`, such as closures made by one factory, share a series), sorted by name.
pub fn live_caches() -> Vec<CacheSample> {
    let live: Vec<Arc<dyn CacheSource>> = CACHES.lock().iter().filter_map(Weak::upgrade).collect();
    let mut merged: Vec<CacheSample> = Vec::new();
    for s in live.iter().map(|c| c.sample()) {
        if s.name.is_empty() {
            continue; // the decorator's throw-away validation instance
        }
        match merged.iter_mut().find(|m| m.name == s.name) {
            Some(m) => {
                m.hits += s.hits;
                m.misses += s.misses;
                m.entries += s.entries;
                m.max_entries += s.max_entries;
            }
            None => merged.push(s),
        }
    }
    merged.sort_by(|a, b| a.name.cmp(&b.name));
    merged
}

/// Writes a label value escaped as the text format requires.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One exposition being written, family by family.
struct Text {
    out: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// One sample per authorizer, with its `authorizer` label (if any) before `extra`.
    fn per_authorizer<V: std::fmt::Display>(
        &mut self,
        name: &str,
        authorizers: &[AuthorizerSample],
        extra: &[(&str, &str)],
        value: impl Fn(&AuthorizerSample) -> V,
    ) {
        for a in authorizers {
            let mut labels: Vec<(&str, &str)> = Vec::with_capacity(extra.len() + 1);
            if let Some(l) = &a.label {
                labels.push(("authorizer", l));
            }
            labels.extend_from_slice(extra);
            self.sample(name, &labels, value(a));
        }
    }
}

fn seconds(ns: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = ns as f64 / 1e9;
    s
}

/// The `regoguard_decision_duration_seconds` histogram samples, per source and authorizer.
fn durations(t: &mut Text, auth: &[AuthorizerSample]) {
    for source in [Source::L1, Source::L2, Source::Engine] {
        for a in auth {
            let h = a.counters.seconds(source);
            let mut labels: Vec<(&str, &str)> = Vec::with_capacity(3);
            if let Some(l) = &a.label {
                labels.push(("authorizer", l));
            }
            labels.push(("source", source.as_str()));
            let mut cumulative = 0;
            for (i, &(_, le)) in BUCKETS.iter().enumerate() {
                cumulative += h.counts[i];
                let mut l = labels.clone();
                l.push(("le", le));
                t.sample("regoguard_decision_duration_seconds_bucket", &l, cumulative);
            }
            let mut l = labels.clone();
            l.push(("le", "+Inf"));
            t.sample("regoguard_decision_duration_seconds_bucket", &l, h.count());
            t.sample(
                "regoguard_decision_duration_seconds_sum",
                &labels,
                seconds(h.sum_ns),
            );
            t.sample(
                "regoguard_decision_duration_seconds_count",
                &labels,
                h.count(),
            );
        }
    }
}

/// The Prometheus text exposition (format 0.0.4) of `authorizers` and `caches`.
///
/// Every family has `# HELP` and `# TYPE` lines and the `regoguard_` prefix; labels come from
/// fixed sets (`result`, `layer`, `source`, `evaluator`, `le`) or from configuration (the
/// revision, an authorizer's entrypoint, a function's `module.qualname`), never from an input.
pub fn render(authorizers: &[AuthorizerSample], caches: &[CacheSample]) -> String {
    let mut t = Text {
        out: String::with_capacity(4096),
    };
    let auth = authorizers;

    t.family(
        "regoguard_decisions_total",
        "counter",
        "Decisions made, by result (error: the policy failed; a denial).",
    );
    for (result, get) in [
        ("allow", (|s: &Snapshot| s.allow) as fn(&Snapshot) -> u64),
        ("deny", |s| s.deny),
        ("error", |s| s.error),
    ] {
        t.per_authorizer(
            "regoguard_decisions_total",
            auth,
            &[("result", result)],
            |a| get(&a.counters),
        );
    }

    t.family(
        "regoguard_cache_hits_total",
        "counter",
        "Decisions (or @cached_authorization results) served from a cache layer.",
    );
    t.per_authorizer(
        "regoguard_cache_hits_total",
        auth,
        &[("layer", "l1")],
        |a| a.counters.l1_hits,
    );
    t.per_authorizer(
        "regoguard_cache_hits_total",
        auth,
        &[("layer", "l2")],
        |a| a.counters.l2_hits,
    );
    for c in caches {
        t.sample(
            "regoguard_cache_hits_total",
            &[("cache", &c.name), ("layer", "l1")],
            c.hits,
        );
    }

    t.family(
        "regoguard_cache_misses_total",
        "counter",
        "Lookups that found nothing in the in-process cache (a wait for a concurrent evaluation of the same key included).",
    );
    t.per_authorizer("regoguard_cache_misses_total", auth, &[], |a| {
        a.counters.l1_misses
    });
    for c in caches {
        t.sample(
            "regoguard_cache_misses_total",
            &[("cache", &c.name)],
            c.misses,
        );
    }

    t.family(
        "regoguard_cache_entries",
        "gauge",
        "Entries held by the in-process cache (expired ones until read or evicted).",
    );
    t.per_authorizer("regoguard_cache_entries", auth, &[], |a| a.entries);
    for c in caches {
        t.sample("regoguard_cache_entries", &[("cache", &c.name)], c.entries);
    }

    t.family(
        "regoguard_cache_max_entries",
        "gauge",
        "Capacity of the in-process cache (0: caching disabled).",
    );
    t.per_authorizer("regoguard_cache_max_entries", auth, &[], |a| a.max_entries);
    for c in caches {
        t.sample(
            "regoguard_cache_max_entries",
            &[("cache", &c.name)],
            c.max_entries,
        );
    }

    t.family(
        "regoguard_cache_hit_ratio",
        "gauge",
        "Hits / (hits + misses) of the in-process cache since start.",
    );
    t.per_authorizer("regoguard_cache_hit_ratio", auth, &[], |a| {
        a.counters.hit_ratio()
    });
    for c in caches {
        #[allow(clippy::cast_precision_loss)]
        let ratio = if c.hits + c.misses == 0 {
            0.0
        } else {
            c.hits as f64 / (c.hits + c.misses) as f64
        };
        t.sample("regoguard_cache_hit_ratio", &[("cache", &c.name)], ratio);
    }

    t.family(
        "regoguard_evaluations_total",
        "counter",
        "Policy evaluations (what used to be calls to a PDP), by evaluator.",
    );
    t.per_authorizer(
        "regoguard_evaluations_total",
        auth,
        &[("evaluator", "rvm")],
        |a| a.counters.rvm_evaluations,
    );
    t.per_authorizer(
        "regoguard_evaluations_total",
        auth,
        &[("evaluator", "interpreter")],
        |a| a.counters.interpreter_evaluations,
    );

    t.family(
        "regoguard_evaluation_errors_total",
        "counter",
        "Evaluations that failed (answered as error decisions, never cached).",
    );
    t.per_authorizer("regoguard_evaluation_errors_total", auth, &[], |a| {
        a.counters.evaluation_errors
    });

    t.family(
        "regoguard_eval_budget_exceeded_total",
        "counter",
        "Evaluations stopped by their time or memory budget (also counted as evaluation errors).",
    );
    t.per_authorizer("regoguard_eval_budget_exceeded_total", auth, &[], |a| {
        a.counters.budget_exceeded
    });

    t.family(
        "regoguard_decision_duration_seconds",
        "histogram",
        "Time to decide, by where the decision came from (failed decisions are not timed).",
    );
    durations(&mut t, auth);

    t.family(
        "regoguard_l2_errors_total",
        "counter",
        "Redis (L2) errors and timeouts, each served as a miss.",
    );
    t.per_authorizer("regoguard_l2_errors_total", auth, &[], |a| {
        a.counters.l2_errors
    });

    t.family(
        "regoguard_reloads_total",
        "counter",
        "Successful reload() calls.",
    );
    t.per_authorizer("regoguard_reloads_total", auth, &[], |a| a.counters.reloads);

    t.family(
        "regoguard_reload_errors_total",
        "counter",
        "Failed reload() calls (the previous revision kept serving).",
    );
    t.per_authorizer("regoguard_reload_errors_total", auth, &[], |a| {
        a.counters.reload_errors
    });

    t.family(
        "regoguard_decision_logs_total",
        "counter",
        "Decision-log records queued (after sampling).",
    );
    t.per_authorizer("regoguard_decision_logs_total", auth, &[], |a| {
        a.counters.decision_logs
    });

    t.family(
        "regoguard_decision_logs_dropped_total",
        "counter",
        "Decision-log records dropped because the queue was full (a slow log handler).",
    );
    t.per_authorizer("regoguard_decision_logs_dropped_total", auth, &[], |a| {
        a.counters.decision_logs_dropped
    });

    t.family(
        "regoguard_policy_info",
        "gauge",
        "The policy and data revision in force (value 1).",
    );
    for a in auth {
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(2);
        if let Some(l) = &a.label {
            labels.push(("authorizer", l));
        }
        labels.push(("revision", &a.revision));
        t.sample("regoguard_policy_info", &labels, 1);
    }
    bundles(&mut t, auth);

    t.family(
        "regoguard_token_rejections_total",
        "counter",
        "Bearer tokens JWTIdentity refused (401), by reason.",
    );
    for (reason, n) in TOKEN_REJECTION_REASONS.iter().zip(&TOKEN_REJECTIONS) {
        t.sample(
            "regoguard_token_rejections_total",
            &[("reason", reason)],
            n.load(Ordering::Relaxed),
        );
    }
    t.out
}

/// The `regoguard_bundle_*` families (OPA's bundle metrics, README "Bundles"), labelled by
/// bundle name; absent when no authorizer has a bundle.
fn bundles(t: &mut Text, auth: &[AuthorizerSample]) {
    use std::sync::atomic::Ordering::Relaxed;
    if auth.iter().all(|a| a.bundles.is_empty()) {
        return;
    }
    let each =
        |t: &mut Text, name: &str, value: &dyn Fn(&crate::bundle::info::BundleInfo) -> String| {
            for a in auth {
                for b in a.bundles.iter() {
                    let mut labels: Vec<(&str, &str)> = Vec::with_capacity(2);
                    if let Some(l) = &a.label {
                        labels.push(("authorizer", l));
                    }
                    labels.push(("name", &b.name));
                    t.sample(name, &labels, value(b));
                }
            }
        };
    t.family(
        "regoguard_bundle_loaded_total",
        "counter",
        "Bundle versions activated (the first load included).",
    );
    each(t, "regoguard_bundle_loaded_total", &|b| {
        b.status.loaded.load(Relaxed).to_string()
    });
    t.family(
        "regoguard_bundle_failed_total",
        "counter",
        "Bundle downloads or activations that failed (the last good bundle kept serving).",
    );
    each(t, "regoguard_bundle_failed_total", &|b| {
        b.status.failed.load(Relaxed).to_string()
    });
    t.family(
        "regoguard_bundle_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful bundle check (activated, or 304 Not Modified).",
    );
    each(t, "regoguard_bundle_last_success_timestamp_seconds", &|b| {
        seconds(b.status.last_success_unix_ns.load(Relaxed)).to_string()
    });
    t.family(
        "regoguard_bundle_loading_seconds",
        "histogram",
        "Time to download, verify, compile and activate a bundle version.",
    );
    for a in auth {
        for b in a.bundles.iter() {
            let (counts, sum_ns) = b.status.loading.cumulative();
            let mut labels: Vec<(&str, &str)> = Vec::with_capacity(3);
            if let Some(l) = &a.label {
                labels.push(("authorizer", l));
            }
            labels.push(("name", &b.name));
            for (i, (_, le)) in crate::bundle::info::LOADING_BUCKETS.iter().enumerate() {
                let mut l = labels.clone();
                l.push(("le", le));
                t.sample("regoguard_bundle_loading_seconds_bucket", &l, counts[i]);
            }
            let total = counts.last().copied().unwrap_or(0);
            let mut l = labels.clone();
            l.push(("le", "+Inf"));
            t.sample("regoguard_bundle_loading_seconds_bucket", &l, total);
            t.sample(
                "regoguard_bundle_loading_seconds_sum",
                &labels,
                seconds(sum_ns),
            );
            t.sample("regoguard_bundle_loading_seconds_count", &labels, total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..99 {
            h.observe(400); // (250, 500]
        }
        h.observe(2_000_000_000); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.counts[1], 99);
        assert_eq!(s.counts[NBUCKETS - 1], 1);
        assert_eq!(s.sum_ns, 99 * 400 + 2_000_000_000);
        let p50 = s.quantile(0.5).unwrap();
        assert!(p50 > 250e-9 && p50 <= 500e-9, "{p50}");
        assert_eq!(s.quantile(1.0), Some(1.0));
    }

    #[test]
    fn bounds_are_increasing_and_labels_match() {
        for w in BUCKETS.windows(2) {
            assert!(w[0].0 < w[1].0);
        }
        for (ns, le) in BUCKETS {
            let v: f64 = le.parse().unwrap();
            assert!(
                (v * 1e9 - f64::from(u32::try_from(ns).unwrap())).abs() < 1e-3,
                "{le}"
            );
        }
    }

    fn sample(label: Option<&str>) -> AuthorizerSample {
        let m = Metrics::default();
        m.decided(true, Source::L1, 300);
        m.decided(false, Source::Engine, 7000);
        m.miss();
        m.evaluated(true);
        AuthorizerSample {
            label: label.map(str::to_owned),
            counters: m.snapshot(),
            entries: 1,
            max_entries: 10,
            revision: "abc".into(),
            bundles: std::sync::Arc::from([]),
        }
    }

    #[test]
    fn exposition_has_every_family_once_with_help_and_type() {
        let caches = [CacheSample {
            name: "m.f\"x".into(),
            hits: 2,
            misses: 1,
            entries: 1,
            max_entries: 5,
        }];
        let text = render(&[sample(None)], &caches);
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP regoguard_")
                    || line.starts_with("# TYPE regoguard_")
                    || line.starts_with("regoguard_"),
                "{line}"
            );
        }
        assert_eq!(
            text.matches("# TYPE regoguard_decisions_total counter")
                .count(),
            1
        );
        assert!(text.contains("regoguard_decisions_total{result=\"allow\"} 1\n"));
        assert!(text.contains("regoguard_cache_hits_total{layer=\"l1\"} 1\n"));
        assert!(text.contains("regoguard_cache_hits_total{cache=\"m.f\\\"x\",layer=\"l1\"} 2\n"));
        assert!(text.contains(
            "regoguard_decision_duration_seconds_bucket{source=\"l1\",le=\"2.5e-07\"} 0\n"
        ));
        assert!(text.contains(
            "regoguard_decision_duration_seconds_bucket{source=\"l1\",le=\"5e-07\"} 1\n"
        ));
        assert!(text.contains("regoguard_decision_duration_seconds_count{source=\"engine\"} 1\n"));
        assert!(text.contains("regoguard_policy_info{revision=\"abc\"} 1\n"));
        let two = render(
            &[sample(Some("data.a.allow")), sample(Some("data.b.allow"))],
            &[],
        );
        assert!(two.contains(
            "regoguard_decisions_total{authorizer=\"data.b.allow\",result=\"deny\"} 1\n"
        ));
        assert_eq!(two.matches("# TYPE regoguard_decisions_total").count(), 1);
    }
}
