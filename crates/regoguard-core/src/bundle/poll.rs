//! Remote bundles: HTTP(S) downloads with `ETag`s, polled on a thread of their own.
//!
//! Why a Rust thread with `ureq` (already linked for `http.send`): polling must never touch
//! the request path, the GIL or an event loop the application may not have; a blocking client
//! on a plain thread needs neither, sleeps on a condition variable (so dropping the authorizer
//! or `reload()` wakes it at once) and activates through [`Activate`] (the authorizer's
//! `activate_bundle`, the same writer path as `reload()`), so this module knows nothing of
//! authorizers and the module graph stays a DAG.
//!
//! Every poll: `GET` with `If-None-Match` (the `ETag` of the bundle in force) and the configured
//! headers, bounded by the timeout and the size limit; `304` keeps the bundle; `200` is read,
//! verified, compiled and swapped in; anything else is a failure that keeps the last good
//! bundle. The delay between polls is drawn uniformly from `[poll_min, poll_max]` so instances
//! started together do not poll together. A bundle that activated is written to `persist_dir`
//! (to a temporary file, then renamed) so a restart while the service is down starts from it.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{format, BundleConfig, Loaded, Location, Status};
use crate::error::{Error, Result};

/// Where a poller hands a downloaded, verified bundle; the authorizer implements it.
pub trait Activate: Send + Sync {
    /// Whether the bundle's Rego is read as v0.
    fn rego_v0(&self) -> bool;
    /// Makes `loaded` the bundle in force as a new revision; an error keeps the old one.
    fn activate_bundle(&self, loaded: Loaded) -> Result<Arc<str>>;
}

/// What one GET answered.
pub enum Fetched {
    NotModified,
    New {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

fn url_of(c: &BundleConfig) -> Result<&str> {
    match &c.location {
        Location::Url(u) => Ok(u),
        Location::Path(_) => Err(Error::config("not a remote bundle")),
    }
}

/// One bounded GET of the bundle.
///
/// # Errors
/// `Error::Config` naming the bundle: connection, timeout, status other than 200/304, size.
pub fn fetch(c: &BundleConfig, etag: Option<&str>) -> Result<Fetched> {
    let url = url_of(c)?;
    let bad = |m: String| Error::config(format!("bundle {:?}: {}: {m}", c.name, c.source()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(c.timeout))
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    for (k, v) in &c.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(e) = etag {
        req = req.header("If-None-Match", e);
    }
    let mut resp = req.call().map_err(|e| bad(e.to_string()))?;
    let status = resp.status().as_u16();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if status != 200 {
        return Err(bad(format!("HTTP {status}")));
    }
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(c.max_bytes)
        .read_to_vec()
        .map_err(|e| {
            bad(format!(
                "reading the body (limit {} bytes): {e}",
                c.max_bytes
            ))
        })?;
    Ok(Fetched::New { bytes, etag })
}

/// Where a bundle's last good copy lives under `persist_dir`.
fn persist_paths(c: &BundleConfig) -> Option<(PathBuf, PathBuf)> {
    let dir = c.persist_dir.as_ref()?;
    let safe: String = c
        .name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_') {
                ch
            } else {
                '_'
            }
        })
        .collect();
    let tag: String = blake3::hash(c.name.as_bytes()).as_bytes()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let d = dir.join(format!("{safe}-{tag}"));
    Some((d.join("bundle.tar.gz"), d.join("etag")))
}

/// Writes the last good download (temporary file, then rename: never a half-written copy).
fn persist(c: &BundleConfig, bytes: &[u8], etag: Option<&str>) -> std::io::Result<()> {
    let Some((bundle, etag_path)) = persist_paths(c) else {
        return Ok(());
    };
    if let Some(d) = bundle.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = bundle.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &bundle)?;
    let tmp = etag_path.with_extension("tmp");
    std::fs::write(&tmp, etag.unwrap_or(""))?;
    std::fs::rename(&tmp, &etag_path)
}

/// The persisted copy, verified like a download, and its `ETag`.
fn persisted(c: &BundleConfig, rego_v0: bool) -> Option<Result<(Loaded, Option<String>)>> {
    let (bundle, etag_path) = persist_paths(c)?;
    let bytes = std::fs::read(&bundle).ok()?;
    let etag = std::fs::read_to_string(etag_path)
        .ok()
        .filter(|e| !e.is_empty());
    Some(decode(c, &bytes, rego_v0).map(|l| (l, etag)))
}

fn decode(c: &BundleConfig, bytes: &[u8], rego_v0: bool) -> Result<Loaded> {
    let files = format::read_archive(&c.name, bytes, c.max_bytes)?;
    format::parse(&c.name, files, c.verification.as_ref(), rego_v0)
}

