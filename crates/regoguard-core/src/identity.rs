//! Bearer tokens as the request's identity (`JWTIdentity`, README "JWT identity").
//!
//! A token taken from a request header is verified with the very code `io.jwt.decode_verify`
//! uses ([`crate::builtins::jwt::verify`]), restricted to the configured algorithms, and
//! becomes two canonical fragments the scope reader writes into the request document:
//! `input.user` (the chosen claims) and `input.token` (`alg`, `kid`, `exp`). Verified tokens
//! are kept in a bounded [`TokenCache`] until `min(exp + leeway, cache TTL)`, so a repeated
//! token costs one hash and one comparison; a decision that used a token is cached no longer
//! than its `exp` ([`crate::request::complete`] reports it to `eval_context`, ARCHITECTURE.md
//! "Caching rules" 8).
//!
//! Keys are static (`keys=`/`jwks=`) or a JWK set fetched from a URL by a background thread
//! ([`Jwks`]): fetched off the request path, refreshed by `Cache-Control: max-age` and, at
//! most once per `min_refresh`, when a token names an unknown `kid`; the last good set is
//! kept when a fetch fails; every fetch is bounded in time and size.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use quick_cache::sync::Cache;
use quick_cache::Equivalent;
use regorus::Value;
use serde_json::{Map, Value as Json};

use crate::builtins::jwt::{self, Alg, Constraints, Reason, VerificationKey};
use crate::canonical::CanonicalWriter;
use crate::clock;
use crate::error::{Error, Result};
use crate::metrics::{TOKEN_REJECTIONS, TOKEN_REJECTION_REASONS};

/// Why a request's token was refused; [`Rejection::label`] is its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No token, and the identity is `required`.
    Missing,
    /// Not a compact JWS, bad base64 or JSON, a nested token, a non-numeric `exp`/`nbf`.
    Malformed,
    /// Longer than `max_token_bytes`.
    TooLarge,
    /// `alg` not among the configured algorithms (`none` included).
    Algorithm,
    /// The `kid` is not in the key set (a JWKS refresh was requested).
    UnknownKid,
    /// No trusted key verifies the signature.
    Signature,
    /// `iss` missing or wrong.
    Issuer,
    /// `aud` missing, wrong, or present with no `audience` configured.
    Audience,
    /// `exp` passed (beyond the leeway).
    Expired,
    /// `nbf` not reached (beyond the leeway).
    NotYetValid,
    /// There is no key to verify with (a JWKS URL that never answered).
    NoKeys,
}

impl Rejection {
    /// Every rejection, in the order of [`TOKEN_REJECTIONS`].
    pub const ALL: [Rejection; 11] = [
        Rejection::Missing,
        Rejection::Malformed,
        Rejection::TooLarge,
        Rejection::Algorithm,
        Rejection::UnknownKid,
        Rejection::Signature,
        Rejection::Issuer,
        Rejection::Audience,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::NoKeys,
    ];

    /// The `reason` label of `regoguard_token_rejections_total` (the names live in
    /// metrics.rs, with the exposition).
    pub fn label(self) -> &'static str {
        TOKEN_REJECTION_REASONS[self.index()]
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Counts this rejection (process-wide metric) and returns it.
    #[must_use]
    pub fn counted(self) -> Self {
        TOKEN_REJECTIONS[self.index()].fetch_add(1, Ordering::Relaxed);
        self
    }
}

/// What a [`TokenVerifier`] checks.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Static trusted keys (PEM public keys or certificates, JWKs, HMAC secrets).
    pub keys: Vec<VerificationKey>,
    /// A JWK set to fetch and keep fresh.
    pub jwks_url: Option<String>,
    /// The required `iss`.
    pub issuer: Option<String>,
    /// The required audience (one of `aud`).
    pub audience: Option<String>,
    /// The accepted `alg` values (never `none`).
    pub algorithms: Vec<Alg>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claims written into `input.user`; `None`: every claim.
    pub claims: Option<Vec<String>>,
    /// The longest token accepted (bytes).
    pub max_token_bytes: usize,
    /// A JWKS fetch's time limit (connect to last byte).
    pub jwks_timeout: Duration,
    /// The shortest interval between two JWKS fetches (an unknown `kid` asks for one sooner).
    pub jwks_min_refresh: Duration,
}

