//! Thin frozen wrappers over the core's configuration types.

use pyo3::prelude::*;

use crate::cache::CacheConfig;

/// `CacheConfig(*, max_entries=100_000, ttl_seconds=60.0, deny_ttl_seconds=None)`.
#[pyclass(name = "CacheConfig", module = "regoguard._regoguard", frozen, skip_from_py_object)]
#[derive(Clone)]
pub struct PyCacheConfig {
    pub inner: CacheConfig,
    deny_ttl_given: Option<f64>,
    ttl_seconds: f64,
}

#[pymethods]
impl PyCacheConfig {
    #[new]
    #[pyo3(signature = (*, max_entries = 100_000, ttl_seconds = 60.0, deny_ttl_seconds = None))]
    fn new(max_entries: i64, ttl_seconds: f64, deny_ttl_seconds: Option<f64>) -> PyResult<Self> {
        let max = u64::try_from(max_entries)
            .map_err(|_| crate::error::Error::config(format!("max_entries must be >= 1, got {max_entries}")))?;
        let inner = CacheConfig::new(max, ttl_seconds, deny_ttl_seconds)?;
        Ok(Self { inner, deny_ttl_given: deny_ttl_seconds, ttl_seconds })
    }

    #[getter]
    fn max_entries(&self) -> u64 {
        self.inner.max_entries
    }

    #[getter]
    fn ttl_seconds(&self) -> f64 {
        self.ttl_seconds
    }

    #[getter]
    fn deny_ttl_seconds(&self) -> Option<f64> {
        self.deny_ttl_given
    }

    fn __repr__(&self) -> String {
        let deny = self.deny_ttl_given.map_or_else(|| "None".to_owned(), |d| format!("{d:?}"));
        format!(
            "CacheConfig(max_entries={}, ttl_seconds={:?}, deny_ttl_seconds={deny})",
            self.inner.max_entries, self.ttl_seconds
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Self>().is_ok_and(|o| {
            let o = o.get();
            o.inner == self.inner && o.deny_ttl_given == self.deny_ttl_given
        })
    }
}
