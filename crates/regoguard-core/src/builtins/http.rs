//! `http.send`: off unless the authorizer allows URL prefixes (`Authorizer(allow_net=[...])`).
//!
//! Why off by default (README, "Builtins"): a policy that calls the network is no longer a
//! microsecond evaluation, its answer depends on another service, and whoever controls the
//! input could otherwise make the policy fetch any URL (SSRF). When allowed:
//! - only URLs under an allowed prefix are fetched, each redirect hop included; the prefix
//!   ends at a path boundary, so `https://idp.example` does not allow
//!   `https://idp.example.evil.com` nor `https://idp.example@evil.com`;
//! - every request is bounded by a timeout (OPA's `timeout` option, capped at
//!   [`MAX_TIMEOUT`]) and its body by [`MAX_BODY_BYTES`];
//! - OPA's `cache` (honours the response's `Cache-Control: max-age` / `Expires`) and
//!   `force_cache` + `force_cache_duration_seconds` keep responses in an inter-query cache;
//! - the decision reports how long the response holds through [`crate::eval_context`]:
//!   `valid_until` its cache expiry, or `volatile` when it has none, so a decision is never
//!   cached longer than the response it used.
//!
//! Failures follow OPA: with `raise_error: false` the response is `{"status_code": 0,
//! "error": {...}}`; otherwise the call fails and, non-strict, the expression is undefined.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use parking_lot::{Mutex, RwLock};
use regorus::Value;

use super::Builtin;
use crate::eval_context;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "http.send",
    nargs: 1,
    f: send,
    nondeterministic: true,
}];

/// OPA's default request timeout, and our cap on the `timeout` option.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response body read (larger ones fail the call).
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// How many responses the inter-query cache keeps.
const CACHE_ENTRIES: usize = 1000;
/// Redirects followed at most (each one re-checked against the allow-list).
const MAX_REDIRECTS: usize = 10;

/// The URL prefixes an authorizer may fetch, normalized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub prefixes: Vec<String>,
}

impl NetConfig {
    /// Validates `allow_net`: each entry an absolute `http://` or `https://` URL with a host.
    ///
    /// # Errors
    /// A message naming the first bad entry.
    pub fn new(prefixes: &[String]) -> std::result::Result<Self, String> {
        let mut out = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            let url = url::Url::parse(p)
                .map_err(|e| format!("allow_net entry {p:?} is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty)
            {
                return Err(format!(
                    "allow_net entry {p:?} must be an http:// or https:// URL with a host"
                ));
            }
            if url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
                || url.password().is_some()
            {
                return Err(format!(
                    "allow_net entry {p:?} must not have a query, fragment or user info"
                ));
            }
            out.push(url.as_str().to_owned());
        }
        Ok(NetConfig { prefixes: out })
    }

    /// Whether the normalized `url` lies under an allowed prefix (at a path boundary).
    pub fn allows(&self, url: &str) -> bool {
        self.prefixes.iter().any(|p| {
            url.strip_prefix(p.as_str()).is_some_and(|rest| {
                p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
            })
        })
    }
}

fn configs() -> &'static RwLock<HashMap<u64, NetConfig>> {
    static CONFIGS: OnceLock<RwLock<HashMap<u64, NetConfig>>> = OnceLock::new();
    CONFIGS.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Sets (or, with no prefixes, clears) what authorizer `owner` may fetch.
pub fn configure(owner: u64, config: NetConfig) {
    if config.prefixes.is_empty() {
        configs().write().remove(&owner);
    } else {
        configs().write().insert(owner, config);
    }
}

thread_local! {
    static OWNER: Cell<(u64, Duration)> = const { Cell::new((0, MAX_TIMEOUT)) };
}

/// Marks the evaluations on this thread as authorizer `owner`'s, with its evaluation time
/// budget, until dropped (no allocation, no clock read).
pub struct Current((u64, Duration));

impl Current {
    #[inline]
    pub fn enter(owner: u64, budget: Duration) -> Self {
        Current(OWNER.with(|o| o.replace((owner, budget))))
    }
}

impl Drop for Current {
    #[inline]
    fn drop(&mut self) {
        OWNER.with(|o| o.set(self.0));
    }
}

/// What is left of the evaluation's time budget: the budget less the time since the
/// evaluation's clock was read ([`eval_context::now_unix_ns`]). A request never outlives the
/// evaluation that made it (README, "Evaluation budgets").
pub(super) fn remaining_budget() -> Duration {
    let budget = OWNER.with(|o| o.get().1);
    let started = eval_context::now_unix_ns();
    let elapsed = crate::clock::unix_ns().saturating_sub(started);
    budget.saturating_sub(Duration::from_nanos(elapsed))
}

struct Cached {
    response: Value,
    expires_unix_ns: u64,
}

fn cache() -> &'static Mutex<HashMap<String, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Cached>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn field<'a>(req: &'a Value, name: &str) -> Option<&'a Value> {
    match req {
        Value::Object(o) => o.get(&Value::from(name)),
        _ => None,
    }
}

fn flag(req: &Value, name: &str, default: bool) -> Result<bool> {
    match field(req, name) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => bail!("http.send: {name} must be a boolean"),
    }
}

fn text<'a>(req: &'a Value, name: &str) -> Result<Option<&'a str>> {
    match field(req, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => bail!("http.send: {name} must be a string"),
    }
}

