//! `Authorizer` and `Decision` for Python.

use std::sync::Arc;

use super::errors::{IntoPyErr, IntoPyResult};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use rayon::prelude::*;

use super::config::{PyCacheConfig, PyDecisionLogConfig};
use super::convert::{fs_path, to_canonical, to_python, to_value, with_written, write_value};
use super::hooks::hooks;
use super::l2::{flush_warning, ready, resolve, stats_into, PyRedisConfig};
use super::request::{write_request, PyRequestSpec, RequestExtras};
use regoguard_core::authorizer::{
    Authorizer, AuthorizerConfig, Check, DataSource, Decided, InputForm, Step,
};
use regoguard_core::cache::CacheConfig;
use regoguard_core::canonical::{self, CanonicalWriter};
use regoguard_core::clock;
use regoguard_core::decision::{DecisionId, Outcome, Source};
use regoguard_core::engine::Evaluator;
use regoguard_core::error::{Error, Result};
use regoguard_core::key::Key;
use regoguard_core::metrics::{self, HistogramSnapshot};
use regoguard_core::pipeline::{Pending, Pipeline};

/// The `cache=` argument: omitted (the default cache), `None` (no cache) or a `CacheConfig`.
pub enum CacheArg {
    Default,
    Disabled,
    Config(CacheConfig),
}

impl<'a, 'py> FromPyObject<'a, 'py> for CacheArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            return Ok(CacheArg::Disabled);
        }
        match obj.cast::<PyCacheConfig>() {
            Ok(c) => Ok(CacheArg::Config(c.get().inner)),
            Err(_) => Err(PyTypeError::new_err("cache must be a CacheConfig or None")),
        }
    }
}

/// Paths as the user wrote them (`str` or `os.PathLike`); anything else is a `TypeError`.
fn path_string(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    fs_path(obj, what, PyTypeError::new_err)
}

/// `policies=`: paths and `Bundle`s, alone or in a list.
fn policy_paths(
    obj: &Bound<'_, PyAny>,
) -> PyResult<(Vec<String>, Vec<Arc<regoguard_core::bundle::BundleConfig>>)> {
    let mut paths = Vec::new();
    let mut bundles = Vec::new();
    let mut one = |p: &Bound<'_, PyAny>, what: &str| -> PyResult<()> {
        if let Ok(b) = p.cast::<super::bundle::PyBundle>() {
            bundles.push(b.get().config.clone());
        } else {
            paths.push(path_string(p, what)?);
        }
        Ok(())
    };
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        for p in obj.try_iter()? {
            one(&p?, "each policy path")?;
        }
    } else {
        one(obj, "policies")?;
    }
    Ok((paths, bundles))
}

/// One authorization decision. Immutable; fields are computed when first read.
#[pyclass(name = "Decision", module = "regoguard._regoguard", frozen)]
pub struct PyDecision {
    outcome: Arc<Outcome>,
    source: Source,
    revision: Arc<str>,
    id: DecisionId,
    evaluator: &'static str,
}

impl PyDecision {
    /// `allow`, for Rust callers (the middleware's gate).
    pub fn allows(&self) -> bool {
        self.outcome.allow
    }

    fn new(d: Decided) -> Self {
        Self {
            outcome: d.outcome,
            source: d.source,
            revision: d.revision,
            id: d.id,
            evaluator: d.evaluator,
        }
    }
}

#[pymethods]
impl PyDecision {
    #[getter]
    fn allow(&self) -> bool {
        self.outcome.allow
    }

