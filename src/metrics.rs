//! Counters, kept as relaxed atomics: no lock on the hot path.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::decision::Source;

/// Every counter of one authorizer.
#[derive(Debug, Default)]
pub struct Metrics {
    pub l1_hits: AtomicU64,
    pub l1_misses: AtomicU64,
    /// Misses served by another caller's in-flight evaluation (single flight).
    pub coalesced: AtomicU64,
    pub evaluations: AtomicU64,
    pub rvm_evaluations: AtomicU64,
    pub interpreter_evaluations: AtomicU64,
    pub evaluation_errors: AtomicU64,
    pub allow: AtomicU64,
    pub deny: AtomicU64,
    pub error: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
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
    pub allow: u64,
    pub deny: u64,
    pub error: u64,
    pub reloads: u64,
    pub reload_errors: u64,
}

#[inline]
fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts a finished decision.
    #[inline]
    pub fn decided(&self, allow: bool, source: Source) {
        bump(if allow { &self.allow } else { &self.deny });
        if source == Source::L1 {
            bump(&self.l1_hits);
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
        bump(if rvm { &self.rvm_evaluations } else { &self.interpreter_evaluations });
    }

    #[cold]
    pub fn failed(&self) {
        bump(&self.evaluation_errors);
        bump(&self.error);
    }

    pub fn reloaded(&self, ok: bool) {
        bump(if ok { &self.reloads } else { &self.reload_errors });
    }

    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            l1_hits: g(&self.l1_hits),
            l1_misses: g(&self.l1_misses),
            coalesced: g(&self.coalesced),
            evaluations: g(&self.evaluations),
            rvm_evaluations: g(&self.rvm_evaluations),
            interpreter_evaluations: g(&self.interpreter_evaluations),
            evaluation_errors: g(&self.evaluation_errors),
            allow: g(&self.allow),
            deny: g(&self.deny),
            error: g(&self.error),
            reloads: g(&self.reloads),
            reload_errors: g(&self.reload_errors),
        }
    }
}
