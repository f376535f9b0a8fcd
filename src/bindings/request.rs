//! The request input document, written from the raw ASGI scope (see `src/request.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use super::convert::{text, write_value};
use super::errors::IntoPyErr;
use super::identity::PyVerifiedToken;
use regoguard_core::canonical::{input_error, prefix_path, CanonicalWriter};
use regoguard_core::error::Result;
use regoguard_core::request::{write_query, HeaderCollector, HeaderFilter};

/// Which parts of a request reach the policy; built once per middleware or dependency.
#[pyclass(name = "RequestSpec", module = "regoguard._regoguard", frozen)]
pub struct PyRequestSpec {
    pub headers: HeaderFilter,
    /// Misses whose moving-average evaluation time is above this are handed back as a
    /// `PendingDecision` for a worker thread; `None`: every miss is evaluated in the call.
    offload_after_ns: Option<u64>,
    /// Smoothed duration of this caller's misses (ns, 1/8 weight); 0 until the first one.
    miss_ewma_ns: AtomicU64,
}

/// An RFC 9110 `token`: the characters a header field name may hold.
fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[pymethods]
impl PyRequestSpec {
    #[new]
    #[pyo3(signature = (*, include_headers = Vec::new(), offload_after_seconds = None))]
    fn new(include_headers: Vec<String>, offload_after_seconds: Option<f64>) -> PyResult<Self> {
        let offload_after_ns = match offload_after_seconds {
            Some(s) if !(s.is_finite() && s >= 0.0) => {
                return Err(PyValueError::new_err(format!(
                    "offload_after_seconds must be >= 0, got {s}"
                )))
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(s) => Some((s * 1e9) as u64),
            None => None,
        };
        // A name Starlette can never look up (not an RFC 9110 token: non-ASCII, spaces,
        // separators) would hand the policy a header under a name the app never sees.
        if let Some(bad) = include_headers.iter().find(|h| !is_header_token(h)) {
            return Err(regoguard_core::Error::config(format!(
                "include_headers: {bad:?} is not an HTTP header name (RFC 9110 token characters only)"
            ))
            .into_pyerr());
        }
        Ok(Self {
            headers: HeaderFilter::new(include_headers.iter().map(String::as_str)),
            offload_after_ns,
            miss_ewma_ns: AtomicU64::new(0),
        })
    }

    #[getter]
    fn include_headers(&self) -> Vec<&str> {
        self.headers.names().collect()
    }

    #[getter]
    fn offload_after_seconds(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        self.offload_after_ns.map(|ns| ns as f64 / 1e9)
    }
}

impl PyRequestSpec {
    /// Whether misses may be deferred at all (else `_check_scope` always decides).
    pub fn offloads(&self) -> bool {
        self.offload_after_ns.is_some()
    }

    /// Whether the next miss goes to a worker thread: its entrypoint's misses were slow, or
    /// none was measured yet (a first miss of an unknown policy must not stall the loop).
    pub fn defers_miss(&self) -> bool {
        self.offload_after_ns.is_some_and(|limit| {
            let ewma = self.miss_ewma_ns.load(Ordering::Relaxed);
            ewma == 0 || ewma > limit
        })
    }

    /// Folds one miss's evaluation time into the moving average.
    pub fn observe_miss(&self, took_ns: u64) {
        let old = self.miss_ewma_ns.load(Ordering::Relaxed);
        let new = if old == 0 {
            took_ns
        } else {
            old - old / 8 + took_ns / 8
        };
        self.miss_ewma_ns.store(new.max(1), Ordering::Relaxed);
    }
}

/// What `write_request` needs besides the scope.
pub struct RequestExtras<'a, 'py> {
    pub user: &'a Bound<'py, PyAny>,
    /// `Some` when the body is part of the input (`include_body=True`); Python's `...` when
    /// the body is not JSON (then only `raw_body` is written).
    pub body: Option<&'a Bound<'py, PyAny>>,
    /// The raw body bytes (`input.raw_body`), with `include_body=True`.
    pub raw_body: Option<&'a Bound<'py, PyBytes>>,
    /// The route template and path parameters (the `Authorize` dependency).
    pub route: Option<(&'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>)>,
}

impl<'a, 'py> RequestExtras<'a, 'py> {
    /// The extras of a call: `body` (or `none` for a missing one) only with `include_body`.
    pub fn new(
        user: &'a Bound<'py, PyAny>,
        include_body: bool,
        body: Option<&'a Bound<'py, PyAny>>,
        raw_body: Option<&'a Bound<'py, PyBytes>>,
        route: Option<&'a (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        none: &'a Bound<'py, PyAny>,
    ) -> Self {
        Self {
            user,
            body: include_body.then(|| body.unwrap_or(none)),
            raw_body: raw_body.filter(|_| include_body),
            route: route.map(|(t, p)| (t, p)),
        }
    }
}

/// A header value held by the scope, read without copying.
struct RawValue<'py>(Bound<'py, PyBytes>);

impl AsRef<[u8]> for RawValue<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn scope_item<'py>(
    scope: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
) -> Result<Option<Bound<'py, PyAny>>> {
    scope.get_item(key).map_err(|e| input_error(e.to_string()))
}