    #[getter]
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.outcome.result)
    }

    #[getter]
    fn reason(&self) -> Option<&str> {
        self.outcome.reason.as_deref()
    }

    #[getter]
    fn status(&self) -> Option<u16> {
        self.outcome.status
    }

    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(headers) = &self.outcome.headers else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        for (k, v) in headers {
            d.set_item(&**k, &**v)?;
        }
        Ok(Some(d))
    }

    #[getter]
    fn tags(&self) -> Vec<&str> {
        self.outcome.tags.iter().map(|t| &**t).collect()
    }

    #[getter]
    fn source(&self) -> &'static str {
        self.source.as_str()
    }

    #[getter]
    fn revision(&self) -> &str {
        &self.revision
    }

    /// `"rvm"` or `"interpreter"`: which evaluator this entrypoint uses (why: `stats()["evaluator_reasons"]`).
    #[getter]
    fn evaluator(&self) -> &'static str {
        self.evaluator
    }

    #[getter]
    fn decision_id(&self) -> String {
        self.id.to_string()
    }

    /// Refuses truth testing: `if authz.check(x):` would always pass. Read `.allow`.
    fn __bool__(&self) -> PyResult<bool> {
        Err(PyTypeError::new_err(
            "a Decision has no truth value; test decision.allow",
        ))
    }

    fn __repr__(&self) -> String {
        let reason = self
            .outcome
            .reason
            .as_deref()
            .map_or_else(|| "None".to_owned(), |r| format!("{r:?}"));
        format!(
            "Decision(allow={}, reason={reason}, source='{}', revision='{}')",
            if self.outcome.allow { "True" } else { "False" },
            self.source.as_str(),
            self.revision
        )
    }
}

/// The embedded authorizer. See `_regoguard.pyi` for the user reference.
#[pyclass(name = "Authorizer", module = "regoguard._regoguard", frozen)]
pub struct PyAuthorizer {
    /// The core's decision pipeline (the authorizer, its L1 and its L2): this class translates.
    pipeline: Arc<Pipeline>,
}

