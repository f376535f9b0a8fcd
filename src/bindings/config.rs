//! Thin frozen wrappers over the core's configuration types.

use super::errors::{IntoPyErr, IntoPyResult};
use pyo3::prelude::*;

use pyo3::types::PyDict;

use regoguard_core::cache::CacheConfig;
use regoguard_core::decision_log::{DecisionLogConfig, DEFAULT_MASK};

/// `CacheConfig(*, max_entries=100_000, ttl_seconds=60.0, deny_ttl_seconds=None)`.
#[pyclass(
    name = "CacheConfig",
    module = "regoguard._regoguard",
    frozen,
    skip_from_py_object
)]
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
            .map_err(|_| {
                regoguard_core::error::Error::config(format!(
                    "max_entries must be >= 1, got {max_entries}"
                ))
            })
            .py()?;
        let inner = CacheConfig::new(max, ttl_seconds, deny_ttl_seconds).py()?;
        Ok(Self {
            inner,
            deny_ttl_given: deny_ttl_seconds,
            ttl_seconds,
        })
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
        let deny = self
            .deny_ttl_given
            .map_or_else(|| "None".to_owned(), |d| format!("{d:?}"));
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

/// `DecisionLogConfig(*, sample_rate=1.0, mask=(...), max_queue=10_000, labels=None)`.
#[pyclass(
    name = "DecisionLogConfig",
    module = "regoguard._regoguard",
    frozen,
    skip_from_py_object
)]
#[derive(Clone)]
pub struct PyDecisionLogConfig {
    pub inner: DecisionLogConfig,
}

#[pymethods]
impl PyDecisionLogConfig {
    #[new]
    #[pyo3(signature = (*, sample_rate = 1.0, mask = None, max_queue = 10_000, labels = None, mask_names = None))]
    fn new(
        sample_rate: f64,
        mask: Option<Vec<String>>,
        max_queue: i64,
        labels: Option<&Bound<'_, PyDict>>,
        mask_names: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let mask = mask.unwrap_or_else(|| DEFAULT_MASK.iter().map(|s| (*s).to_owned()).collect());
        let max_queue = usize::try_from(max_queue)
            .map_err(|_| {
                regoguard_core::error::Error::config(format!(
                    "max_queue must be >= 1, got {max_queue}"
                ))
            })
            .py()?;
        let mut pairs = Vec::new();
        if let Some(labels) = labels {
            for (k, v) in labels.iter() {
                let (Ok(k), Ok(v)) = (k.extract::<String>(), v.extract::<String>()) else {
                    return Err(regoguard_core::error::Error::config(
                        "decision_log labels must map str to str".to_owned(),
                    )
                    .into_pyerr());
                };
                pairs.push((k, v));
            }
        }
        pairs.sort();
        let mut inner = DecisionLogConfig::new(sample_rate, mask, max_queue, pairs).py()?;
        if let Some(names) = mask_names {
            inner = inner.with_mask_names(names).py()?;
        }
        Ok(Self { inner })
    }

    #[getter]
    fn sample_rate(&self) -> f64 {
        self.inner.sample_rate
    }

    #[getter]
    fn mask(&self) -> Vec<String> {
        self.inner.mask.clone()
    }

    #[getter]
    fn mask_names(&self) -> Vec<String> {
        self.inner.mask_names.clone()
    }

    #[getter]
    fn max_queue(&self) -> usize {
        self.inner.max_queue
    }

    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.inner.labels {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "DecisionLogConfig(sample_rate={:?}, mask={:?}, max_queue={}, labels={{{}}}, mask_names={:?})",
            self.inner.sample_rate,
            self.inner.mask,
            self.inner.max_queue,
            self.inner.labels.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect::<Vec<_>>().join(", "),
            self.inner.mask_names
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Self>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }
}