/// The longest JWKS document read (bytes), as `io.jwt.*` bounds key material.
pub const MAX_JWKS_BYTES: usize = jwt::MAX_KEY_LEN;
/// How long a JWK set is used before it is fetched again when the response says nothing.
const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// The longest `Cache-Control: max-age` honoured.
const MAX_JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A verified token: what the request document gets, and how long it holds.
#[derive(Debug)]
pub struct VerifiedToken {
    /// Canonical bytes of `input.user` (the chosen claims).
    pub user_json: Box<[u8]>,
    /// Canonical bytes of `input.token`: `{"alg", "exp"?, "kid"?}`.
    pub token_json: Box<[u8]>,
    /// Every claim of the payload.
    pub claims: Map<String, Json>,
    /// The header's `alg`.
    pub alg: Alg,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The payload's `exp` (seconds since the epoch).
    pub exp: Option<f64>,
    /// When it stops being valid (Unix ns, `exp` plus the leeway), if it expires.
    pub valid_until_unix_ns: Option<u64>,
}

/// Verifies tokens against the configured keys and constraints.
pub struct TokenVerifier {
    config: IdentityConfig,
    jwks: Option<Arc<Jwks>>,
}

impl TokenVerifier {
    /// A verifier; with a `jwks_url`, starts its fetch thread (the first fetch runs at once;
    /// see [`TokenVerifier::wait_for_keys`]).
    ///
    /// # Errors
    /// `Error::Config`: no key source, no algorithm, or the fetch thread cannot start.
    pub fn new(config: IdentityConfig) -> Result<Self> {
        if config.algorithms.is_empty() {
            return Err(Error::config("JWTIdentity: algorithms must not be empty"));
        }
        if config.keys.is_empty() && config.jwks_url.is_none() {
            return Err(Error::config(
                "JWTIdentity needs keys=, jwks= or jwks_url= (the keys that sign the tokens)",
            ));
        }
        let jwks = match &config.jwks_url {
            Some(url) => Some(Jwks::start(
                url.clone(),
                config.jwks_timeout,
                config.jwks_min_refresh,
            )?),
            None => None,
        };
        Ok(Self { config, jwks })
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// The fetched key set's state, with a `jwks_url`.
    pub fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_deref()
    }