#[pymethods]
impl PyAuthorizer {
    #[new]
    #[pyo3(signature = (policies, *, entrypoint = "data.authz.allow", data = None,
                        cache = CacheArg::Default, rego_v0 = false, evaluator = "auto",
                        decision_log = None, redis = None, allow_net = None,
                        eval_timeout_seconds = 0.1, eval_memory_bytes = 268_435_456))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        policies: &Bound<'_, PyAny>,
        entrypoint: &str,
        data: Option<&Bound<'_, PyAny>>,
        cache: CacheArg,
        rego_v0: bool,
        evaluator: &str,
        decision_log: Option<&Bound<'_, PyDecisionLogConfig>>,
        redis: Option<&Bound<'_, PyAny>>,
        allow_net: Option<Vec<String>>,
        eval_timeout_seconds: f64,
        eval_memory_bytes: u64,
    ) -> PyResult<Self> {
        // Looked up first: without the hooks, nothing is built or started.
        let drain = decision_log.map(|_| hooks(py)).transpose()?;
        let net = regoguard_core::builtins::http::NetConfig::new(
            allow_net.as_deref().unwrap_or_default(),
        )
        .map_err(Error::config)
        .py()?;
        let l2 = match redis {
            Some(r) if !r.is_none() => {
                let config = r
                    .cast::<PyRedisConfig>()
                    .map_err(|_| Error::config("redis must be a RedisConfig or None"))
                    .py()?;
                Some(config.get().l2(py)?)
            }
            _ => None,
        };
        let (policies, bundles) = policy_paths(policies)?;
        let data = match data {
            None => DataSource::Inline(regorus::Value::new_object()),
            Some(d) if d.is_instance_of::<PyDict>() => DataSource::Inline(
                to_value(d, "data")
                    .map_err(|e| Error::data(e.to_string()))
                    .py()?,
            ),
            Some(d) => DataSource::File(path_string(d, "data (a dict or a path)")?),
        };
        let config = AuthorizerConfig {
            policies,
            entrypoint: entrypoint.to_owned(),
            data,
            cache: match cache {
                CacheArg::Default => Some(CacheConfig::default()),
                CacheArg::Disabled => None,
                CacheArg::Config(c) => Some(c),
            },
            rego_v0,
            evaluator: Evaluator::parse(evaluator).py()?,
            decision_log: decision_log.map(|d| d.get().inner.clone()),
            budget: regoguard_core::budget::Budget::new(eval_timeout_seconds, eval_memory_bytes)
                .py()?,
            bundles,
        };
        let pipeline = Arc::new(py.detach(|| Pipeline::new(config, l2)).py()?);
        let inner = pipeline.authorizer();
        inner.start_bundle_polling();
        log_interpreter_fallbacks(py, &inner.current());
        regoguard_core::builtins::http::configure(inner.current().owner(), net);
        if let Some(h) = drain {
            // The drain thread is Python's (see regoguard/_decision_log.py for why).
            h.ensure_drain.call0(py)?;
        }
        Ok(Self { pipeline })
    }

    /// Decides for one input. An L1 hit keeps the GIL (it is faster than releasing it); a miss
    /// releases it while evaluating.
    #[pyo3(signature = (input, *, entrypoint = None))]
    fn check(
        &self,
        py: Python<'_>,
        input: &Bound<'_, PyAny>,
        entrypoint: Option<&str>,
    ) -> PyResult<PyDecision> {
        self.decide(py, entrypoint, InputForm::Plain, |w| {
            write_value(w, input, "input")
        })
    }

    /// The middleware's and the dependency's fast path: the input document is written from the
    /// raw ASGI scope in Rust, and on an L1 hit no Python dict is built.
    #[pyo3(signature = (scope, spec, user, *, include_body = false, body = None, raw_body = None, route = None, entrypoint = None))]
    #[allow(clippy::too_many_arguments)]
    fn _check_scope(
        slf: &Bound<'_, Self>,
        py: Python<'_>,
        scope: &Bound<'_, PyDict>,
        spec: &Bound<'_, PyRequestSpec>,
        user: &Bound<'_, PyAny>,
        include_body: bool,
        body: Option<&Bound<'_, PyAny>>,
        raw_body: Option<&Bound<'_, PyBytes>>,
        route: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)>,
        entrypoint: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let none = py.None().into_bound(py);
        let extras = RequestExtras::new(user, include_body, body, raw_body, route.as_ref(), &none);
        Self::check_request(slf, scope, spec, &extras, entrypoint)
    }

    /// `check`, awaitable: an L1 hit returns an already finished awaitable; a miss may ask the
    /// L2 without blocking the event loop, then evaluates.
    #[pyo3(signature = (input, *, entrypoint = None))]
    fn check_async<'py>(
        slf: &Bound<'py, Self>,
        input: &Bound<'py, PyAny>,
        entrypoint: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let p = &this.pipeline;
        let resolved = p.resolve(entrypoint).py()?;
        let started_ns = clock::now_ns();
        let step = with_written(
            |w| write_value(w, input, "input"),
            |bytes| {
                let c = resolved.check(bytes, InputForm::Plain, started_ns);
                Ok(match p.begin(&c) {
                    Step::Done(decided) => Ok(decided),
                    Step::Miss(key) => Err(Pending::new(&c, key)),
                })
            },
        )
        .py()?;
        drop(resolved);
        let pending = match step {
            Ok(decided) => return ready(py, Bound::new(py, PyDecision::new(decided))?.into_any()),
            Err(pending) => Arc::new(pending),
        };
        if p.wants_l2() {
            let running = hooks(py)?.running_loop.bind(py).call0()?;
            if !running.is_none() {
                let future = running.call_method0("create_future")?.unbind();
                let call_soon = running.getattr("call_soon_threadsafe")?.unbind();
                let (fut2, p2) = (future.clone_ref(py), p.clone());
                let started = p.ask_l2(&pending, move |decided| {
                    Python::attach(|py| {
                        let value = decided
                            .and_then(|d| Py::new(py, PyDecision::new(d)).ok())
                            .map(Py::into_any);
                        let found = value.is_some();
                        resolve(
                            py,
                            &call_soon,
                            &fut2,
                            found,
                            value.unwrap_or_else(|| py.None()),
                        );
                        flush(py, &p2);
                    });
                });
                if started {
                    let pending = PyPendingDecision {
                        authorizer: slf.clone().unbind(),
                        pending,
                        spec: None,
                    };
                    return hooks(py)?
                        .finish
                        .bind(py)
                        .call1((Bound::new(py, pending)?, future));
                }
                flush(py, p);
            }
        }
        let decided = this.decide_miss(py, &pending.check(), pending.key()).py()?;
        ready(py, Bound::new(py, PyDecision::new(decided))?.into_any())
    }

    /// Decides for many inputs in parallel with the GIL released; same cache as `check`.
    #[pyo3(signature = (inputs, *, entrypoint = None))]
    fn check_many(
        &self,
        py: Python<'_>,
        inputs: &Bound<'_, PyAny>,
        entrypoint: Option<&str>,
    ) -> PyResult<Vec<PyDecision>> {
        let p = &*self.pipeline;
        let resolved = p.resolve(entrypoint).py()?;
        let (compiled, index) = (resolved.compiled(), resolved.index());
        let mut batch = Vec::new();
        for (i, item) in inputs.try_iter()?.enumerate() {
            let bytes = to_canonical(&item?, "")
                .map_err(|e| canonical::prefix_path(canonical::prefix_index(e, i), "inputs"))
                .py()?;
            batch.push(bytes);
        }
        let results: Vec<Result<Decided>> = py.detach(|| {
            batch
                .par_iter()
                .map(|bytes| {
                    p.check(&Check {
                        compiled,
                        index,
                        canonical: bytes,
                        form: InputForm::Plain,
                        started_ns: clock::now_ns(),
                    })
                })
                .collect()
        });
        flush(py, p);
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            out.push(PyDecision::new(r.py()?));
        }
        Ok(out)
    }

    /// Compiles and registers `entrypoint` now, so a misspelt rule fails at startup.
    fn prepare(&self, py: Python<'_>, entrypoint: &str) -> PyResult<()> {
        let a = &**self.inner();
        if a.current_guard().entrypoint_index(entrypoint).is_none() {
            py.detach(|| a.register_entrypoint(entrypoint)).py()?;
        }
        Ok(())
    }

    /// A hash of every policy and data byte (16 hex digits).
    #[getter]
    fn revision(&self) -> String {
        self.inner().current().revision.display.to_string()
    }

    /// The bundles of the revision in force (README "Bundles").
    #[getter]
    fn bundles<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        super::bundle::bundles_dict(py, &self.inner().current())
    }

    #[getter]
    fn entrypoint(&self) -> String {
        self.inner().config().entrypoint.clone()
    }

    fn reload(&self, py: Python<'_>) -> PyResult<String> {
        let revision = py.detach(|| self.pipeline.reload()).py()?.to_string();
        flush(py, &self.pipeline);
        Ok(revision)
    }

    fn set_data(
        &self,
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<String> {
        let segments = data_path(path)?;
        let root = if segments.is_empty() {
            "data".to_owned()
        } else {
            format!("data.{}", segments.join("."))
        };
        let value = to_value(value, &root)
            .map_err(|e| Error::data(e.to_string()))
            .py()?;
        let revision = py
            .detach(|| self.pipeline.set_data(&segments, value))
            .py()?
            .to_string();
        flush(py, &self.pipeline);
        Ok(revision)
    }

    /// Drops the decisions tagged with any of `tags`, here, in Redis (this revision) and, through
    /// pub/sub, in every instance on the channel.
    #[pyo3(signature = (*, tags))]
    fn invalidate(&self, py: Python<'_>, tags: Vec<String>) {
        py.detach(|| self.pipeline.invalidate_tags(&tags));
        flush(py, &self.pipeline);
    }

    fn invalidate_all(&self, py: Python<'_>) {
        py.detach(|| self.pipeline.invalidate_all());
        flush(py, &self.pipeline);
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let a = &**self.inner();
        self.pipeline.sync_l2_errors();
        let s = a.metrics.snapshot();
        let compiled = a.current();
        let d = PyDict::new(py);
        d.set_item("revision", &*compiled.revision.display)?;
        let (entries, max_entries) = a
            .cache()
            .map_or((0, 0), |c| (c.len() as u64, c.config().max_entries));
        d.set_item("entries", entries)?;
        d.set_item("max_entries", max_entries)?;
        d.set_item("l1_hits", s.l1_hits)?;
        d.set_item("l1_misses", s.l1_misses)?;
        d.set_item("hit_ratio", s.hit_ratio())?;
        d.set_item("l2_hits", s.l2_hits)?;
        d.set_item("l2_misses", s.l2_misses)?;
        d.set_item("l2_errors", s.l2_errors)?;
        d.set_item("coalesced", s.coalesced)?;
        d.set_item("evaluations", s.evaluations)?;
        d.set_item("rvm_evaluations", s.rvm_evaluations)?;
        d.set_item("interpreter_evaluations", s.interpreter_evaluations)?;
        d.set_item("evaluation_errors", s.evaluation_errors)?;
        d.set_item("budget_exceeded", s.budget_exceeded)?;
        let decisions = PyDict::new(py);
        decisions.set_item("allow", s.allow)?;
        decisions.set_item("deny", s.deny)?;
        decisions.set_item("error", s.error)?;
        d.set_item("decisions", decisions)?;
        d.set_item("reloads", s.reloads)?;
        d.set_item("reload_errors", s.reload_errors)?;
        let evaluators = PyDict::new(py);
        for ep in &compiled.entrypoints {
            evaluators.set_item(&*ep.name, ep.evaluator_name())?;
        }
        d.set_item("evaluators", evaluators)?;
        d.set_item("evaluator_reasons", evaluator_reasons(py, &compiled)?)?;
        // Entrypoints whose decisions depend on the moment (caching rule 8), with the builtin.
        let moment = PyDict::new(py);
        if let Some(b) = &compiled.facts.reads_the_moment {
            for ep in &compiled.entrypoints {
                moment.set_item(&*ep.name, b)?;
            }
        }
        d.set_item("time_dependent", moment)?;
        let times = PyDict::new(py);
        for source in [Source::L1, Source::L2, Source::Engine] {
            times.set_item(source.as_str(), timing(py, s.seconds(source))?)?;
        }
        d.set_item("decision_seconds", times)?;
        d.set_item("decision_logs", s.decision_logs)?;
        d.set_item("decision_logs_dropped", s.decision_logs_dropped)?;
        if let Some(l2) = self.pipeline.l2() {
            let l2d = PyDict::new(py);
            stats_into(&l2d, l2)?;
            d.set_item("l2", l2d)?;
        }
        Ok(d)
    }

    /// This authorizer's series in the Prometheus text format 0.0.4.
    fn metrics_text(&self) -> String {
        self.pipeline.sync_l2_errors();
        metrics::render(&[self.inner().sample(None)], &[])
    }

    /// The decision-log settings, or `None` when decisions are not logged.
    #[getter]
    fn decision_log(&self) -> Option<PyDecisionLogConfig> {
        self.inner()
            .decision_log()
            .map(|c| PyDecisionLogConfig { inner: c.clone() })
    }

    fn __repr__(&self) -> String {
        let c = self.inner().current();
        format!(
            "Authorizer(entrypoint='{}', revision='{}')",
            self.inner().config().entrypoint,
            c.revision.display
        )
    }
}

