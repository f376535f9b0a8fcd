//! The Python extension `regoguard._regoguard`: `PyO3` bindings over `regoguard-core`.
//!
//! Everything here translates between Python objects and the core's types; decisions, caches
//! and policies live in the core crate (ARCHITECTURE.md, "Module map").
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod bindings;

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
