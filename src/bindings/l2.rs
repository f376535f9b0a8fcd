//! `RedisConfig` and the glue between the L2's tokio tasks and Python.
//!
//! Async callers never block: a Rust task on the L2 runtime does the Redis call and hands the
//! result to the caller's event loop with `loop.call_soon_threadsafe` and `_l2.resolve`
//! (`python/regoguard/_l2.py`, handed over as a hook: `hooks.rs`). The runtime is stopped from `atexit` with the GIL released, so
//! no task is left wanting the GIL while the interpreter finalises.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::errors::{IntoPyErr, IntoPyResult};
use super::hooks::hooks;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use regoguard_core::error::Error;
use regoguard_core::l2::{self, DecisionPolicy, RedisConfig, L2};

/// `RedisConfig(url, *, ttl_seconds=300.0, timeout_seconds=0.05, key_prefix="regoguard",
/// signing_key=None, channel=None, decisions="auto", ca_file=None, cert_file=None,
/// key_file=None, tls_insecure=False, heartbeat_seconds=5.0, heartbeat_misses=3)`.
#[pyclass(
    name = "RedisConfig",
    module = "regoguard._regoguard",
    frozen,
    skip_from_py_object
)]
pub struct PyRedisConfig {
    config: RedisConfig,
    ttl_seconds: f64,
    timeout_seconds: f64,
    heartbeat_seconds: f64,
    /// One client (and set of counters) per config object, built on first use.
    l2: OnceLock<Arc<L2>>,
}

impl PyRedisConfig {
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The shared client of this configuration.
    pub fn l2(&self, py: Python<'_>) -> PyResult<Arc<L2>> {
        if let Some(l2) = self.l2.get() {
            return Ok(l2.clone());
        }
        hooks(py)?.register_atexit.call0(py)?;
        let l2 = L2::new(self.config.clone()).py()?;
        Ok(self.l2.get_or_init(|| l2).clone())
    }
}

