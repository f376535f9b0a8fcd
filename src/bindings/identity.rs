//! `JWTIdentity`: a bearer token read from the raw ASGI scope and verified in Rust
//! (`crates/regoguard-core/src/identity.rs`), handed to the scope reader as a
//! `VerifiedToken` whose canonical claims `write_request` copies into `input.user`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use super::convert::{to_python, with_written, write_value};
use super::errors::{IntoPyErr, IntoPyResult};
use super::hooks::hooks;
use regoguard_core::builtins::jwt::{self, Alg, Key, VerificationKey};
use regoguard_core::clock;
use regoguard_core::error::Error;
use regoguard_core::identity::{
    parse_jwks, IdentityConfig, Rejection, TokenCache, TokenVerifier, VerifiedToken,
};

/// The algorithms accepted by default: every asymmetric one (an HMAC secret must be asked for).
const DEFAULT_ALGORITHMS: [&str; 10] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

/// A verified bearer token: what `JWTIdentity` returns and `input.user` is written from.
#[pyclass(name = "VerifiedToken", module = "regoguard._regoguard", frozen)]
pub struct PyVerifiedToken {
    pub inner: Arc<VerifiedToken>,
}

#[pymethods]
impl PyVerifiedToken {
    /// Every claim of the token's payload.
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(
            py,
            &regorus::Value::from(serde_json::Value::Object(self.inner.claims.clone())),
        )
    }

    /// `input.user`: the chosen claims.
    #[getter]
    fn user<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = regoguard_core::canonical::decode(&self.inner.user_json).py()?;
        to_python(py, &v)
    }

    #[getter]
    fn alg(&self) -> &'static str {
        self.inner.alg.name()
    }

    #[getter]
    fn kid(&self) -> Option<&str> {
        self.inner.kid.as_deref()
    }

    #[getter]
    fn exp(&self) -> Option<f64> {
        self.inner.exp
    }

    fn __repr__(&self) -> String {
        format!(
            "VerifiedToken(alg={:?}, kid={:?}, exp={:?})",
            self.inner.alg.name(),
            self.inner.kid,
            self.inner.exp
        )
    }
}

/// See `_regoguard.pyi` for the user reference.
#[pyclass(name = "JWTIdentity", module = "regoguard._regoguard", frozen)]
pub struct PyJWTIdentity {
    verifier: Arc<TokenVerifier>,
    cache: TokenCache<Arc<Py<PyVerifiedToken>>>,
    /// The header's lower-cased name, as ASGI servers send names.
    header: Vec<u8>,
    /// `Some("bearer")`: the value must be `Bearer <token>` (case-insensitive scheme).
    scheme: Option<String>,
    required: bool,
    rejections: [AtomicU64; Rejection::ALL.len()],
}

fn config_error(m: impl Into<String>) -> PyErr {
    Error::config(m.into()).into_pyerr()
}

fn json_text(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    let bytes = with_written(|w| write_value(w, obj, what), |b| Ok(b.to_vec())).py()?;
    String::from_utf8(bytes).map_err(|_| config_error(format!("{what} is not JSON text")))
}

