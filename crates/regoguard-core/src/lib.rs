//! regoguard's core: embedded Rego authorization with a sound decision cache.
//!
//! Plain Rust, one module per concept (ARCHITECTURE.md, "Module map"); no `PyO3`: the
//! Python extension is the `regoguard` crate at the repository root, which only translates.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod authorizer;
pub mod budget;
pub mod builtins;
pub mod bundle;
pub mod cache;
pub mod canonical;
pub mod clock;
pub mod decision;
pub mod decision_log;
pub mod engine;
pub mod error;
pub mod eval_context;
pub mod id;
pub mod identity;
pub mod key;
pub mod l2;
pub mod metrics;
pub mod pipeline;
pub mod request;
pub mod rvm_guard;
pub mod tier;
pub mod tooling;

pub use authorizer::{Authorizer, AuthorizerConfig, DataSource, Decided};
pub use cache::CacheConfig;
pub use decision::{DecisionId, Outcome, Source};
pub use decision_log::DecisionLogConfig;
pub use engine::Evaluator;
pub use error::{Error, Result};
pub use pipeline::Pipeline;