#[pymethods]
impl PyRedisConfig {
    #[new]
    #[pyo3(signature = (url, *, ttl_seconds = 300.0, timeout_seconds = 0.05, key_prefix = "regoguard",
                        signing_key = None, channel = None, decisions = "auto", ca_file = None,
                        cert_file = None, key_file = None, tls_insecure = false,
                        heartbeat_seconds = 5.0, heartbeat_misses = 3))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of the Python constructor
    fn new(
        url: &Bound<'_, PyAny>,
        ttl_seconds: f64,
        timeout_seconds: f64,
        key_prefix: &str,
        signing_key: Option<&Bound<'_, PyAny>>,
        channel: Option<&str>,
        decisions: &str,
        ca_file: Option<std::path::PathBuf>,
        cert_file: Option<std::path::PathBuf>,
        key_file: Option<std::path::PathBuf>,
        tls_insecure: bool,
        heartbeat_seconds: f64,
        heartbeat_misses: i64,
    ) -> PyResult<Self> {
        let url = url
            .cast::<PyString>()
            .map_err(|_| Error::config("url must be a str"))
            .py()?
            .to_str()?;
        let signing_key = match signing_key {
            None => None,
            Some(k) => {
                if let Ok(b) = k.cast::<PyBytes>() {
                    Some(b.as_bytes().to_vec())
                } else if let Ok(s) = k.cast::<PyString>() {
                    Some(s.to_str()?.as_bytes().to_vec())
                } else {
                    return Err(
                        Error::config("signing_key must be bytes, str or None").into_pyerr()
                    );
                }
            }
        };
        let config = RedisConfig::new(
            url,
            ttl_seconds,
            timeout_seconds,
            key_prefix,
            signing_key,
            channel,
            DecisionPolicy::parse(decisions).py()?,
        )
        .py()?;
        let path =
            |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
        let tls = l2::connect::Tls::load(
            path(&ca_file).as_deref(),
            path(&cert_file).as_deref(),
            path(&key_file).as_deref(),
            tls_insecure,
        )
        .py()?;
        let config = config
            .with_tls(tls)
            .py()?
            .with_heartbeat(
                Some(heartbeat_seconds),
                u32::try_from(heartbeat_misses)
                    .map_err(|_| {
                        Error::config(format!(
                            "heartbeat_misses must be between 1 and 100, got {heartbeat_misses}"
                        ))
                    })
                    .py()?,
            )
            .py()?;
        Ok(Self {
            config,
            ttl_seconds,
            timeout_seconds,
            heartbeat_seconds,
            l2: OnceLock::new(),
        })
    }

    /// The URL with its password replaced by `***` (the password never leaves the config).
    #[getter]
    fn url(&self) -> String {
        l2::redact_url(&self.config.url)
    }

    #[getter]
    fn ttl_seconds(&self) -> f64 {
        self.ttl_seconds
    }

    #[getter]
    fn timeout_seconds(&self) -> f64 {
        self.timeout_seconds
    }

    #[getter]
    fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }

    #[getter]
    fn signed(&self) -> bool {
        self.config.signing_key.is_some()
    }

    #[getter]
    fn channel(&self) -> &str {
        &self.config.channel
    }

    #[getter]
    fn decisions(&self) -> &'static str {
        self.config.decisions.as_str()
    }

    /// Whether the connection uses TLS (a `rediss` URL).
    #[getter]
    fn tls(&self) -> bool {
        l2::connect::Mode::parse(&self.config.url).is_ok_and(|m| m.uses_tls())
    }

    /// Whether server certificates go unverified (`tls_insecure=True`).
    #[getter]
    fn tls_insecure(&self) -> bool {
        self.config.tls.insecure
    }

    /// The heartbeat interval in seconds (0.0: off).
    #[getter]
    fn heartbeat_seconds(&self) -> f64 {
        if self.config.heartbeat.is_some() {
            self.heartbeat_seconds
        } else {
            0.0
        }
    }

    #[getter]
    fn heartbeat_misses(&self) -> u32 {
        self.config.heartbeat_misses
    }

    /// The L2 counters of every cache built with this configuration.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let l2 = self.l2(py)?;
        stats_into(&d, &l2)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "RedisConfig(url={:?}, ttl_seconds={:?}, timeout_seconds={:?}, key_prefix={:?}, signing_key={}, channel={:?}, decisions={:?}, heartbeat_seconds={:?})",
            l2::redact_url(&self.config.url),
            self.ttl_seconds,
            self.timeout_seconds,
            self.config.key_prefix,
            if self.config.signing_key.is_some() { "<set>" } else { "None" },
            self.config.channel,
            self.config.decisions.as_str(),
            self.heartbeat_seconds()
        )
    }
}

/// Writes the counters and state of `l2` into `d`.
pub fn stats_into(d: &Bound<'_, PyDict>, l2: &L2) -> PyResult<()> {
    for (name, v) in l2::snapshot(l2) {
        d.set_item(name, v)?;
    }
    d.set_item("healthy", l2.healthy())?;
    d.set_item("subscribed", l2.bus.subscribed())?;
    d.set_item("subscription_lost", l2.bus.heartbeats.is_lost())?;
    Ok(())
}

/// Stops the L2 runtime (registered with `atexit` when the first L2 is built).
#[pyfunction]
pub fn _l2_shutdown(py: Python<'_>) {
    py.detach(|| l2::shutdown(Duration::from_secs(2)));
}

/// Logs the L2's pending rate-limited warning on the `regoguard` logger.
pub fn flush_warning(py: Python<'_>, l2: &L2) {
    if let Some(message) = l2.take_warning() {
        let _ = py
            .import("logging")
            .and_then(|m| m.call_method1("getLogger", ("regoguard",)))
            .and_then(|log| log.call_method1("warning", (message,)));
    }
}

/// Hands `(found, value)` to the future `fut` on its event loop; a closed loop is ignored
/// (nobody waits any more).
pub fn resolve(
    py: Python<'_>,
    call_soon: &Py<PyAny>,
    fut: &Py<PyAny>,
    found: bool,
    value: Py<PyAny>,
) {
    if let Ok(h) = hooks(py) {
        let _ = call_soon.call1(py, (&h.resolve, fut, found, value));
    }
}

/// An awaitable that returns `value` at once (a hit never goes through the bridge).
pub fn ready<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    hooks(py)?.ready.bind(py).call1((value,))
}