    /// The key set's generation (changes when a JWKS fetch changes the set; 0 without a URL):
    /// a cached verification is only served under the generation it was made with.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.jwks
            .as_ref()
            .map_or(0, |j| j.generation.load(Ordering::Acquire))
    }

    /// Waits (at most `timeout`) until the first JWKS fetch finished; `true` without a URL.
    pub fn wait_for_keys(&self, timeout: Duration) -> bool {
        self.jwks.as_ref().is_none_or(|j| j.wait_first(timeout))
    }

    /// Verifies `token` at `now_unix_ns`.
    ///
    /// # Errors
    /// The [`Rejection`] (not yet counted: the caller counts what it refuses).
    pub fn verify(
        &self,
        token: &str,
        now_unix_ns: u64,
    ) -> std::result::Result<VerifiedToken, Rejection> {
        let c = &self.config;
        if token.len() > c.max_token_bytes {
            return Err(Rejection::TooLarge);
        }
        let header = peek_header(token)?;
        let alg_name = match header.get("alg") {
            Some(Json::String(s)) => s.as_str(),
            _ => return Err(Rejection::Algorithm),
        };
        let alg = Alg::parse(alg_name)
            .filter(|a| c.algorithms.contains(a))
            .ok_or(Rejection::Algorithm)?;
        if header
            .get("cty")
            .and_then(Json::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
        {
            // Nested tokens: the inner layer's algorithm would escape `algorithms`.
            return Err(Rejection::Malformed);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Json::String(s)) => Some(s.as_str()),
            Some(_) => return Err(Rejection::Malformed),
        };
        let fetched = self.jwks.as_ref().map(|j| j.keys());
        let all = c.keys.iter().chain(fetched.iter().flat_map(|k| k.iter()));
        // A JWK that names its algorithm serves no other.
        let candidates: Vec<VerificationKey> = all
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg_name))
            .cloned()
            .collect();
        let kid_known = kid.is_none_or(|kid| {
            candidates
                .iter()
                .any(|k| k.kid.as_deref().is_none_or(|x| x == kid))
        });
        if !kid_known {
            if let Some(j) = &self.jwks {
                j.request_refresh();
            }
            return Err(Rejection::UnknownKid);
        }
        if candidates.is_empty() {
            return Err(Rejection::NoKeys);
        }
        let constraints = Constraints {
            keys: candidates,
            secret: None,
            alg: Some(alg_name.to_owned()),
            iss: c.issuer.clone(),
            aud: c.audience.clone(),
            time_ns: None,
        };
        let leeway_ns = u64::try_from(c.leeway.as_nanos()).unwrap_or(u64::MAX);
        // The leeway: `exp` is checked at now - leeway; a `nbf` within now + leeway is checked
        // again at the `nbf` itself.
        let verified =
            match jwt::verify(token, &constraints, now_unix_ns.saturating_sub(leeway_ns)) {
                Err(Reason::NotYetValid(nbf)) if nbf <= now_unix_ns.saturating_add(leeway_ns) => {
                    jwt::verify(token, &constraints, nbf)
                }
                other => other,
            }
            .map_err(|r| rejection_of(&r))?;
        let exp = verified.exp;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let valid_until_unix_ns = exp.map(|e| {
            if e <= 0.0 {
                0
            } else if e >= 1.8e10 {
                u64::MAX
            } else {
                ((e * 1e9) as u64).saturating_add(leeway_ns)
            }
        });
        let user = match &c.claims {
            None => verified.payload.clone(),
            Some(names) => names
                .iter()
                .filter_map(|n| verified.payload.get(n).map(|v| (n.clone(), v.clone())))
                .collect(),
        };
        let mut token_doc = Map::new();
        token_doc.insert("alg".into(), Json::String(alg_name.to_owned()));
        if let Some(e) = verified.payload.get("exp") {
            token_doc.insert("exp".into(), e.clone());
        }
        if let Some(k) = kid {
            token_doc.insert("kid".into(), Json::String(k.to_owned()));
        }
        Ok(VerifiedToken {
            user_json: canonical_of(user).ok_or(Rejection::Malformed)?,
            token_json: canonical_of(token_doc).ok_or(Rejection::Malformed)?,
            claims: verified.payload,
            alg,
            kid: kid.map(str::to_owned),
            exp,
            valid_until_unix_ns,
        })
    }
}

impl Drop for TokenVerifier {
    fn drop(&mut self) {
        if let Some(j) = &self.jwks {
            j.stop();
        }
    }
}

fn canonical_of(m: Map<String, Json>) -> Option<Box<[u8]>> {
    let mut w = CanonicalWriter::new();
    w.value(&Value::from(Json::Object(m)), "input.user").ok()?;
    Some(w.into_bytes().into_boxed_slice())
}

fn peek_header(token: &str) -> std::result::Result<Map<String, Json>, Rejection> {
    let h = token.split('.').next().unwrap_or("");
    let bytes = jwt::b64url_decode(h).ok_or(Rejection::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Json::Object(m)) => Ok(m),
        _ => Err(Rejection::Malformed),
    }
}

