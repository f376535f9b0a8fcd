//! The request input document, written from the raw ASGI scope (see `src/request.rs`).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use super::convert::{text, write_value};
use crate::canonical::{input_error, prefix_path, CanonicalWriter};
use crate::error::Result;
use crate::request::{write_query, HeaderCollector, HeaderFilter};

/// Which parts of a request reach the policy; built once per middleware or dependency.
#[pyclass(name = "RequestSpec", module = "regoguard._regoguard", frozen)]
pub struct PyRequestSpec {
    pub headers: HeaderFilter,
}

#[pymethods]
impl PyRequestSpec {
    #[new]
    #[pyo3(signature = (*, include_headers = Vec::new()))]
    fn new(include_headers: Vec<String>) -> Self {
        Self { headers: HeaderFilter::new(include_headers.iter().map(String::as_str)) }
    }

    #[getter]
    fn include_headers(&self) -> Vec<&str> {
        self.headers.names().collect()
    }
}

/// What `write_request` needs besides the scope.
pub struct RequestExtras<'a, 'py> {
    pub user: &'a Bound<'py, PyAny>,
    /// `Some` when the body is part of the input (`include_body=True`).
    pub body: Option<&'a Bound<'py, PyAny>>,
    /// The route template and path parameters (the `Authorize` dependency).
    pub route: Option<(&'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>)>,
}

impl<'a, 'py> RequestExtras<'a, 'py> {
    /// The extras of a call: `body` (or `none` for a missing one) only with `include_body`.
    pub fn new(
        user: &'a Bound<'py, PyAny>,
        include_body: bool,
        body: Option<&'a Bound<'py, PyAny>>,
        route: Option<&'a (Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        none: &'a Bound<'py, PyAny>,
    ) -> Self {
        Self { user, body: include_body.then(|| body.unwrap_or(none)), route: route.map(|(t, p)| (t, p)) }
    }
}

fn scope_item<'py>(scope: &Bound<'py, PyDict>, key: &Bound<'py, PyString>) -> Result<Option<Bound<'py, PyAny>>> {
    scope.get_item(key).map_err(|e| input_error(e.to_string()))
}

fn scope_str<'a>(value: &'a Bound<'_, PyAny>, name: &str) -> Result<&'a str> {
    let s = value.cast::<PyString>().map_err(|_| prefix_path(input_error("must be a str".into()), name))?;
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
    if let Some(body) = extras.body {
        w.key("body");
        write_value(w, body, "input.body")?;
        w.comma();
    }

    w.key("headers");
    let mut headers = HeaderCollector::default();
    if !spec.is_empty() {
        if let Some(list) = scope_item(scope, intern!(py, "headers"))? {
            let iter = list.try_iter().map_err(|e| input_error(e.to_string()))?;
            for pair in iter {
                let pair = pair.map_err(|e| input_error(e.to_string()))?;
                let (name, value): (Bound<'_, PyBytes>, Bound<'_, PyBytes>) =
                    pair.extract().map_err(|_| prefix_path(input_error("must be (bytes, bytes) pairs".into()), "scope.headers"))?;
                if spec.allows(name.as_bytes()) {
                    headers.push(name.as_bytes(), value.as_bytes());
                }
            }
        }
    }
    headers.write(w);

    let websocket = match scope_item(scope, intern!(py, "type"))? {
        Some(t) => scope_str(&t, "scope.type")? == "websocket",
        None => false,
    };
    w.comma();
    w.key("method");
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
    w.comma();
    w.key("path");
    w.str(path);

    if let Some((_, params)) = extras.route {
        w.comma();
        w.key("path_params");
        write_value(w, params, "input.path_params")?;
    }

    // `path_segments` is derived from `path` on a miss (`request::complete`), not hashed.

    w.comma();
    w.key("query");
    match scope_item(scope, intern!(py, "query_string"))? {
        Some(q) => {
            let q = q.cast::<PyBytes>().map_err(|_| prefix_path(input_error("must be bytes".into()), "scope.query_string"))?;
            write_query(w, q.as_bytes());
        }
        None => write_query(w, b""),
    }

    if let Some((template, _)) = extras.route {
        w.comma();
        w.key("route");
        write_value(w, template, "input.route")?;
    }

    w.comma();
    w.key("user");
    write_value(w, extras.user, "input.user")?;

    if websocket {
        w.comma();
        w.key("websocket");
        w.bool(true);
    }
    w.close_object();
    Ok(())
}
