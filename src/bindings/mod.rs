//! Everything that knows `PyO3`: classes, exceptions and conversions.

mod authorizer;
mod builtins;
mod bundle;
mod config;
mod convert;
mod errors;
mod gate;
mod hooks;
mod identity;
mod l2;
mod request;
mod result_cache;
mod tooling;

use pyo3::prelude::*;

/// Registers the classes and exceptions on the native module.
pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::init(m)?;
    m.add_function(wrap_pyfunction!(hooks::install, m)?)?;
    m.add_class::<config::PyCacheConfig>()?;
    m.add_class::<config::PyDecisionLogConfig>()?;
    m.add_class::<l2::PyRedisConfig>()?;
    m.add_class::<authorizer::PyPendingDecision>()?;
    m.add_function(wrap_pyfunction!(l2::_l2_shutdown, m)?)?;
    m.add_class::<authorizer::PyAuthorizer>()?;
    m.add_class::<bundle::PyBundle>()?;
    m.add_class::<authorizer::PyDecision>()?;
    m.add_class::<request::PyRequestSpec>()?;
    m.add_class::<gate::PyGate>()?;
    m.add_class::<identity::PyJWTIdentity>()?;
    m.add_class::<identity::PyVerifiedToken>()?;
    m.add_function(wrap_pyfunction!(authorizer::build_request_input, m)?)?;
    m.add_function(wrap_pyfunction!(authorizer::render_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(authorizer::drain_decision_logs, m)?)?;
    m.add_class::<result_cache::PyResultCache>()?;
    m.add_class::<result_cache::PyCacheMiss>()?;
    m.add_function(wrap_pyfunction!(result_cache::canonical_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(builtins::builtins, m)?)?;
    m.add_class::<tooling::PyWorkspace>()?;
    m.add("MAX_INPUT_DEPTH", regoguard_core::canonical::MAX_DEPTH)?;
    Ok(())
}
