//! What a revision, the metrics and the decision log know of a bundle: its name, revision and
//! health. A leaf of the module graph, so the engine, the metrics and the decision log depend
//! on it without depending on the loader (ARCHITECTURE.md, "Module map").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// What a revision knows of one bundle: shown by `Authorizer.bundles`, decision logs and metrics.
#[derive(Clone, Debug)]
pub struct BundleInfo {
    pub name: Arc<str>,
    pub revision: Arc<str>,
    pub roots: Vec<String>,
    pub metadata: Option<serde_json::Value>,
    pub source: String,
    pub status: Arc<Status>,
}

/// A bundle's health, shared by every revision and read by the metrics without a lock.
#[derive(Debug, Default)]
pub struct Status {
    pub loaded: AtomicU64,
    pub failed: AtomicU64,
    /// Unix ns of the last successful download-and-activation or not-modified answer; 0: never.
    pub last_success_unix_ns: AtomicU64,
    /// Activation durations (download, verification, compilation, swap).
    pub loading: LoadingHistogram,
    /// The last failure's message, cleared by a success.
    pub last_error: parking_lot::Mutex<Option<String>>,
    /// The `ETag` of the bundle in force (remote bundles).
    pub etag: parking_lot::Mutex<Option<String>>,
}

impl Status {
    pub fn succeeded(&self) {
        self.last_success_unix_ns
            .store(crate::clock::unix_ns(), Ordering::Relaxed);
        *self.last_error.lock() = None;
    }

    pub fn activated(&self, took: Duration) {
        self.loaded.fetch_add(1, Ordering::Relaxed);
        self.loading.observe(took);
        self.succeeded();
    }

    pub fn failed(&self, e: &Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock() = Some(e.to_string());
    }
}

/// Upper bounds (seconds) of `regoguard_bundle_loading_seconds`.
pub const LOADING_BUCKETS: [(f64, &str); 10] = [
    (0.001, "0.001"),
    (0.01, "0.01"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.5, "0.5"),
    (1.0, "1.0"),
    (2.5, "2.5"),
    (5.0, "5.0"),
    (10.0, "10.0"),
    (60.0, "60.0"),
];

/// A fixed-bucket histogram of activation durations.
#[derive(Debug, Default)]
pub struct LoadingHistogram {
    counts: [AtomicU64; LOADING_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl LoadingHistogram {
    pub(crate) fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        let i = LOADING_BUCKETS
            .iter()
            .position(|&(b, _)| s <= b)
            .unwrap_or(LOADING_BUCKETS.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bucket (the last is `+Inf`, the total) and the sum in ns.
    pub fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut total = 0;
        let counts = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        (counts, self.sum_ns.load(Ordering::Relaxed))
    }
}

/// OPA's decision-log field: `{name: {"revision": ...}}`.
pub fn log_field(infos: &[BundleInfo]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for i in infos {
        let mut b = serde_json::Map::new();
        b.insert("revision".into(), serde_json::Value::from(&*i.revision));
        m.insert(i.name.to_string(), serde_json::Value::Object(b));
    }
    serde_json::Value::Object(m)
}

/// Mixes the bundles' names and revisions into a revision digest, so a new manifest revision
/// is a new revision even when the files are byte-identical, and the revision a decision was
/// cached under names the bundle revisions it reports.
pub fn revision_digest(digest: &[u8; 32], infos: &[BundleInfo]) -> [u8; 32] {
    if infos.is_empty() {
        return *digest;
    }
    let mut h = blake3::Hasher::new();
    h.update(b"regoguard/revision/bundles/v1\0");
    h.update(digest);
    for i in infos {
        h.update(&(i.name.len() as u64).to_le_bytes());
        h.update(i.name.as_bytes());
        h.update(&(i.revision.len() as u64).to_le_bytes());
        h.update(i.revision.as_bytes());
    }
    *h.finalize().as_bytes()
}
