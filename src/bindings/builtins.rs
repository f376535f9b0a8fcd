//! `regoguard.builtins()`.

use pyo3::prelude::*;

/// Every builtin function a policy can call (regorus's own and regoguard's), sorted.
#[pyfunction]
pub fn builtins() -> Vec<&'static str> {
    regoguard_core::builtins::supported()
}