/// OPA's `timeout`: a number of nanoseconds or a duration string (`"500ms"`, `"2s"`).
fn timeout_of(req: &Value) -> Result<Duration> {
    let requested = match field(req, "timeout") {
        None => return Ok(MAX_TIMEOUT),
        Some(Value::Number(_)) => Duration::from_nanos(
            field(req, "timeout")
                .and_then(|v| v.as_u64().ok())
                .unwrap_or(u64::MAX),
        ),
        Some(Value::String(s)) => {
            parse_duration(s).ok_or_else(|| anyhow!("http.send: bad timeout {s:?}"))?
        }
        Some(_) => bail!("http.send: timeout must be a number or a duration string"),
    };
    Ok(if requested.is_zero() {
        MAX_TIMEOUT
    } else {
        requested.min(MAX_TIMEOUT)
    })
}

fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// The response's cache lifetime from `Cache-Control` (`max-age`, `no-store`/`no-cache`) or
/// `Expires` is not parsed: OPA's own rule prefers `max-age`, and without it we do not cache.
fn max_age(headers: &BTreeMap<String, Vec<String>>) -> Option<Duration> {
    let cc = headers.get("cache-control")?.join(",").to_ascii_lowercase();
    if cc.contains("no-store") || cc.contains("no-cache") {
        return None;
    }
    cc.split(',')
        .find_map(|d| {
            d.trim()
                .strip_prefix("max-age=")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(Duration::from_secs)
}

fn send(args: &[Value]) -> Result<Value> {
    let req = &args[0];
    if !matches!(req, Value::Object(_)) {
        bail!("http.send: operand 1 must be object");
    }
    let raise_error = flag(req, "raise_error", true)?;
    match send_checked(req) {
        Ok(v) => Ok(v),
        Err(e) if !raise_error => {
            eval_context::volatile();
            let mut error = BTreeMap::new();
            error.insert(
                Value::from("code"),
                Value::from("eval_http_send_network_error"),
            );
            error.insert(Value::from("message"), Value::from(format!("{e:#}")));
            let mut out = BTreeMap::new();
            out.insert(Value::from("status_code"), Value::from(0u64));
            out.insert(Value::from("error"), Value::from(error));
            Ok(Value::from(out))
        }
        Err(e) => Err(e),
    }
}

fn send_checked(req: &Value) -> Result<Value> {
    let owner = OWNER.with(|o| o.get().0);
    let config = configs().read().get(&owner).cloned();
    let Some(config) = config else {
        bail!("http.send: not allowed (Authorizer(allow_net=[...]) names the URL prefixes a policy may fetch)");
    };
    let method = text(req, "method")?
        .ok_or_else(|| anyhow!("http.send: method is required"))?
        .to_ascii_uppercase();
    let url = text(req, "url")?.ok_or_else(|| anyhow!("http.send: url is required"))?;
    let url = url::Url::parse(url).map_err(|e| anyhow!("http.send: bad url: {e}"))?;
    if !config.allows(url.as_str()) {
        bail!("http.send: {url} is not under an allow_net prefix");
    }
    // OPA's own timeout, clamped to what the evaluation budget has left (at least 1 ms, so
    // the call fails as a timeout rather than not being attempted at all).
    let timeout = timeout_of(req)?
        .min(remaining_budget())
        .max(Duration::from_millis(1));
    let cache_wanted = flag(req, "cache", false)?;
    let force_cache = flag(req, "force_cache", false)?;
    let force_secs =
        match field(req, "force_cache_duration_seconds") {
            None => None,
            Some(v) => Some(v.as_u64().map_err(|_| {
                anyhow!("http.send: force_cache_duration_seconds must be an integer")
            })?),
        };
    if force_cache && force_secs.is_none() {
        bail!("http.send: force_cache needs force_cache_duration_seconds");
    }
    let key = req.to_json_str()?;
    let now = eval_context::now_unix_ns();
    if cache_wanted || force_cache {
        let mut c = cache().lock();
        match c.get(&key) {
            Some(hit) if hit.expires_unix_ns > now => {
                eval_context::valid_until(hit.expires_unix_ns);
                return Ok(hit.response.clone());
            }
            Some(_) => {
                c.remove(&key);
            }
            None => {}
        }
    }
    let (response, headers) = fetch(req, &method, url, timeout, &config)?;
    let lifetime = if force_cache {
        force_secs.map(Duration::from_secs)
    } else if cache_wanted {
        max_age(&headers)
    } else {
        None
    };
    match lifetime {
        Some(l) if !l.is_zero() => {
            let expires = now.saturating_add(u64::try_from(l.as_nanos()).unwrap_or(u64::MAX));
            eval_context::valid_until(expires);
            let mut c = cache().lock();
            if c.len() >= CACHE_ENTRIES {
                c.retain(|_, e| e.expires_unix_ns > now);
                if c.len() >= CACHE_ENTRIES {
                    c.clear();
                }
            }
            c.insert(
                key,
                Cached {
                    response: response.clone(),
                    expires_unix_ns: expires,
                },
            );
        }
        _ => eval_context::volatile(),
    }
    Ok(response)
}

fn fetch(
    req: &Value,
    method: &str,
    mut url: url::Url,
    timeout: Duration,
    config: &NetConfig,
) -> Result<(Value, BTreeMap<String, Vec<String>>)> {
    let follow = flag(req, "enable_redirect", false)?;
    let body: Vec<u8> = match (field(req, "body"), text(req, "raw_body")?) {
        (Some(b), _) => serde_json::to_vec(b)?,
        (None, Some(raw)) => raw.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .allow_non_standard_methods(true)
        .build()
        .into();
    let mut hops = 0;
    loop {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(url.as_str());
        if let Some(Value::Object(h)) = field(req, "headers") {
            for (k, v) in h.iter() {
                let (Value::String(k), Value::String(v)) = (k, v) else {
                    bail!("http.send: headers must map strings to strings")
                };
                builder = builder.header(&**k, &**v);
            }
        }
        if field(req, "body").is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = builder
            .body(body.clone())
            .map_err(|e| anyhow!("http.send: {e}"))?;
        let mut resp = agent
            .run(request)
            .map_err(|e| anyhow!("http.send: {url}: {e}"))?;
        let status = resp.status().as_u16();
        if follow && (300..400).contains(&status) && hops < MAX_REDIRECTS {
            if let Some(loc) = resp.headers().get("location").and_then(|l| l.to_str().ok()) {
                let next = url
                    .join(loc)
                    .map_err(|e| anyhow!("http.send: bad redirect: {e}"))?;
                if !config.allows(next.as_str()) {
                    bail!("http.send: redirect to {next} is not under an allow_net prefix");
                }
                url = next;
                hops += 1;
                continue;
            }
        }
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in resp.headers() {
            headers
                .entry(k.as_str().to_ascii_lowercase())
                .or_default()
                .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
        }
        let raw = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| anyhow!("http.send: reading the body of {url}: {e}"))?;
        let raw_text = String::from_utf8_lossy(&raw).into_owned();
        let is_json = headers
            .get("content-type")
            .is_some_and(|c| c.iter().any(|c| c.contains("json")));
        let body = if is_json || flag(req, "force_json_decode", false)? {
            Value::from_json_str(&raw_text).unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        let mut out = BTreeMap::new();
        out.insert(
            Value::from("status"),
            Value::from(format!(
                "{status} {}",
                resp.status().canonical_reason().unwrap_or("")
            )),
        );
        out.insert(Value::from("status_code"), Value::from(u64::from(status)));
        out.insert(Value::from("body"), body);
        out.insert(Value::from("raw_body"), Value::from(raw_text));
        let mut hv = BTreeMap::new();
        for (k, vs) in &headers {
            hv.insert(
                Value::from(k.as_str()),
                Value::from(
                    vs.iter()
                        .map(|v| Value::from(v.as_str()))
                        .collect::<Vec<_>>(),
                ),
            );
        }
        out.insert(Value::from("headers"), Value::from(hv));
        return Ok((Value::from(out), headers));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_at_a_path_boundary() {
        let c = NetConfig::new(&[
            "https://idp.example".into(),
            "http://127.0.0.1:8080/api/".into(),
        ])
        .expect("valid");
        assert!(c.allows("https://idp.example/"));
        assert!(c.allows("https://idp.example/keys?x=1"));
        assert!(c.allows("http://127.0.0.1:8080/api/v1"));
        for bad in [
            "https://idp.example.evil.com/",
            "https://idp.example@evil.com/",
            "http://idp.example/",
            "http://127.0.0.1:8080/apix",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8081/api/",
        ] {
            let normalized = url::Url::parse(bad).expect("url");
            assert!(!c.allows(normalized.as_str()), "{bad} was allowed");
        }
        // Dot segments are resolved before the check.
        let sneaky = url::Url::parse("http://127.0.0.1:8080/api/../admin").expect("url");
        assert!(!c.allows(sneaky.as_str()));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            "idp.example",
            "ftp://x/",
            "https://",
            "https://u:p@x/",
            "https://x/?q=1",
            "file:///etc",
        ] {
            assert!(NetConfig::new(&[bad.into()]).is_err(), "{bad}");
        }
    }

    /// A one-thread HTTP server on 127.0.0.1 answering every request with `headers`.
    fn serve(headers: &'static str) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let Ok(mut s) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let body = "{\"ok\": true}";
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}")
    }

    fn request(url: &str, extra: &str) -> Value {
        Value::from_json_str(&format!(
            "{{\"method\": \"GET\", \"url\": \"{url}/x\"{extra}}}"
        ))
        .expect("json")
    }

    #[test]
    fn a_response_bounds_how_long_the_decision_holds() {
        let base = serve("Cache-Control: max-age=60\r\n");
        configure(
            990_001,
            NetConfig::new(std::slice::from_ref(&base)).expect("config"),
        );
        let _owner = Current::enter(990_001, MAX_TIMEOUT);

        // The evaluation's clock is the wall clock: http.send measures its budget from it.
        let t0 = crate::clock::unix_ns();
        let scope = eval_context::Scope::begin_at(t0);
        let r = send(&[request(&base, ", \"cache\": true")]).expect("send");
        assert_eq!(field(&r, "status_code"), Some(&Value::from(200u64)));
        assert_eq!(
            field(field(&r, "body").expect("body"), "ok"),
            Some(&Value::Bool(true))
        );
        let v = scope.finish();
        assert_eq!(
            v,
            eval_context::Validity {
                volatile: false,
                until_unix_ns: Some(t0 + 60_000_000_000)
            }
        );

        // Without a cache option the response has no lifetime: the decision is volatile.
        let scope = eval_context::Scope::begin();
        send(&[request(&base, "")]).expect("send");
        assert!(scope.finish().volatile);

        // Another authorizer (no allow_net) cannot use it.
        let _other = Current::enter(990_002, MAX_TIMEOUT);
        assert!(send(&[request(&base, "")]).is_err());
        configure(990_001, NetConfig::default());
    }
}