fn rejection_of(r: &Reason) -> Rejection {
    match r {
        Reason::Malformed(_) => Rejection::Malformed,
        Reason::UnknownAlgorithm(_) | Reason::AlgorithmMismatch => Rejection::Algorithm,
        Reason::TooLarge => Rejection::TooLarge,
        Reason::BadSignature => Rejection::Signature,
        Reason::Issuer => Rejection::Issuer,
        Reason::Audience => Rejection::Audience,
        Reason::Expired => Rejection::Expired,
        Reason::NotYetValid(_) => Rejection::NotYetValid,
    }
}

// ---------------------------------------------------------------------------------------
// The token cache.

/// Verified tokens by their exact bytes, each until its own expiry (monotonic ns).
///
/// The key is the token itself (compared in full), so a cached verification is only ever
/// returned for the identical token: as collision-proof as a cryptographic digest, and cheaper
/// on the hit path than hashing a kilobyte with BLAKE3. The bucket hash reads only the token's
/// length and its last [`HASHED_TAIL`] bytes ([`TokenKey`]). Only verified tokens enter,
/// bounded in number and in length (`max_token_bytes`), so an attacker cannot fill it with
/// garbage, nor crowd one bucket: the tail is the end of the signature, which only the issuer
/// can choose.
pub struct TokenCache<V> {
    /// Token → (value, expiry in monotonic ns, key-set generation).
    inner: Cache<TokenKey, (V, u64, u64)>,
    ttl: Duration,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// How many of a token's last bytes its bucket hash reads: 16 base64url characters of the
/// signature, 96 bits no two signed tokens share in practice.
const HASHED_TAIL: usize = 16;

fn hash_token<H: Hasher>(token: &[u8], h: &mut H) {
    h.write_usize(token.len());
    h.write(&token[token.len().saturating_sub(HASHED_TAIL)..]);
}

/// A cached token: equal only to the same bytes, hashed by [`hash_token`].
#[derive(PartialEq, Eq)]
struct TokenKey(Box<[u8]>);

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_token(&self.0, h);
    }
}

/// A token looked up, hashed as its [`TokenKey`] would be.
struct TokenRef<'a>(&'a [u8]);

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_token(self.0, h);
    }
}

