//! `_Gate`: `RegoGuardMiddleware`'s hit path as one native call (ARCHITECTURE.md, "The
//! request's way").
//!
//! `RegoGuardMiddleware.__call__` is a plain function that returns what this returns, so an
//! allowed L1 hit runs no Python of the middleware: no coroutine of its own, no frame, no
//! Python-level identity call for `JWTIdentity` or Starlette's default user. The gate checks
//! the scope's type and the excluded paths, reads the identity, decides, and on an allowed
//! decision sets `scope["regoguard"]` and returns the app's own coroutine
//! (`app(scope, receive, send)`). Everything else goes back to Python before anything was
//! answered: a denial, a miss to evaluate on a worker thread, an error, an identity that
//! raised (`_resume`), or a scope the gate does not read (`_call`, the whole Python path).

use std::collections::HashSet;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::authorizer::{PyAuthorizer, PyDecision};
use super::identity::PyJWTIdentity;
use super::request::{PyRequestSpec, RequestExtras};

/// Where the user comes from.
enum Identity {
    /// `regoguard.default_identity`: Starlette's `scope["user"]`. Without one the user is
    /// `None` and no Python runs; with one the Python function reads it.
    Starlette(Py<PyAny>),
    /// `JWTIdentity`: the bearer token verified (or found in its cache) in Rust.
    Jwt(Py<PyJWTIdentity>),
    /// Any other synchronous callable.
    Call(Py<PyAny>),
}

/// Built by `RegoGuardMiddleware` when its requests take the plain path (no body, no
/// `input_builder`, a synchronous identity, no shadow); see the module comment.
#[pyclass(name = "_Gate", module = "regoguard._regoguard", frozen)]
pub struct PyGate {
    app: Py<PyAny>,
    authorizer: Py<PyAuthorizer>,
    spec: Py<PyRequestSpec>,
    identity: Identity,
    exact: HashSet<String>,
    prefixes: Vec<String>,
    /// The middleware's `_resume(scope, receive, send, user, outcome)`: a coroutine that
    /// answers whatever is not an allowed decision.
    resume: Py<PyAny>,
    /// The middleware's `_call(scope, receive, send)`: the whole Python path.
    call: Py<PyAny>,
    /// The `user` `_resume` receives when the identity raised (`outcome` is the exception).
    no_user: Py<PyAny>,
}

#[pymethods]
impl PyGate {
    #[new]
    #[pyo3(signature = (*, app, authorizer, spec, identity, default_identity, exact, prefixes, resume, call, no_user))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        app: Py<PyAny>,
        authorizer: Py<PyAuthorizer>,
        spec: Py<PyRequestSpec>,
        identity: &Bound<'_, PyAny>,
        default_identity: &Bound<'_, PyAny>,
        exact: HashSet<String>,
        prefixes: Vec<String>,
        resume: Py<PyAny>,
        call: Py<PyAny>,
        no_user: Py<PyAny>,
    ) -> Self {
        let identity = if identity.is(default_identity) {
            Identity::Starlette(identity.clone().unbind())
        } else if let Ok(jwt) = identity.cast::<PyJWTIdentity>() {
            Identity::Jwt(jwt.clone().unbind())
        } else {
            Identity::Call(identity.clone().unbind())
        };
        Self {
            app,
            authorizer,
            spec,
            identity,
            exact,
            prefixes,
            resume,
            call,
            no_user,
        }
    }

    /// Returns the awaitable that answers the request: the app's coroutine for an allowed
    /// decision, else one of the middleware's.
    fn __call__<'py>(
        &self,
        scope: &Bound<'py, PyAny>,
        receive: &Bound<'py, PyAny>,
        send: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = scope.py();
        let Ok(d) = scope.cast::<PyDict>() else {
            return self.call.bind(py).call1((scope, receive, send));
        };
        match self.passes(d)? {
            Some(true) => return self.app.bind(py).call1((scope, receive, send)),
            Some(false) => {}
            None => return self.call.bind(py).call1((scope, receive, send)),
        }
        let user = match self.user(d) {
            Ok(user) => user,
            Err(e) => {
                let resume = self.resume.bind(py);
                return resume.call1((scope, receive, send, &self.no_user, e.into_value(py)));
            }
        };
        let none = py.None().into_bound(py);
        let extras = RequestExtras::new(&user, false, None, None, None, &none);
        let outcome = match PyAuthorizer::check_request(
            self.authorizer.bind(py),
            d,
            self.spec.bind(py),
            &extras,
            None,
        ) {
            Ok(outcome) => outcome.into_bound(py),
            Err(e) => e.into_value(py).into_bound(py).into_any(),
        };
        if let Ok(decision) = outcome.cast::<PyDecision>() {
            if decision.get().allows() {
                d.set_item(intern!(py, "regoguard"), decision)?;
                return self.app.bind(py).call1((scope, receive, send));
            }
        }
        self.resume
            .bind(py)
            .call1((scope, receive, send, user, outcome))
    }
}

impl PyGate {
    /// `Some(true)`: not for the middleware (a lifespan scope, an excluded path), straight to
    /// the app; `Some(false)`: to be decided; `None`: a scope the Python path must read (no or
    /// an odd `type`, a `path` that is not UTF-8).
    fn passes(&self, d: &Bound<'_, PyDict>) -> PyResult<Option<bool>> {
        let py = d.py();
        let Some(kind) = d.get_item(intern!(py, "type"))? else {
            return Ok(None);
        };
        let Ok(kind) = kind.cast::<PyString>() else {
            return Ok(None);
        };
        match kind.to_str() {
            Ok("http" | "websocket") => {}
            Ok(_) => return Ok(Some(true)),
            Err(_) => return Ok(None),
        }
        if self.exact.is_empty() && self.prefixes.is_empty() {
            return Ok(Some(false));
        }
        let Some(path) = d.get_item(intern!(py, "path"))? else {
            return Ok(Some(false)); // no path: decided, and refused with a 400 there
        };
        let Ok(path) = path.cast::<PyString>() else {
            return Ok(Some(false));
        };
        let Ok(path) = path.to_str() else {
            return Ok(None);
        };
        Ok(Some(
            self.exact.contains(path) || self.prefixes.iter().any(|p| path.starts_with(&**p)),
        ))
    }

    fn user<'py>(&self, d: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyAny>> {
        let py = d.py();
        match &self.identity {
            Identity::Starlette(f) => match d.get_item(intern!(py, "user"))? {
                Some(u) if !u.is_none() => f.bind(py).call1((d,)),
                _ => Ok(py.None().into_bound(py)),
            },
            Identity::Jwt(j) => Ok(j.get().identify(py, d.as_any())?.into_bound(py)),
            Identity::Call(f) => f.bind(py).call1((d,)),
        }
    }
}