fn scope_str<'a>(value: &'a Bound<'_, PyAny>, name: &str) -> Result<&'a str> {
    let s = value
        .cast::<PyString>()
        .map_err(|_| prefix_path(input_error("must be a str".into()), name))?;
    text(s).map_err(|e| prefix_path(e, name))
}

/// Writes the input document of the request in `scope` (keys in canonical order).
///
/// # Errors
/// `Error::Input` naming the part of the request (or of the user/body) with no JSON form.
pub fn write_request(
    w: &mut CanonicalWriter,
    scope: &Bound<'_, PyDict>,
    spec: &HeaderFilter,
    extras: &RequestExtras<'_, '_>,
) -> Result<()> {
    let py = scope.py();
    w.open_object();
    if let Some(body) = extras.body.filter(|b| !b.is(py.Ellipsis())) {
        w.raw(br#""body":"#);
        write_value(w, body, "input.body")?;
        w.comma();
    }

    // `header_values` then `headers` (see `HeaderCollector`). Without header names both are
    // always empty: they are left out of the bytes and added back by `request::complete`.
    if !spec.is_empty() {
        let mut headers = HeaderCollector::new(spec);
        if let Some(list) = scope_item(scope, intern!(py, "headers"))? {
            let iter = list.try_iter().map_err(|e| input_error(e.to_string()))?;
            for pair in iter {
                let pair = pair.map_err(|e| input_error(e.to_string()))?;
                let (name, value): (Bound<'_, PyBytes>, Bound<'_, PyBytes>) =
                    pair.extract().map_err(|_| {
                        prefix_path(
                            input_error("must be (bytes, bytes) pairs".into()),
                            "scope.headers",
                        )
                    })?;
                headers.push(name.as_bytes(), RawValue(value));
            }
        }
        headers.write(w);
        w.comma();
    }

    let websocket = match scope_item(scope, intern!(py, "type"))? {
        Some(t) => scope_str(&t, "scope.type")? == "websocket",
        None => false,
    };
    w.raw(br#""method":"#);
    if websocket {
        // The handshake is a GET; `websocket: true` tells the policy what it opens.
        w.str("GET");
    } else {
        let method = scope_item(scope, intern!(py, "method"))?
            .ok_or_else(|| prefix_path(input_error("is missing".into()), "scope.method"))?;
        w.str(scope_str(&method, "scope.method")?);
    }

    let path = scope_item(scope, intern!(py, "path"))?
        .ok_or_else(|| prefix_path(input_error("is missing".into()), "scope.path"))?;
    let path = scope_str(&path, "input.path")?;
    w.raw(br#","path":"#);
    w.str(path);

    if let Some((_, params)) = extras.route {
        w.raw(br#","path_params":"#);
        write_value(w, params, "input.path_params")?;
    }

    // `path_segments` is derived from `path` on a miss (`request::complete`), not hashed.

    // An empty query is left out like the headers (`request::complete` adds `{}`).
    if let Some(q) = scope_item(scope, intern!(py, "query_string"))? {
        let q = q
            .cast::<PyBytes>()
            .map_err(|_| prefix_path(input_error("must be bytes".into()), "scope.query_string"))?;
        if !q.as_bytes().is_empty() {
            w.raw(br#","query":"#);
            write_query(w, q.as_bytes());
        }
    }

    if let Some(raw) = extras.raw_body {
        let raw = raw.as_bytes();
        w.raw(br#","raw_body":"#);
        w.open_object();
        w.raw(br#""size":"#);
        w.u64(raw.len() as u64);
        w.raw(br#","text":"#);
        w.str(&String::from_utf8_lossy(raw));
        w.close_object();
    }

    if let Some((template, _)) = extras.route {
        w.raw(br#","route":"#);
        write_value(w, template, "input.route")?;
    }

    if let Ok(token) = extras.user.cast::<PyVerifiedToken>() {
        // JWTIdentity's verified token: its canonical fragments, copied (README, "JWT identity").
        let t = &token.get().inner;
        w.raw(br#","token":"#);
        w.raw(&t.token_json);
        w.raw(br#","user":"#);
        w.raw(&t.user_json);
    } else {
        w.raw(br#","user":"#);
        write_value(w, extras.user, "input.user")?;
    }

    if websocket {
        w.raw(br#","websocket":"#);
        w.bool(true);
    }
    w.close_object();
    Ok(())
}
