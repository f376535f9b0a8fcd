//! Python exception classes and the one conversion from the core's `Error`.
//!
//! The classes are created natively at import (so `ConfigError` can also be a `ValueError` and
//! `InputError` a `TypeError`, which `create_exception!` cannot express) and live in
//! `regoguard`'s namespace.

use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

use regoguard_core::error::{Error, PolicyIssue};

static REGOGUARD_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static POLICY_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DATA_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static EVALUATION_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static CONFIG_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static INPUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn new_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: &Bound<'py, PyTuple>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__module__", "regoguard")?;
    ns.set_item("__doc__", doc)?;
    let cls = py.get_type::<PyType>().call1((name, bases, ns))?;
    Ok(cls.cast_into::<PyType>()?)
}

fn class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
) -> PyResult<Bound<'py, PyType>> {
    cell.get(py).map(|c| c.bind(py).clone()).ok_or_else(|| {
        pyo3::exceptions::PyRuntimeError::new_err("regoguard exceptions are not initialised")
    })
}

/// Creates the classes and adds them to `m`.
pub fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = new_class(
        py,
        "RegoguardError",
        &PyTuple::new(py, [py.get_type::<PyException>()])?,
        "Base class of every error regoguard raises.",
    )?;
    let _ = REGOGUARD_ERROR.set(py, base.clone().unbind());
    let only_base = PyTuple::new(py, [base.clone()])?;
    let classes: [(&str, &'static PyOnceLock<Py<PyType>>, Bound<'_, PyTuple>, &str); 5] = [
        (
            "PolicyError",
            &POLICY_ERROR,
            only_base.clone(),
            "A policy failed to parse or compile. `.file`, `.line`, `.column` locate the first \
             failure; `.errors` lists every failure as dicts with file, line, column, code, message.",
        ),
        ("DataError", &DATA_ERROR, only_base.clone(), "A base document cannot be read, parsed or merged."),
        (
            "EvaluationError",
            &EVALUATION_ERROR,
            only_base,
            "The entrypoint failed at runtime: conflicting outputs, an unknown entrypoint, or a \
             result that is neither a boolean nor an object with a boolean `allow`. \
             `.entrypoint` names the rule.",
        ),
        (
            "ConfigError",
            &CONFIG_ERROR,
            PyTuple::new(py, [base.clone(), py.get_type::<PyValueError>()])?,
            "An invalid argument to a regoguard constructor or method (also a ValueError).",
        ),
        (
            "InputError",
            &INPUT_ERROR,
            PyTuple::new(py, [base.clone(), py.get_type::<PyTypeError>()])?,
            "An input value with no JSON form (also a TypeError). `.path` names it, e.g. \
             'input.user.roles[2]'.",
        ),
    ];
    m.add("RegoguardError", base)?;
    for (name, cell, bases, doc) in classes {
        let cls = new_class(py, name, &bases, doc)?;
        let _ = cell.set(py, cls.clone().unbind());
        m.add(name, cls)?;
    }
    Ok(())
}

fn issue_dict<'py>(py: Python<'py>, issue: &PolicyIssue) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("file", &issue.file)?;
    d.set_item("line", issue.line)?;
    d.set_item("column", issue.column)?;
    d.set_item("code", issue.code)?;
    d.set_item("message", &issue.message)?;
    Ok(d)
}

/// Builds the Python exception for `err`, with its structured attributes.
#[cold]
fn to_pyerr(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let message = err.to_string();
    let instance = match err {
        Error::Policy(issues) => {
            let e = class(py, &POLICY_ERROR)?.call1((message,))?;
            let first = issues.first();
            e.setattr("file", first.map(|i| i.file.clone()))?;
            e.setattr("line", first.map(|i| i.line))?;
            e.setattr("column", first.map(|i| i.column))?;
            let list = PyList::empty(py);
            for issue in issues {
                list.append(issue_dict(py, issue)?)?;
            }
            e.setattr("errors", list)?;
            e
        }
        Error::Data(_) => class(py, &DATA_ERROR)?.call1((message,))?,
        Error::Evaluation(f) => {
            let e = class(py, &EVALUATION_ERROR)?.call1((message,))?;
            e.setattr("entrypoint", &f.entrypoint)?;
            e.setattr("decision_id", f.decision_id.map(|id| id.to_string()))?;
            e
        }
        Error::Config(_) => class(py, &CONFIG_ERROR)?.call1((message,))?,
        Error::Input { path, .. } => {
            let e = class(py, &INPUT_ERROR)?.call1((message,))?;
            e.setattr("path", path)?;
            e
        }
    };
    Ok(PyErr::from_value(instance))
}

/// The Python exception for a core error (the orphan rule keeps `From<Error> for PyErr` out:
/// `Error` lives in regoguard-core, `PyErr` in pyo3).
#[cold]
pub(crate) fn py_err(err: Error) -> PyErr {
    Python::attach(|py| to_pyerr(py, &err).unwrap_or_else(|e| e))
}

/// `result.py()?` turns a core result into a `PyResult`, raising the matching Python class.
pub(crate) trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

/// `Err(Error::config(...).into_pyerr())` where a `PyErr` is built directly.
pub(crate) trait IntoPyErr {
    fn into_pyerr(self) -> PyErr;
}

impl IntoPyErr for Error {
    #[cold]
    fn into_pyerr(self) -> PyErr {
        py_err(self)
    }
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    #[inline]
    fn py(self) -> PyResult<T> {
        self.map_err(py_err)
    }
}