/// `{"count": n, "p50": seconds | None, "p99": seconds | None}` of one histogram.
fn timing<'py>(py: Python<'py>, h: &HistogramSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", h.count())?;
    d.set_item("p50", h.quantile(0.5))?;
    d.set_item("p99", h.quantile(0.99))?;
    Ok(d)
}

/// The exposition of several authorizers (each labelled with its entrypoint when there are
/// more than one) and, with `functions`, of every live `@cached_authorization` cache.
#[pyfunction]
#[pyo3(name = "_render_metrics", signature = (authorizers, *, functions = true))]
pub fn render_metrics(
    authorizers: Vec<Bound<'_, PyAuthorizer>>,
    functions: bool,
) -> PyResult<String> {
    let several = authorizers.len() > 1;
    let mut samples = Vec::with_capacity(authorizers.len());
    for a in &authorizers {
        let inner = &a.get().inner();
        let label = several.then(|| inner.config().entrypoint.clone());
        if let Some(l) = &label {
            if samples
                .iter()
                .any(|s: &metrics::AuthorizerSample| s.label.as_ref() == Some(l))
            {
                return Err(Error::config(format!(
                    "two authorizers with entrypoint {l} would share one series; expose them from separate metrics apps"
                ))
                .into_pyerr());
            }
        }
        samples.push(inner.sample(label));
    }
    let caches = if functions {
        metrics::live_caches()
    } else {
        Vec::new()
    };
    Ok(metrics::render(&samples, &caches))
}

