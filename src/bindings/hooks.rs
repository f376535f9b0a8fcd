//! The Python callables the native code calls back, handed over once by the package:
//! `python/regoguard/__init__.py` calls `_install(...)` right after importing this module.
//!
//! The extension never imports its own Python package (ARCHITECTURE.md, "Module map"): the
//! helpers reach Rust as arguments, so the dependency only ever runs Python → native.

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// What the bindings call in Python. Each field names its source in `python/regoguard/`.
pub struct Hooks {
    /// `_l2.resolve(future, found, value)`: hands an L2 answer to its waiting future.
    pub resolve: Py<PyAny>,
    /// `_l2.ready(value)`: an awaitable that returns `value` at once (`check_async`'s hit).
    pub ready: Py<PyAny>,
    /// `_l2.running_loop()`: the running asyncio loop, or `None`.
    pub running_loop: Py<PyAny>,
    /// `_l2.finish(pending, future)`: awaits the L2's answer, evaluates on a miss.
    pub finish: Py<PyAny>,
    /// `_l2.register_atexit()`: stops the L2 runtime at exit (called when an L2 is built).
    pub register_atexit: Py<PyAny>,
    /// `_decision_log._ensure_drain()`: starts the decision logs' drain thread.
    pub ensure_drain: Py<PyAny>,
    /// `_identity.TokenError`: the 401 a refused bearer token raises.
    pub token_error: Py<PyAny>,
}

impl Hooks {
    fn fields(&self) -> [(&'static str, &Py<PyAny>); 7] {
        [
            ("resolve", &self.resolve),
            ("ready", &self.ready),
            ("running_loop", &self.running_loop),
            ("finish", &self.finish),
            ("register_atexit", &self.register_atexit),
            ("ensure_drain", &self.ensure_drain),
            ("token_error", &self.token_error),
        ]
    }
}

static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();

/// The installed hooks; a `RuntimeError` (never a panic) before `_install` ran.
pub fn hooks(py: Python<'_>) -> PyResult<&'static Hooks> {
    HOOKS.get(py).ok_or_else(not_installed)
}

#[cold]
fn not_installed() -> PyErr {
    PyRuntimeError::new_err(
        "regoguard._regoguard is used before its Python hooks are installed: import regoguard \
         (its __init__ calls regoguard._regoguard._install)",
    )
}

/// `_install(*, resolve, ready, running_loop, finish, register_atexit, ensure_drain,
/// token_error)`: stores the package's helpers once. Installing the very same objects again is
/// a no-op (`importlib.reload(regoguard)`); other objects are a `RuntimeError`.
#[pyfunction]
#[pyo3(name = "_install", signature = (*, resolve, ready, running_loop, finish, register_atexit, ensure_drain, token_error))]
#[allow(clippy::too_many_arguments)] // one keyword argument per hook
pub fn install(
    py: Python<'_>,
    resolve: Py<PyAny>,
    ready: Py<PyAny>,
    running_loop: Py<PyAny>,
    finish: Py<PyAny>,
    register_atexit: Py<PyAny>,
    ensure_drain: Py<PyAny>,
    token_error: Py<PyAny>,
) -> PyResult<()> {
    let new = Hooks {
        resolve,
        ready,
        running_loop,
        finish,
        register_atexit,
        ensure_drain,
        token_error,
    };
    for (name, f) in new.fields() {
        if !f.bind(py).is_callable() {
            return Err(PyTypeError::new_err(format!(
                "_install: {name} must be callable, got {}",
                f.bind(py).get_type().name()?
            )));
        }
    }
    let Err(new) = HOOKS.set(py, new) else {
        return Ok(());
    };
    let installed = hooks(py)?;
    let same = new
        .fields()
        .iter()
        .zip(installed.fields())
        .all(|((_, a), (_, b))| a.is(b));
    if same {
        Ok(())
    } else {
        Err(PyRuntimeError::new_err(
            "_install: regoguard's Python hooks are installed already (once per process)",
        ))
    }
}