impl Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        *self.0 == *key.0
    }
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most `capacity` tokens, each kept at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            inner: Cache::new(capacity.max(1)),
            ttl,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached verification of `token`, if still valid at `now_ns` ([`clock::now_ns`]) and
    /// made under the key set `generation`.
    #[inline]
    pub fn get(&self, token: &[u8], now_ns: u64, generation: u64) -> Option<V> {
        match self.inner.get(&TokenRef(token)) {
            Some((v, expires, g)) if now_ns < expires && g == generation => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Some(_) => {
                self.inner.remove(&TokenRef(token));
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `v` for `token` until `min(now + ttl, valid_until)`; nothing when that is past.
    /// `generation`: the key set's when the verification began.
    pub fn insert(&self, token: &[u8], v: V, valid_until_unix_ns: Option<u64>, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let now = clock::now_ns();
        let ttl_ns = u64::try_from(self.ttl.as_nanos()).unwrap_or(u64::MAX);
        let mut expires = now.saturating_add(ttl_ns);
        if let Some(until) = valid_until_unix_ns {
            let left = until.saturating_sub(clock::unix_ns());
            expires = expires.min(now.saturating_add(left));
        }
        if expires > now {
            self.inner
                .insert(TokenKey(token.into()), (v, expires, generation));
        }
    }

    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn clear(&self) {
        self.inner.clear();
    }
}

// ---------------------------------------------------------------------------------------
// JWKS from a URL.

#[derive(Default)]
struct JwksState {
    /// When the last fetch (good or bad) started.
    last_attempt: Option<Instant>,
    refresh_requested: bool,
    stopped: bool,
    attempts: u64,
    error: Option<String>,
}

/// A JWK set fetched from a URL by its own thread, swapped atomically on success.
pub struct Jwks {
    url: String,
    timeout: Duration,
    min_refresh: Duration,
    keys: RwLock<Arc<Vec<VerificationKey>>>,
    state: Mutex<JwksState>,
    cond: Condvar,
    /// Fetches that succeeded / failed.
    pub fetched: AtomicU64,
    pub failed: AtomicU64,
    /// Bumped whenever a fetch changes the key set: verifications made with an older set are
    /// not served from the [`TokenCache`] (a key taken out of the set stops verifying at once).
    generation: AtomicU64,
}

/// What one fetch of a JWK set gave.
struct Fetched {
    keys: Vec<VerificationKey>,
    max_age: Option<Duration>,
}

impl Jwks {
    fn start(url: String, timeout: Duration, min_refresh: Duration) -> Result<Arc<Self>> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(Error::config(format!(
                "jwks_url must be an http(s) URL, got {url:?}"
            )));
        }
        let jwks = Arc::new(Self {
            url,
            timeout,
            min_refresh,
            keys: RwLock::new(Arc::new(Vec::new())),
            state: Mutex::new(JwksState::default()),
            cond: Condvar::new(),
            fetched: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        });
        let me = jwks.clone();
        std::thread::Builder::new()
            .name("regoguard-jwks".into())
            .spawn(move || me.run())
            .map_err(|e| Error::config(format!("cannot start the JWKS thread: {e}")))?;
        Ok(jwks)
    }

    /// The current key set (the last good one).
    pub fn keys(&self) -> Arc<Vec<VerificationKey>> {
        self.keys.read().clone()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The last fetch's error, `None` after a good one.
    pub fn last_error(&self) -> Option<String> {
        self.state.lock().error.clone()
    }

    /// Asks for a fetch now, or as soon as `min_refresh` has passed since the last one.
    pub fn request_refresh(&self) {
        let mut s = self.state.lock();
        if !s.refresh_requested {
            s.refresh_requested = true;
            self.cond.notify_all();
        }
    }

    fn stop(&self) {
        self.state.lock().stopped = true;
        self.cond.notify_all();
    }

    fn wait_first(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        while s.attempts == 0 {
            if self.cond.wait_until(&mut s, deadline).timed_out() {
                return s.attempts > 0;
            }
        }
        true
    }

    fn run(self: Arc<Self>) {
        loop {
            {
                let mut s = self.state.lock();
                s.last_attempt = Some(Instant::now());
                s.refresh_requested = false;
            }
            let next = match fetch(&self.url, self.timeout) {
                Ok(f) => {
                    let changed = {
                        let mut keys = self.keys.write();
                        let changed = !same_keys(&keys, &f.keys);
                        *keys = Arc::new(f.keys);
                        changed
                    };
                    if changed {
                        self.generation.fetch_add(1, Ordering::Release);
                    }
                    self.fetched.fetch_add(1, Ordering::Relaxed);
                    self.state.lock().error = None;
                    f.max_age
                        .unwrap_or(DEFAULT_JWKS_MAX_AGE)
                        .clamp(self.min_refresh, MAX_JWKS_MAX_AGE.max(self.min_refresh))
                }
                Err(e) => {
                    // The last good set stays; try again after the shortest interval.
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    self.state.lock().error = Some(e);
                    self.min_refresh
                }
            };
            let mut s = self.state.lock();
            s.attempts += 1;
            self.cond.notify_all();
            let started = s.last_attempt.unwrap_or_else(Instant::now);
            loop {
                if s.stopped {
                    return;
                }
                let due = if s.refresh_requested {
                    started + self.min_refresh
                } else {
                    started + next
                };
                if Instant::now() >= due {
                    break;
                }
                let _ = self.cond.wait_until(&mut s, due);
            }
        }
    }
}

fn same_keys(a: &[VerificationKey], b: &[VerificationKey]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.kid == y.kid && x.alg == y.alg && format!("{:?}", x.key) == format!("{:?}", y.key)
        })
}