/// Takes up to `max_records` queued decision-log records of every authorizer; returns how
/// many were taken and, with `render`, their JSON lines. Holds the GIL throughout (it never
/// releases it: see `regoguard/_decision_log.py`).
#[pyfunction]
#[pyo3(name = "_drain_decision_logs", signature = (max_records, render))]
pub fn drain_decision_logs(max_records: usize, render: bool) -> (usize, Vec<String>) {
    regoguard_core::decision_log::drain_all(max_records, render)
}

impl PyAuthorizer {
    fn inner(&self) -> &Arc<Authorizer> {
        self.pipeline.authorizer()
    }

    /// Writes the input with `write`, then serves it from L1 or decides the miss.
    fn decide(
        &self,
        py: Python<'_>,
        entrypoint: Option<&str>,
        form: InputForm,
        write: impl FnOnce(&mut CanonicalWriter) -> Result<()>,
    ) -> PyResult<PyDecision> {
        let p = &*self.pipeline;
        let resolved = p.resolve(entrypoint).py()?;
        let started_ns = clock::now_ns();
        let decided = with_written(write, |bytes| {
            let c = resolved.check(bytes, form, started_ns);
            match p.begin(&c) {
                Step::Done(decided) => Ok(decided),
                Step::Miss(key) => self.decide_miss(py, &c, &key),
            }
        })
        .py()?;
        Ok(PyDecision::new(decided))
    }