/// One `keys=` item: a PEM (or JWK JSON) string, an HMAC secret as bytes, or a JWK dict.
fn keys_of(item: &Bound<'_, PyAny>, out: &mut Vec<VerificationKey>) -> PyResult<()> {
    if let Ok(b) = item.cast::<PyBytes>() {
        let secret = b.as_bytes();
        if secret.is_empty() || secret.len() > jwt::MAX_KEY_LEN {
            return Err(config_error(
                "JWTIdentity: an HMAC secret (bytes) must be 1 to 262144 bytes",
            ));
        }
        out.push(VerificationKey {
            kid: None,
            alg: None,
            key: Key::Secret(secret.to_vec()),
        });
        return Ok(());
    }
    if item.cast::<PyString>().is_ok() || item.cast::<PyDict>().is_ok() {
        let text = json_text(item, "keys")?;
        let mut parsed =
            jwt::parse_keys(&text).map_err(|e| config_error(format!("JWTIdentity: keys: {e}")))?;
        out.append(&mut parsed);
        return Ok(());
    }
    Err(pyo3::exceptions::PyTypeError::new_err(format!(
        "JWTIdentity: keys items must be str (PEM or JWK JSON), bytes (an HMAC secret) or dict (a JWK), got {}",
        item.get_type().name()?
    )))
}

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    if !(s.is_finite() && s >= 0.0) {
        return Err(config_error(format!(
            "{name} must be a number >= 0, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s.min(1e9)))
}

#[pymethods]
impl PyJWTIdentity {
    #[new]
    #[pyo3(signature = (*, keys = None, jwks = None, jwks_url = None, issuer = None,
                        audience = None, algorithms = None, leeway_seconds = 30.0,
                        header = "authorization", scheme = "Bearer", claims = None,
                        required = false, cache_ttl_seconds = 300.0, cache_size = 10_000,
                        max_token_bytes = 8192, jwks_timeout_seconds = 5.0,
                        jwks_min_refresh_seconds = 30.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        keys: Option<&Bound<'_, PyAny>>,
        jwks: Option<&Bound<'_, PyAny>>,
        jwks_url: Option<String>,
        issuer: Option<String>,
        audience: Option<String>,
        algorithms: Option<Vec<String>>,
        leeway_seconds: f64,
        header: &str,
        scheme: &str,
        claims: Option<Vec<String>>,
        required: bool,
        cache_ttl_seconds: f64,
        cache_size: usize,
        max_token_bytes: usize,
        jwks_timeout_seconds: f64,
        jwks_min_refresh_seconds: f64,
    ) -> PyResult<Self> {
        let mut static_keys = Vec::new();
        if let Some(k) = keys.filter(|k| !k.is_none()) {
            if k.cast::<PyList>().is_ok() || k.cast::<PyTuple>().is_ok() {
                for item in k.try_iter()? {
                    keys_of(&item?, &mut static_keys)?;
                }
            } else {
                keys_of(k, &mut static_keys)?;
            }
        }
        if let Some(set) = jwks.filter(|k| !k.is_none()) {
            let text = json_text(set, "jwks")?;
            let mut parsed =
                parse_jwks(&text).map_err(|e| config_error(format!("JWTIdentity: jwks: {e}")))?;
            static_keys.append(&mut parsed);
        }
        let names = algorithms
            .unwrap_or_else(|| DEFAULT_ALGORITHMS.iter().map(|s| (*s).to_owned()).collect());
        let mut algs = Vec::with_capacity(names.len());
        for n in &names {
            let a = Alg::parse(n).ok_or_else(|| {
                config_error(format!(
                    "JWTIdentity: unknown algorithm {n:?} (alg \"none\" is never accepted)"
                ))
            })?;
            algs.push(a);
        }
        let header = header.trim().to_ascii_lowercase();
        if header.is_empty() {
            return Err(config_error("JWTIdentity: header must name a header"));
        }
        if max_token_bytes == 0 || max_token_bytes > jwt::MAX_TOKEN_LEN {
            return Err(config_error(format!(
                "JWTIdentity: max_token_bytes must be 1 to {}",
                jwt::MAX_TOKEN_LEN
            )));
        }
        let config = IdentityConfig {
            keys: static_keys,
            jwks_url,
            issuer,
            audience,
            algorithms: algs,
            leeway: seconds("leeway_seconds", leeway_seconds)?,
            claims,
            max_token_bytes,
            jwks_timeout: seconds("jwks_timeout_seconds", jwks_timeout_seconds)?,
            jwks_min_refresh: seconds("jwks_min_refresh_seconds", jwks_min_refresh_seconds)?,
        };
        let timeout = config.jwks_timeout;
        let verifier = Arc::new(TokenVerifier::new(config).py()?);
        // The first JWKS fetch, bounded by its timeout; a failure is not fatal (the thread
        // retries, and `stats()["jwks"]["error"]` says why).
        let v = verifier.clone();
        py.detach(|| v.wait_for_keys(timeout + Duration::from_millis(100)));
        Ok(Self {
            verifier,
            cache: TokenCache::new(cache_size, seconds("cache_ttl_seconds", cache_ttl_seconds)?),
            header: header.into_bytes(),
            scheme: Some(scheme.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase),
            required,
            rejections: [const { AtomicU64::new(0) }; Rejection::ALL.len()],
        })
    }

    /// The identity of the request in `scope`: a `VerifiedToken`, or None without a token.
    fn __call__(&self, py: Python<'_>, scope: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.identify(py, scope)
    }
    /// Counters: token cache hits/misses/entries, rejections by reason, the JWKS fetches.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("hits", self.cache.hits.load(Ordering::Relaxed))?;
        d.set_item("misses", self.cache.misses.load(Ordering::Relaxed))?;
        d.set_item("entries", self.cache.len())?;
        let r = PyDict::new(py);
        for (reason, n) in Rejection::ALL.iter().zip(&self.rejections) {
            r.set_item(reason.label(), n.load(Ordering::Relaxed))?;
        }
        d.set_item("rejections", r)?;
        if let Some(j) = self.verifier.jwks() {
            let s = PyDict::new(py);
            s.set_item("url", j.url())?;
            s.set_item("keys", j.keys().len())?;
            s.set_item("fetched", j.fetched.load(Ordering::Relaxed))?;
            s.set_item("failed", j.failed.load(Ordering::Relaxed))?;
            s.set_item("error", j.last_error())?;
            d.set_item("jwks", s)?;
        } else {
            d.set_item("jwks", py.None())?;
        }
        Ok(d)
    }

    /// Forgets every cached verification (a revoked key: tokens are verified again).
    fn clear_cache(&self) {
        self.cache.clear();
    }

    #[getter]
    fn required(&self) -> bool {
        self.required
    }

    #[getter]
    fn header(&self) -> String {
        String::from_utf8_lossy(&self.header).into_owned()
    }

    #[getter]
    fn algorithms(&self) -> Vec<&'static str> {
        self.verifier
            .config()
            .algorithms
            .iter()
            .map(|a| a.name())
            .collect()
    }

    #[getter]
    fn issuer(&self) -> Option<String> {
        self.verifier.config().issuer.clone()
    }

    #[getter]
    fn audience(&self) -> Option<String> {
        self.verifier.config().audience.clone()
    }

    fn __repr__(&self) -> String {
        let c = self.verifier.config();
        format!(
            "JWTIdentity(issuer={:?}, audience={:?}, algorithms={:?}, jwks_url={:?}, required={})",
            c.issuer,
            c.audience,
            self.algorithms(),
            c.jwks_url,
            if self.required { "True" } else { "False" }
        )
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != b' ').map_or(start, |i| i + 1);
    &b[start..end]
}

