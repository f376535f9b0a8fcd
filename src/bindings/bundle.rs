//! `Bundle` for Python: a frozen wrapper over the core's `BundleConfig`, and the
//! `Authorizer.bundles` view of a revision's bundles.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::convert::fs_path;
use super::errors::{IntoPyErr, IntoPyResult};
use regoguard_core::bundle::{BundleConfig, Location, Verification, DEFAULT_MAX_BYTES};
use regoguard_core::engine::Compiled;
use regoguard_core::error::{Error, Result};

// The signature default below is a literal (stubtest reads it); it must stay the core's.
const _: () = assert!(DEFAULT_MAX_BYTES == 268_435_456);

/// `Bundle(source, *, name=None, verification_key=None, key_id=None, scope=None, headers=None,
/// poll_min_seconds=60.0, poll_max_seconds=120.0, persist_dir=None, timeout_seconds=10.0,
/// max_bytes=268435456)`. See `_regoguard.pyi`.
#[pyclass(
    name = "Bundle",
    module = "regoguard._regoguard",
    frozen,
    skip_from_py_object
)]
pub struct PyBundle {
    pub config: Arc<BundleConfig>,
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    if s.is_finite() && s > 0.0 && s < 1e9 {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(Error::config(format!(
            "{what} must be a positive number of seconds, got {s}"
        )))
    }
}

/// A path argument (`str` or `os.PathLike`); anything else is a `ConfigError`.
fn config_path(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    fs_path(obj, what, |m| Error::config(m).into_pyerr())
}

#[pymethods]
impl PyBundle {
    #[new]
    #[pyo3(signature = (source, *, name = None, verification_key = None, key_id = None,
                        scope = None, headers = None, poll_min_seconds = 60.0,
                        poll_max_seconds = 120.0, persist_dir = None, timeout_seconds = 10.0,
                        max_bytes = 268_435_456))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        source: &Bound<'_, PyAny>,
        name: Option<String>,
        verification_key: Option<String>,
        key_id: Option<String>,
        scope: Option<String>,
        headers: Option<std::collections::BTreeMap<String, String>>,
        poll_min_seconds: f64,
        poll_max_seconds: f64,
        persist_dir: Option<&Bound<'_, PyAny>>,
        timeout_seconds: f64,
        max_bytes: u64,
    ) -> PyResult<Self> {
        let source = config_path(source, "source")?;
        let mut c = BundleConfig::new(&source).py()?;
        if let Some(n) = name {
            if n.is_empty() {
                return Err(Error::config("name must not be empty")).py();
            }
            c.name = n;
        }
        if (key_id.is_some() || scope.is_some()) && verification_key.is_none() {
            return Err(Error::config("key_id and scope need a verification_key")).py();
        }
        if let Some(k) = verification_key {
            c.verification = Some(Verification::new(&k, key_id, scope).py()?);
        }
        for (k, v) in headers.unwrap_or_default() {
            let bad = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
            if k.is_empty() || bad(&k) || bad(&v) || k.contains(':') {
                return Err(Error::config(format!("headers: invalid header {k:?}"))).py();
            }
            c.headers.push((k, v));
        }
        c.poll_min = seconds("poll_min_seconds", poll_min_seconds).py()?;
        c.poll_max = seconds("poll_max_seconds", poll_max_seconds).py()?;
        if c.poll_max < c.poll_min {
            return Err(Error::config(format!(
                "poll_max_seconds ({poll_max_seconds}) must be >= poll_min_seconds ({poll_min_seconds})"
            )))
            .py();
        }
        c.timeout = seconds("timeout_seconds", timeout_seconds).py()?;
        if max_bytes == 0 {
            return Err(Error::config("max_bytes must be >= 1")).py();
        }
        c.max_bytes = max_bytes;
        if let Some(d) = persist_dir {
            if !d.is_none() {
                if matches!(c.location, Location::Path(_)) {
                    return Err(Error::config(
                        "persist_dir is for remote bundles: a local bundle is its own copy",
                    ))
                    .py();
                }
                c.persist_dir = Some(PathBuf::from(config_path(d, "persist_dir")?));
            }
        }
        Ok(Self {
            config: Arc::new(c),
        })
    }

    /// The bundle's name (decision logs, metrics, `Authorizer.bundles`).
    #[getter]
    fn name(&self) -> &str {
        &self.config.name
    }

    /// The path or URL (without its query).
    #[getter]
    fn source(&self) -> String {
        self.config.source()
    }

    /// Whether the bundle is downloaded and polled (an HTTP(S) source).
    #[getter]
    fn remote(&self) -> bool {
        matches!(self.config.location, Location::Url(_))
    }

    /// Whether a signature is required.
    #[getter]
    fn verified(&self) -> bool {
        self.config.verification.is_some()
    }

    fn __repr__(&self) -> String {
        // Never the key or the headers: they are secrets.
        format!(
            "Bundle({:?}, name={:?}, verified={})",
            self.config.source(),
            self.config.name,
            if self.config.verification.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}

/// `Authorizer.bundles`: `{name: {revision, roots, metadata, source, etag, loaded, failed,
/// last_success, last_error}}` of the revision in force.
pub fn bundles_dict<'py>(py: Python<'py>, compiled: &Compiled) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for b in compiled.revision.bundles.iter() {
        let d = PyDict::new(py);
        d.set_item("revision", &*b.revision)?;
        d.set_item("roots", PyList::new(py, &b.roots)?)?;
        let metadata = match &b.metadata {
            Some(m) => {
                let text = m.to_string();
                let v = regorus::Value::from_json_str(&text)
                    .map_err(|e| Error::data(format!("{e:#}")))
                    .py()?;
                super::convert::to_python(py, &v)?
            }
            None => py.None().into_bound(py),
        };
        d.set_item("metadata", metadata)?;
        d.set_item("source", &b.source)?;
        d.set_item("etag", b.status.etag.lock().clone())?;
        d.set_item("loaded", b.status.loaded.load(Ordering::Relaxed))?;
        d.set_item("failed", b.status.failed.load(Ordering::Relaxed))?;
        let last = b.status.last_success_unix_ns.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let last = (last > 0).then(|| last as f64 / 1e9);
        d.set_item("last_success", last)?;
        d.set_item("last_error", b.status.last_error.lock().clone())?;
        out.set_item(&*b.name, d)?;
    }
    Ok(out)
}