    /// `_check_scope`'s decision, also called by the middleware's gate: a `Decision`, or a
    /// `PendingDecision` for a slow miss when `spec` offloads.
    pub fn check_request(
        slf: &Bound<'_, Self>,
        scope: &Bound<'_, PyDict>,
        spec: &Bound<'_, PyRequestSpec>,
        extras: &RequestExtras<'_, '_>,
        entrypoint: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let write = |w: &mut CanonicalWriter| write_request(w, scope, &spec.get().headers, extras);
        if spec.get().offloads() {
            return Self::decide_or_defer(slf, spec, entrypoint, write);
        }
        Ok(Py::new(
            py,
            slf.get()
                .decide(py, entrypoint, InputForm::Request, write)?,
        )?
        .into_any())
    }

    /// `decide` for a request whose spec offloads slow misses (`offload_after_seconds`): a hit
    /// is decided here; a miss whose entrypoint has been slow comes back as a
    /// `PendingDecision`, which the middleware evaluates on a worker thread.
    fn decide_or_defer(
        slf: &Bound<'_, Self>,
        spec: &Bound<'_, PyRequestSpec>,
        entrypoint: Option<&str>,
        write: impl FnOnce(&mut CanonicalWriter) -> Result<()>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let p = &*this.pipeline;
        let resolved = p.resolve(entrypoint).py()?;
        let started_ns = clock::now_ns();
        let s = spec.get();
        let done = with_written(write, |bytes| {
            let c = resolved.check(bytes, InputForm::Request, started_ns);
            Ok(match p.begin(&c) {
                Step::Done(decided) => Ok(decided),
                Step::Miss(key) if s.defers_miss() => Err(Pending::new(&c, key)),
                Step::Miss(key) => {
                    let t = clock::now_ns();
                    let decided = this.decide_miss(py, &c, &key)?;
                    s.observe_miss(clock::now_ns().saturating_sub(t));
                    Ok(decided)
                }
            })
        })
        .py()?;
        match done {
            Ok(decided) => Ok(Py::new(py, PyDecision::new(decided))?.into_any()),
            Err(pending) => {
                let pending = PyPendingDecision {
                    authorizer: slf.clone().unbind(),
                    pending: Arc::new(pending),
                    spec: Some(spec.clone().unbind()),
                };
                Ok(Py::new(py, pending)?.into_any())
            }
        }
    }

    /// An L1 miss decided by the pipeline with the GIL released (it may evaluate, or wait for a
    /// concurrent evaluation of the same key).
    fn decide_miss(&self, py: Python<'_>, c: &Check<'_>, key: &Key) -> Result<Decided> {
        let decided = py.detach(|| self.pipeline.decide(c, key));
        flush(py, &self.pipeline);
        decided
    }
}

/// Logs the L2's pending rate-limited warning, if the pipeline has an L2.
fn flush(py: Python<'_>, pipeline: &Pipeline) {
    if let Some(l2) = pipeline.l2() {
        flush_warning(py, l2);
    }
}