impl PyJWTIdentity {
    /// `__call__` without the Python call: the middleware's gate calls this directly.
    pub fn identify(&self, py: Python<'_>, scope: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let headers = match scope.cast::<PyDict>() {
            Ok(d) => d.get_item(intern!(py, "headers"))?,
            Err(_) => scope.get_item(intern!(py, "headers")).ok(),
        };
        let mut found: Option<Bound<'_, PyBytes>> = None;
        if let Some(list) = headers {
            if let Ok(list) = list.cast::<PyList>() {
                // The usual shape (a list of 2-tuples): the name is compared before the value
                // is looked at, and nothing is extracted for the other headers.
                for pair in list.iter() {
                    let pair = pair.cast_into::<PyTuple>().map_err(PyErr::from)?;
                    if pair.len() != 2 {
                        return Err(PyValueError::new_err("scope headers must be pairs"));
                    }
                    let name = pair.get_borrowed_item(0)?;
                    if name.cast::<PyBytes>()?.as_bytes() == self.header.as_slice() {
                        found = Some(pair.get_item(1)?.cast_into::<PyBytes>()?);
                        break; // the first one, as request.headers.get() reads it
                    }
                }
            } else {
                for pair in list.try_iter()? {
                    let (name, value): (Bound<'_, PyBytes>, Bound<'_, PyBytes>) =
                        pair?.extract()?;
                    if name.as_bytes() == self.header.as_slice() {
                        found = Some(value);
                        break;
                    }
                }
            }
        }
        let Some(value) = found else {
            return self.missing(py);
        };
        let raw = value.as_bytes();
        let token = match &self.scheme {
            None => trim(raw),
            Some(scheme) => {
                let s = scheme.as_bytes();
                if raw.len() > s.len()
                    && raw[..s.len()].eq_ignore_ascii_case(s)
                    && raw[s.len()] == b' '
                {
                    trim(&raw[s.len() + 1..])
                } else {
                    // Another scheme (Basic ...): no bearer token.
                    return self.missing(py);
                }
            }
        };
        if token.is_empty() {
            return self.missing(py);
        }
        if token.len() > self.verifier.config().max_token_bytes {
            return Err(self.reject(py, Rejection::TooLarge));
        }
        let generation = self.verifier.generation();
        if let Some(hit) = self.cache.get(token, clock::now_ns(), generation) {
            return Ok(hit.clone_ref(py).into_any());
        }
        let Ok(text) = std::str::from_utf8(token) else {
            return Err(self.reject(py, Rejection::Malformed));
        };
        let verifier = &self.verifier;
        match py.detach(|| verifier.verify(text, clock::unix_ns())) {
            Ok(v) => {
                let until = v.valid_until_unix_ns;
                let obj = Py::new(py, PyVerifiedToken { inner: Arc::new(v) })?;
                self.cache
                    .insert(token, Arc::new(obj.clone_ref(py)), until, generation);
                Ok(obj.into_any())
            }
            Err(r) => Err(self.reject(py, r)),
        }
    }

    fn missing(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.required {
            Err(self.reject(py, Rejection::Missing))
        } else {
            Ok(py.None())
        }
    }

    /// Counts `r` and builds the `regoguard.TokenError` (a 401 `HTTPException`) to raise.
    fn reject(&self, py: Python<'_>, r: Rejection) -> PyErr {
        let r = r.counted();
        if let Some(n) = Rejection::ALL
            .iter()
            .position(|x| *x == r)
            .and_then(|i| self.rejections.get(i))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let made = hooks(py).and_then(|h| h.token_error.bind(py).call1((r.label(),)));
        match made {
            Ok(exc) => PyErr::from_value(exc),
            Err(e) => e,
        }
    }
}
