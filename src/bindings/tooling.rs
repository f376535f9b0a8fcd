//! The developer tools (`python -m regoguard test|eval|check`) for Python: a private
//! `_Workspace` over [`regoguard_core::tooling::Workspace`].

use super::errors::IntoPyResult;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::convert::{to_python, to_value};
use regoguard_core::engine;
use regoguard_core::error::Error;
use regoguard_core::tooling::{TestCase, TestOutcome, Workspace};

/// Policies and data loaded once for the tools; not for the request path.
#[pyclass(name = "_Workspace", module = "regoguard._regoguard", frozen)]
pub struct PyWorkspace {
    inner: Mutex<Workspace>,
    cases: Vec<TestCase>,
}

#[pymethods]
impl PyWorkspace {
    #[new]
    #[pyo3(signature = (policies, *, data_files = Vec::new(), data = None, rego_v0 = false))]
    fn new(
        py: Python<'_>,
        policies: Vec<String>,
        data_files: Vec<String>,
        data: Option<&Bound<'_, PyDict>>,
        rego_v0: bool,
    ) -> PyResult<Self> {
        let mut docs = Vec::new();
        if let Some(d) = data {
            docs.push(
                to_value(d.as_any(), "data")
                    .map_err(|e| Error::data(e.to_string()))
                    .py()?,
            );
        }
        let ws = py
            .detach(|| -> regoguard_core::Result<Workspace> {
                for f in &data_files {
                    docs.push(engine::read_data_file(f)?);
                }
                Workspace::load(&policies, docs, rego_v0)
            })
            .py()?;
        let cases = ws.tests();
        Ok(Self {
            inner: Mutex::new(ws),
            cases,
        })
    }

    /// The packages of the loaded policies, as ``data.a.b``.
    fn packages(&self) -> Vec<String> {
        self.inner.lock().packages()
    }

    /// Every `test_*`/`todo_test_*` rule: dicts with `name`, `package`, `rule`, `file`, `line`,
    /// `todo`.
    fn tests<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        for c in &self.cases {
            list.append(case_dict(py, c)?)?;
        }
        Ok(list)
    }

    /// Runs the tests named in `names` (all when `None`): a list of result dicts
    /// (`name`, `package`, `rule`, `file`, `line`, `outcome` = pass/fail/error/skip,
    /// `duration_ns`, `prints`, `value` and `undefined` of a failure, `error`, `failed_at`)
    /// and, with `coverage`, a list of `{file, covered, not_covered, percent}`.
    #[pyo3(signature = (names = None, *, coverage = false, explain = false))]
    fn run_tests<'py>(
        &self,
        py: Python<'py>,
        names: Option<Vec<String>>,
        coverage: bool,
        explain: bool,
    ) -> PyResult<(Bound<'py, PyList>, Option<Bound<'py, PyList>>)> {
        let cases: Vec<TestCase> = match &names {
            None => self.cases.clone(),
            Some(n) => self
                .cases
                .iter()
                .filter(|c| n.contains(&c.name))
                .cloned()
                .collect(),
        };
        let (reports, cov) = py.detach(|| self.inner.lock().run_tests(&cases, coverage, explain));
        let out = PyList::empty(py);
        for r in &reports {
            let d = case_dict(py, &r.case)?;
            let (outcome, value, error) = match &r.outcome {
                TestOutcome::Pass => ("pass", None, None),
                TestOutcome::Fail { value } => ("fail", Some(value), None),
                TestOutcome::Error { message } => ("error", None, Some(message.as_str())),
                TestOutcome::Skip => ("skip", None, None),
            };
            d.set_item("outcome", outcome)?;
            d.set_item("duration_ns", r.duration_ns)?;
            d.set_item("prints", r.prints.clone())?;
            if let Some(v) = value {
                d.set_item("undefined", matches!(v, regorus::Value::Undefined))?;
                d.set_item("value", to_python(py, v)?)?;
            }
            d.set_item("error", error)?;
            match &r.failed_at {
                Some((line, text)) => d.set_item("failed_at", (line, text))?,
                None => d.set_item("failed_at", py.None())?,
            }
            out.append(d)?;
        }
        let cov = match cov {
            None => None,
            Some(files) => {
                let list = PyList::empty(py);
                for f in &files {
                    let d = PyDict::new(py);
                    d.set_item("file", &f.file)?;
                    d.set_item("covered", f.covered.clone())?;
                    d.set_item("not_covered", f.not_covered.clone())?;
                    d.set_item("percent", f.percent())?;
                    list.append(d)?;
                }
                Some(list)
            }
        };
        Ok((out, cov))
    }

    /// Evaluates `query` with `input` (none when `has_input` is false): a list of
    /// `(expression values, bindings)`, one per result; undefined values are `None`.
    #[pyo3(signature = (query, input = None, *, has_input = false))]
    fn eval_query<'py>(
        &self,
        py: Python<'py>,
        query: &str,
        input: Option<&Bound<'py, PyAny>>,
        has_input: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let input = match input {
            Some(i) if has_input => to_value(i, "input").py()?,
            _ => regorus::Value::Undefined,
        };
        let results = py
            .detach(|| self.inner.lock().eval_query(query, input))
            .py()?;
        let out = PyList::empty(py);
        for (values, bindings) in &results {
            let vals = PyList::empty(py);
            for v in values {
                vals.append(to_python(py, v)?)?;
            }
            out.append((vals, to_python(py, bindings)?))?;
        }
        Ok(out)
    }
}

fn case_dict<'py>(py: Python<'py>, c: &TestCase) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &c.name)?;
    d.set_item("package", &c.package)?;
    d.set_item("rule", &c.rule)?;
    d.set_item("file", &c.file)?;
    d.set_item("line", c.line)?;
    d.set_item("todo", c.todo)?;
    Ok(d)
}