/// The first load of a remote bundle, for a new authorizer: the service's copy, or the
/// persisted one when the service fails (counted as a failure).
///
/// # Errors
/// The service fails and there is no valid persisted copy.
pub fn initial(c: &BundleConfig, status: &Status, rego_v0: bool) -> Result<Loaded> {
    let fallback = match persisted(c, rego_v0) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            status.failed(&e);
            None
        }
        None => None,
    };
    let etag = fallback.as_ref().and_then(|(_, e)| e.as_deref());
    let fetched = fetch(c, etag).and_then(|f| match f {
        Fetched::NotModified => Ok(None),
        Fetched::New { bytes, etag } => {
            let loaded = decode(c, &bytes, rego_v0)?;
            Ok(Some((loaded, bytes, etag)))
        }
    });
    match (fetched, fallback) {
        (Ok(Some((loaded, bytes, etag))), _) => {
            // A bundle that cannot be persisted still serves; the next restart needs the service.
            let _ = persist(c, &bytes, etag.as_deref());
            *status.etag.lock() = etag;
            Ok(loaded)
        }
        (Ok(None), Some((loaded, etag))) => {
            *status.etag.lock() = etag;
            Ok(loaded)
        }
        (Ok(None), None) => Err(Error::config(format!(
            "bundle {:?}: the service answered 304 Not Modified to a first request",
            c.name
        ))),
        (Err(e), Some((loaded, etag))) => {
            status.failed(&e);
            *status.etag.lock() = etag;
            Ok(loaded)
        }
        (Err(e), None) => Err(match e {
            Error::Config(m) if c.persist_dir.is_some() => {
                Error::Config(format!("{m} (and no persisted copy in persist_dir yet)"))
            }
            Error::Config(m) => Error::Config(format!("{m} (no persist_dir to start from)")),
            other => other,
        }),
    }
}

#[derive(Default)]
struct Signal {
    stop: bool,
    wake: bool,
}

/// Owns one poller thread: dropping it stops the thread (at its next wake-up, at once if it
/// is sleeping), `wake()` makes it poll now.
pub struct Handle {
    shared: Arc<(Mutex<Signal>, Condvar)>,
}

impl Handle {
    /// Polls now instead of at the end of the current delay.
    pub fn wake(&self) {
        let (m, cv) = &*self.shared;
        m.lock().wake = true;
        cv.notify_all();
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        m.lock().stop = true;
        cv.notify_all();
    }
}

/// A uniformly drawn delay in `[min, max]`.
fn jittered(min: Duration, max: Duration) -> Duration {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    #[allow(clippy::cast_precision_loss)]
    let u = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    min + (max.saturating_sub(min)).mul_f64(u)
}

/// Starts a poller for every remote bundle of `set`.
pub fn spawn_all<A: Activate + 'static>(a: &Arc<A>, set: &super::BundleSet) -> Vec<Handle> {
    set.slots
        .iter()
        .filter(|s| matches!(s.config.location, Location::Url(_)))
        .map(|s| {
            let target: Weak<dyn Activate> = Arc::downgrade(a) as Weak<A>;
            spawn(target, s.config.clone(), s.status.clone())
        })
        .collect()
}

/// Starts polling bundle `c` for `authorizer`.
pub fn spawn(authorizer: Weak<dyn Activate>, c: Arc<BundleConfig>, status: Arc<Status>) -> Handle {
    let shared = Arc::new((Mutex::new(Signal::default()), Condvar::new()));
    let theirs = shared.clone();
    let mine = status.clone();
    let spawned = std::thread::Builder::new()
        // A fixed name: a bundle name may hold a NUL, which a thread name may not.
        .name("regoguard-bundle".to_owned())
        .spawn(move || run(&authorizer, &c, &status, &theirs));
    if let Err(e) = spawned {
        // No thread: the bundle stays as loaded; the failure is visible in `bundles`.
        *mine.last_error.lock() = Some(format!("cannot start the poller thread: {e}"));
    }
    Handle { shared }
}

fn run(
    authorizer: &Weak<dyn Activate>,
    c: &BundleConfig,
    status: &Status,
    shared: &Arc<(Mutex<Signal>, Condvar)>,
) {
    let (m, cv) = &**shared;
    loop {
        {
            let deadline = Instant::now() + jittered(c.poll_min, c.poll_max);
            let mut s = m.lock();
            while !s.stop && !s.wake {
                if cv.wait_until(&mut s, deadline).timed_out() {
                    break;
                }
            }
            if s.stop {
                return;
            }
            s.wake = false;
        }
        let Some(a) = authorizer.upgrade() else {
            return;
        };
        poll_once(&*a, c, status);
    }
}

/// One poll: download, verify, activate, persist; every failure keeps the bundle in force.
pub fn poll_once(a: &dyn Activate, c: &BundleConfig, status: &Status) {
    let started = Instant::now();
    let etag = status.etag.lock().clone();
    let result = fetch(c, etag.as_deref()).and_then(|f| match f {
        Fetched::NotModified => Ok(false),
        Fetched::New { bytes, etag } => {
            let loaded = decode(c, &bytes, a.rego_v0())?;
            a.activate_bundle(loaded)?;
            let _ = persist(c, &bytes, etag.as_deref());
            *status.etag.lock() = etag;
            Ok(true)
        }
    });
    match result {
        Ok(true) => status.activated(started.elapsed()),
        Ok(false) => status.succeeded(),
        Err(e) => status.failed(&e),
    }
}