/// The part of a `check_async` that missed L1 and is waiting for the L2, or a slow request
/// miss handed to a worker thread.
#[pyclass(name = "PendingDecision", module = "regoguard._regoguard", frozen)]
pub struct PyPendingDecision {
    authorizer: Py<PyAuthorizer>,
    pending: Arc<Pending>,
    /// The request spec whose moving average this miss feeds (a deferred request miss).
    spec: Option<Py<PyRequestSpec>>,
}

#[pymethods]
impl PyPendingDecision {
    /// Evaluates (the L2 missed, or a slow request miss on a worker thread), releasing the GIL.
    fn evaluate(&self, py: Python<'_>) -> PyResult<PyDecision> {
        let this = self.authorizer.get();
        let t = clock::now_ns();
        let decided = this
            .decide_miss(py, &self.pending.check(), self.pending.key())
            .py()?;
        if let Some(spec) = &self.spec {
            spec.get().observe_miss(clock::now_ns().saturating_sub(t));
        }
        Ok(PyDecision::new(decided))
    }
}

/// The input document the policy sees for `scope` (what `_check_scope` keys and evaluates),
/// as a Python dict: for debugging policies and for `regoguard.build_input`.
#[pyfunction]
#[pyo3(signature = (scope, spec, user, *, include_body = false, body = None, raw_body = None, route = None))]
#[allow(clippy::too_many_arguments)]
pub fn build_request_input<'py>(
    py: Python<'py>,
    scope: &Bound<'py, PyDict>,
    spec: &Bound<'py, PyRequestSpec>,
    user: &Bound<'py, PyAny>,
    include_body: bool,
    body: Option<&Bound<'py, PyAny>>,
    raw_body: Option<&Bound<'py, PyBytes>>,
    route: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
) -> PyResult<Bound<'py, PyAny>> {
    let none = py.None().into_bound(py);
    let extras = RequestExtras::new(user, include_body, body, raw_body, route.as_ref(), &none);
    let mut value = with_written(
        |w| write_request(w, scope, &spec.get().headers, &extras),
        canonical::decode,
    )
    .py()?;
    regoguard_core::request::complete(&mut value);
    to_python(py, &value)
}

/// `set_data`'s path: `"a/b"`, `"/a/b"` (OPA's Data API form), `""` for the root, or a list of
/// keys.
fn data_path(path: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = path.cast::<PyString>() {
        Ok(s.to_str()?
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect())
    } else if path.is_instance_of::<PyList>() || path.is_instance_of::<PyTuple>() {
        path.try_iter()?
            .map(|p| {
                let p = p?;
                let s = p
                    .cast::<PyString>()
                    .map_err(|_| PyTypeError::new_err("each path segment must be a str"))?;
                Ok(s.to_str()?.to_owned())
            })
            .collect()
    } else {
        Err(PyTypeError::new_err(
            "path must be a str like 'projects/42' or a list of str",
        ))
    }
}

/// `{entrypoint: why it runs on the interpreter, or None on the RVM}`.
fn evaluator_reasons<'py>(
    py: Python<'py>,
    compiled: &regoguard_core::engine::Compiled,
) -> PyResult<Bound<'py, PyDict>> {
    let reasons = PyDict::new(py);
    for ep in &compiled.entrypoints {
        reasons.set_item(&*ep.name, ep.fallback_reason.as_deref())?;
    }
    Ok(reasons)
}

/// `evaluator="auto"` never falls back silently: each entrypoint it could not compile for the
/// RVM is logged once, at construction, on the `regoguard` logger.
fn log_interpreter_fallbacks(py: Python<'_>, compiled: &regoguard_core::engine::Compiled) {
    if compiled.evaluator() != Evaluator::Auto {
        return;
    }
    for ep in &compiled.entrypoints {
        if let Some(reason) = &ep.fallback_reason {
            let message = format!(
                "regoguard: {} runs on the interpreter, the RVM cannot compile it: {reason}",
                ep.name
            );
            let _ = py
                .import("logging")
                .and_then(|m| m.call_method1("getLogger", ("regoguard",)))
                .and_then(|log| log.call_method1("warning", (message,)));
        }
    }
}

impl Drop for PyAuthorizer {
    fn drop(&mut self) {
        // Forget this authorizer's allow_net.
        regoguard_core::builtins::http::configure(
            self.inner().current().owner(),
            regoguard_core::builtins::http::NetConfig::default(),
        );
    }
}
