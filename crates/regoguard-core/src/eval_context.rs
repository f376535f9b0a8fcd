//! What one evaluation learned about the moment it ran in.
//!
//! Caching rule 8 (ARCHITECTURE.md, "Caching rules"): a decision that depended on the moment
//! (the clock, randomness, the network, a token's `exp`/`nbf`) is never served after the moment
//! it could change. Builtins report that here, on the evaluating thread, and the authorizer
//! reads it when it decides how long the outcome may be cached:
//!
//! - [`now_unix_ns`]: the evaluation's clock. One instant per evaluation, as OPA's
//!   `time.now_ns()` is constant within a query, so a token's `exp` is checked against the same
//!   moment the policy reads.
//! - [`valid_until`]: the outcome holds until this wall-clock instant (a token's `exp`, or its
//!   `nbf` for a "not yet valid" answer); the earliest one reported wins.
//! - [`volatile`]: the outcome may differ on the next evaluation (randomness, the network); it
//!   is not cached unless the policy itself bounds it with `cache_ttl_seconds`.
//!
//! An evaluation is bracketed by [`Scope::begin`] and [`Scope::finish`]; a builtin called
//! outside any scope (a unit test, a direct call) reads the wall clock and reports to nobody.

use std::cell::Cell;

use crate::clock;

/// How long the outcome of one evaluation stays true, as its builtins reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Validity {
    /// A builtin whose result may differ on the next call was used.
    pub volatile: bool,
    /// The outcome holds until this wall-clock instant (Unix nanoseconds), if any bound it.
    pub until_unix_ns: Option<u64>,
}

impl Validity {
    /// Nothing time-dependent was reported.
    pub const STABLE: Validity = Validity {
        volatile: false,
        until_unix_ns: None,
    };

    /// Whether the outcome may be cached at all at `now_unix_ns` (ignoring the policy's own
    /// `cache_ttl_seconds`, which the caller applies).
    pub fn cacheable_at(&self, now_unix_ns: u64) -> bool {
        !self.volatile && self.until_unix_ns.is_none_or(|u| u > now_unix_ns)
    }
}

#[derive(Clone, Copy)]
struct State {
    now_unix_ns: u64,
    validity: Validity,
}

thread_local! {
    static CURRENT: Cell<Option<State>> = const { Cell::new(None) };
}

/// One evaluation's bracket. Nested scopes (an evaluation inside a builtin) save and restore
/// the outer one.
#[must_use = "finish the scope to read what the evaluation reported"]
pub struct Scope {
    outer: Option<State>,
    done: bool,
}

impl Scope {
    /// Starts an evaluation at the current wall-clock instant.
    pub fn begin() -> Self {
        Self::begin_at(clock::unix_ns())
    }

    /// Starts an evaluation whose clock reads `now_unix_ns` (tests, replays).
    pub fn begin_at(now_unix_ns: u64) -> Self {
        let outer = CURRENT.with(|c| {
            c.replace(Some(State {
                now_unix_ns,
                validity: Validity::STABLE,
            }))
        });
        Scope { outer, done: false }
    }

    /// Ends the evaluation and returns what its builtins reported.
    pub fn finish(mut self) -> Validity {
        self.done = true;
        let mine = CURRENT.with(|c| c.replace(self.outer));
        mine.map_or(Validity::STABLE, |s| s.validity)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.done {
            CURRENT.with(|c| c.set(self.outer));
        }
    }
}

/// The evaluation's clock (Unix nanoseconds): fixed for the whole evaluation.
pub fn now_unix_ns() -> u64 {
    CURRENT
        .with(Cell::get)
        .map_or_else(clock::unix_ns, |s| s.now_unix_ns)
}

/// The outcome being computed holds no later than `unix_ns`.
pub fn valid_until(unix_ns: u64) {
    update(|v| v.until_unix_ns = Some(v.until_unix_ns.map_or(unix_ns, |u| u.min(unix_ns))));
}

/// The outcome being computed may differ on the next evaluation.
pub fn volatile() {
    update(|v| v.volatile = true);
}

fn update(f: impl FnOnce(&mut Validity)) {
    CURRENT.with(|c| {
        if let Some(mut s) = c.get() {
            f(&mut s.validity);
            c.set(Some(s));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_reach_the_scope_and_the_earliest_bound_wins() {
        let scope = Scope::begin_at(1_000);
        assert_eq!(now_unix_ns(), 1_000);
        valid_until(5_000);
        valid_until(3_000);
        valid_until(9_000);
        let v = scope.finish();
        assert_eq!(
            v,
            Validity {
                volatile: false,
                until_unix_ns: Some(3_000)
            }
        );
        assert!(v.cacheable_at(2_999));
        assert!(!v.cacheable_at(3_000));
    }

    #[test]
    fn volatile_is_never_cacheable() {
        let scope = Scope::begin();
        volatile();
        assert!(!scope.finish().cacheable_at(0));
    }

    #[test]
    fn nested_scopes_restore_the_outer_one_and_outside_reports_go_nowhere() {
        valid_until(1); // no scope: ignored
        let outer = Scope::begin_at(10);
        let inner = Scope::begin_at(20);
        assert_eq!(now_unix_ns(), 20);
        volatile();
        assert!(inner.finish().volatile);
        assert_eq!(now_unix_ns(), 10);
        let v = outer.finish();
        assert_eq!(v, Validity::STABLE);
        // A dropped (panicked-through) scope restores too.
        {
            let _s = Scope::begin_at(30);
        }
        assert!(CURRENT.with(Cell::get).is_none());
    }
}