fn fetch(url: &str, timeout: Duration) -> std::result::Result<Fetched, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        // No redirects: the keys come from the configured URL only (a 3xx is a failed fetch).
        .max_redirects(0)
        .max_redirects_will_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("{url}: HTTP {status}"));
    }
    let max_age = resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(max_age_of);
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES as u64)
        .read_to_string()
        .map_err(|e| format!("{url}: reading the body: {e}"))?;
    Ok(Fetched {
        keys: parse_jwks(&text)?,
        max_age,
    })
}

/// `max-age` of a `Cache-Control` value (`no-cache`/`no-store`: zero, i.e. the shortest
/// refresh interval).
fn max_age_of(cc: &str) -> Option<Duration> {
    let mut out = None;
    for d in cc.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(n) = lower.strip_prefix("max-age=") {
            out = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    out
}

/// The signing keys of a JWK set document: keys for another use (`"use": "enc"`) or of a type
/// no algorithm here verifies are skipped; a set with none left is an error.
///
/// # Errors
/// Not JSON, no `keys` array, or no usable key.
pub fn parse_jwks(text: &str) -> std::result::Result<Vec<VerificationKey>, String> {
    if text.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS longer than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: Json = serde_json::from_str(text).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let Some(Json::Array(keys)) = doc.get("keys") else {
        return Err("JWKS has no \"keys\" array".into());
    };
    let mut out = Vec::new();
    for k in keys {
        if k.get("use")
            .and_then(Json::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        if let Ok(mut parsed) = jwt::parse_keys(&k.to_string()) {
            out.append(&mut parsed);
        }
    }
    if out.is_empty() && !keys.is_empty() {
        return Err("JWKS has no usable signing key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_in_the_order_of_their_metric_labels() {
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(r.label(), crate::metrics::TOKEN_REJECTION_REASONS[i]);
        }
        assert_eq!(
            Rejection::ALL.len(),
            crate::metrics::TOKEN_REJECTION_REASONS.len()
        );
    }
    use base64::Engine as _;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn hs(header: &str, payload: &str, secret: &[u8]) -> String {
        let jwk = serde_json::json!({"kty": "oct", "k": b64(secret)});
        jwt::encode_sign_raw(header, payload, &jwk).unwrap()
    }

    fn verifier(algs: &[Alg]) -> TokenVerifier {
        TokenVerifier::new(IdentityConfig {
            keys: vec![VerificationKey {
                kid: Some("k1".into()),
                alg: None,
                key: jwt::Key::Secret(b"secret".to_vec()),
            }],
            jwks_url: None,
            issuer: Some("iss".into()),
            audience: None,
            algorithms: algs.to_vec(),
            leeway: Duration::from_secs(30),
            claims: Some(vec!["sub".into(), "roles".into()]),
            max_token_bytes: 4096,
            jwks_timeout: Duration::from_secs(1),
            jwks_min_refresh: Duration::from_secs(1),
        })
        .unwrap()
    }

    const NOW: u64 = 1_000 * 1_000_000_000;

    #[test]
    fn writes_the_chosen_claims_and_token_metadata() {
        let v = verifier(&[Alg::HS256]);
        let t = hs(
            r#"{"alg":"HS256","kid":"k1"}"#,
            r#"{"sub":"u1","iss":"iss","exp":2000,"roles":["a"],"x":1}"#,
            b"secret",
        );
        let ok = v.verify(&t, NOW).unwrap();
        assert_eq!(&*ok.user_json, br#"{"roles":["a"],"sub":"u1"}"#);
        assert_eq!(&*ok.token_json, br#"{"alg":"HS256","exp":2000,"kid":"k1"}"#);
        assert_eq!(ok.valid_until_unix_ns, Some(2_030_000_000_000));
    }

    #[test]
    fn refuses_what_it_must() {
        let v = verifier(&[Alg::HS256]);
        let p = r#"{"sub":"u1","iss":"iss","exp":2000}"#;
        let h = r#"{"alg":"HS256","kid":"k1"}"#;
        let cases = [
            (hs(h, p, b"other"), Rejection::Signature),
            (hs(r#"{"alg":"HS384"}"#, p, b"secret"), Rejection::Algorithm),
            (
                hs(h, r#"{"sub":"u1","iss":"x"}"#, b"secret"),
                Rejection::Issuer,
            ),
            (
                hs(h, r#"{"iss":"iss","aud":"a"}"#, b"secret"),
                Rejection::Audience,
            ),
            (
                hs(h, r#"{"iss":"iss","exp":900}"#, b"secret"),
                Rejection::Expired,
            ),
            (
                hs(h, r#"{"iss":"iss","nbf":1100}"#, b"secret"),
                Rejection::NotYetValid,
            ),
            (
                hs(r#"{"alg":"HS256","kid":"zz"}"#, p, b"secret"),
                Rejection::UnknownKid,
            ),
            (
                hs(r#"{"alg":"HS256","cty":"JWT"}"#, p, b"secret"),
                Rejection::Malformed,
            ),
            (
                format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(p.as_bytes())),
                Rejection::Algorithm,
            ),
            ("x".repeat(5000), Rejection::TooLarge),
            ("not a token".into(), Rejection::Malformed),
        ];
        for (t, want) in cases {
            assert_eq!(v.verify(&t, NOW).unwrap_err(), want, "{t}");
        }
        // Within the leeway: an exp 20 s ago and an nbf 20 s ahead still verify.
        assert!(v
            .verify(&hs(h, r#"{"iss":"iss","exp":980}"#, b"secret"), NOW)
            .is_ok());
        assert!(v
            .verify(&hs(h, r#"{"iss":"iss","nbf":1020}"#, b"secret"), NOW)
            .is_ok());
    }

    #[test]
    fn cache_holds_until_the_earlier_of_ttl_and_validity() {
        let c: TokenCache<u32> = TokenCache::new(10, Duration::from_secs(60));
        let now = clock::now_ns();
        c.insert(b"a", 1, None, 0);
        c.insert(b"b", 2, Some(clock::unix_ns() + 1_000_000_000), 0);
        c.insert(b"past", 3, Some(clock::unix_ns().saturating_sub(1)), 0);
        assert_eq!(c.get(b"a", now, 0), Some(1));
        assert_eq!(c.get(b"a", now, 1), None, "made under another key set");
        assert_eq!(c.get(b"b", now, 0), Some(2));
        assert_eq!(c.get(b"b", now + 2_000_000_000, 0), None);
        assert_eq!(c.get(b"a", now + 61_000_000_000, 0), None);
        assert_eq!(c.get(b"past", now, 0), None);
    }

    #[test]
    fn tokens_that_share_the_hashed_tail_never_share_an_entry() {
        // Same length, same last 16 bytes: one bucket hash, two tokens.
        let c: TokenCache<u32> = TokenCache::new(10, Duration::from_secs(60));
        let now = clock::now_ns();
        let tail = b".SAME-SIGNATURE-TAIL";
        let good = [b"header.alice".as_slice(), tail].concat();
        let forged = [b"header.admin".as_slice(), tail].concat();
        c.insert(&good, 1, None, 0);
        assert_eq!(c.get(&good, now, 0), Some(1));
        assert_eq!(
            c.get(&forged, now, 0),
            None,
            "another token, whatever its hash"
        );
        assert_eq!(c.get(&good[..good.len() - 1], now, 0), None);
        c.insert(&forged, 2, None, 0);
        assert_eq!(
            (c.get(&good, now, 0), c.get(&forged, now, 0)),
            (Some(1), Some(2))
        );
        assert_eq!(c.get(b"", now, 0), None, "an empty token hashes too");
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age_of("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age_of("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age_of("public"), None);
    }
}
