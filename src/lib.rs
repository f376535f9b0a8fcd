//! regoguard: embedded Rego authorization with a sound decision cache.
//!
//! The core is plain Rust (one module per concept); only [`bindings`] knows `PyO3`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod authorizer;
pub mod budget;
pub mod builtins;
pub mod cache;
pub mod canonical;
pub mod clock;
pub mod decision;
pub mod decision_log;
pub mod engine;
pub mod error;
pub mod eval_context;
pub mod key;
pub mod l2;
pub mod metrics;
pub mod request;
pub mod rvm_guard;
pub mod tooling;

mod bindings;

pub use authorizer::{Authorizer, AuthorizerConfig, DataSource, Decided};
pub use cache::CacheConfig;
pub use decision::{DecisionId, Outcome, Source};
pub use decision_log::DecisionLogConfig;
pub use engine::Evaluator;
pub use error::{Error, Result};

use pyo3::prelude::*;

/// The private native module; `python/regoguard/__init__.py` is the public face.
#[pymodule]
fn _regoguard(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Cargo's "0.1.0-alpha.1" becomes Python's "0.1.0a1".
    let version = env!("CARGO_PKG_VERSION")
        .replace("-alpha.", "a")
        .replace("-beta.", "b")
        .replace("-rc.", "rc");
    m.add("__version__", version)?;
    bindings::init(m)
}
