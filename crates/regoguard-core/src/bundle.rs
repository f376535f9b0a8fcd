//! OPA bundles: policies and data as one signed, versioned archive, loaded from a path or
//! polled from a bundle service (README "Bundles", ARCHITECTURE.md "Bundles").
//!
//! - `format.rs` reads a `.tar.gz` or a folder and checks the layout (manifest, roots, data
//!   paths, no escapes); `verify.rs` checks `.signatures.json` before anything is used;
//!   `poll.rs` downloads with `ETag`s on a thread of its own and persists the last good copy.
//! - A [`BundleSet`] is every bundle of one authorizer as currently active. Composing it with
//!   the plain policies and data gives the revision's files and base document; the authorizer
//!   compiles that as one new revision (`Authorizer::activate_bundle`), so a bundle swap is as
//!   atomic as `reload()` and a bundle that fails anywhere leaves the previous one serving.

pub mod format;
pub mod info;
pub mod poll;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use regorus::Value;

use crate::engine::PolicyFile;
use crate::error::{Error, Result};
pub use info::{log_field, revision_digest, BundleInfo, LoadingHistogram, Status, LOADING_BUCKETS};
pub use verify::Verification;

/// One file of a bundle: its normalized path (no leading `/`, `./` or `..`) and its bytes.
/// Here, not in `format.rs`, so `format` (which calls `verify`) and `verify` share it without
/// depending on each other.
#[derive(Clone, Debug)]
pub struct RawFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The signatures file of a bundle (`verify.rs`), left out of its own signature.
pub(crate) const SIGNATURES: &str = ".signatures.json";

/// The largest bundle accepted by default, compressed or not (bytes).
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Where a bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A `.tar.gz` file or a folder, re-read by `reload()`.
    Path(PathBuf),
    /// An `http://` or `https://` URL, polled.
    Url(String),
}

/// One bundle's configuration (`regoguard.Bundle`).
#[derive(Clone, Debug)]
pub struct BundleConfig {
    /// The name in `bundles`, decision logs and metrics (OPA's bundle name).
    pub name: String,
    pub location: Location,
    pub verification: Option<Verification>,
    /// Extra request headers (`Authorization: Bearer ...`).
    pub headers: Vec<(String, String)>,
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// Where the last good download is kept for a restart while the service is down.
    pub persist_dir: Option<PathBuf>,
    /// Bound on one download, connect to last byte.
    pub timeout: Duration,
    /// Bound on the download and on the decompressed archive (bytes).
    pub max_bytes: u64,
}

impl BundleConfig {
    /// A bundle at `source` (a path or an HTTP(S) URL) with the defaults of `regoguard.Bundle`.
    ///
    /// # Errors
    /// `Error::Config` for an unsupported URL scheme.
    pub fn new(source: &str) -> Result<Self> {
        let location = if source.starts_with("http://") || source.starts_with("https://") {
            Location::Url(source.to_owned())
        } else if source.contains("://") {
            return Err(Error::config(format!(
                "bundle source {source:?}: only http://, https:// or a local path"
            )));
        } else {
            Location::Path(PathBuf::from(source))
        };
        Ok(Self {
            name: default_name(source),
            location,
            verification: None,
            headers: Vec::new(),
            poll_min: Duration::from_secs(60),
            poll_max: Duration::from_secs(120),
            persist_dir: None,
            timeout: Duration::from_secs(10),
            max_bytes: DEFAULT_MAX_BYTES,
        })
    }

    /// The source as shown to users (a URL without its query, which may hold a token).
    pub fn source(&self) -> String {
        match &self.location {
            Location::Path(p) => p.to_string_lossy().into_owned(),
            Location::Url(u) => u.split(['?', '#']).next().unwrap_or(u).to_owned(),
        }
    }
}

/// OPA names a bundle given on the command line by its path; a URL's name leaves out the
/// scheme, any credentials and the query.
fn default_name(source: &str) -> String {
    if let Some(rest) = source.split_once("://").map(|(_, r)| r) {
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        rest.trim_end_matches('/').to_owned()
    } else {
        source.trim_end_matches('/').to_owned()
    }
}

/// Whether a plain `policies=` path is a bundle: a `.tar.gz` file or a folder holding a
/// `.manifest` (README "Bundles").
pub fn is_bundle_path(path: &str) -> bool {
    let p = Path::new(path);
    (path.ends_with(".tar.gz") && !p.is_dir()) || (p.is_dir() && p.join(format::MANIFEST).is_file())
}

/// Splits `policies=` into plain paths and bundles (a `.tar.gz` or `.manifest` folder among
/// the paths is a bundle named by its path), after the configured `bundles`.
///
/// # Errors
/// `Error::Config` for a bundle path that cannot be a bundle source.
pub fn split_sources(
    policies: &[String],
    configured: &[Arc<BundleConfig>],
) -> Result<(Vec<String>, Vec<Arc<BundleConfig>>)> {
    let mut plain = Vec::new();
    let mut bundles = configured.to_vec();
    for p in policies {
        if is_bundle_path(p) {
            bundles.push(Arc::new(BundleConfig::new(p)?));
        } else {
            plain.push(p.clone());
        }
    }
    Ok((plain, bundles))
}

/// A bundle's `.manifest`.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub revision: String,
    /// Slash-separated paths under `data` the bundle owns; `""` is all of it.
    pub roots: Vec<String>,
    pub metadata: Option<serde_json::Value>,
    pub rego_version: Option<u8>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            revision: String::new(),
            roots: vec![String::new()],
            metadata: None,
            rego_version: None,
        }
    }
}

fn segments(root: &str) -> Vec<&str> {
    root.split('/').filter(|s| !s.is_empty()).collect()
}

/// Whether one path (segments) is a prefix of the other: two roots that overlap.
fn overlaps(a: &[&str], b: &[&str]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

impl Manifest {
    /// Parses a `.manifest` (JSON).
    ///
    /// # Errors
    /// `Error::Config` for anything OPA would refuse: not an object, fields of the wrong type,
    /// overlapping roots, a `rego_version` other than 0 or 1, per-file Rego versions.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::config(format!("bundle {name:?}: .manifest: {m}"));
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let serde_json::Value::Object(obj) = doc else {
            return Err(bad("not a JSON object".into()));
        };
        let revision = match obj.get("revision") {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("revision must be a string".into())),
        };
        let roots = match obj.get("roots") {
            None | Some(serde_json::Value::Null) => vec![String::new()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|r| {
                    r.as_str()
                        .map(|s| s.trim_matches('/').to_owned())
                        .ok_or_else(|| bad("roots must be strings".into()))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(bad("roots must be an array of strings".into())),
        };
        for (i, a) in roots.iter().enumerate() {
            for b in &roots[i + 1..] {
                if overlaps(&segments(a), &segments(b)) {
                    return Err(bad(format!(
                        "manifest has overlapped roots: {a:?} and {b:?}"
                    )));
                }
            }
        }
        let metadata = match obj.get("metadata") {
            None | Some(serde_json::Value::Null) => None,
            Some(m @ serde_json::Value::Object(_)) => Some(m.clone()),
            Some(_) => return Err(bad("metadata must be an object".into())),
        };
        let rego_version = match obj.get("rego_version") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(0) => Some(0),
                Some(1) => Some(1),
                _ => return Err(bad(format!("rego_version must be 0 or 1, got {v}"))),
            },
        };
        if obj
            .get("file_rego_versions")
            .is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
        {
            return Err(bad(
                "file_rego_versions is not supported: one Rego version per bundle".into(),
            ));
        }
        if obj
            .get("wasm")
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            return Err(bad("Wasm modules are not supported".into()));
        }
        Ok(Self {
            revision,
            roots,
            metadata,
            rego_version,
        })
    }

    /// Whether a package or data path lies under one of the roots.
    pub fn permits<S: AsRef<str>>(&self, path: &[S]) -> bool {
        self.roots.iter().any(|r| {
            let r = segments(r);
            r.len() <= path.len() && r.iter().zip(path).all(|(a, b)| *a == b.as_ref())
        })
    }

    /// Checks that every value of a data file mounted at `path` lies under a root.
    ///
    /// # Errors
    /// `Error::Config` naming the first path outside the roots.
    pub fn check_data(&self, name: &str, path: &[String], value: &Value) -> Result<()> {
        if self.permits(path) {
            return Ok(());
        }
        // A root deeper than `path`: the value must be an object whose keys lead to roots.
        let leads_to_root = self.roots.iter().any(|r| {
            let r = segments(r);
            r.len() > path.len() && r.iter().zip(path).all(|(a, b)| *a == b)
        });
        match value {
            Value::Object(obj) if leads_to_root => {
                for (k, v) in obj.iter() {
                    let Value::String(k) = k else { continue };
                    let mut p = path.to_vec();
                    p.push(k.to_string());
                    self.check_data(name, &p, v)?;
                }
                Ok(())
            }
            _ => Err(Error::config(format!(
                "bundle {name:?}: manifest roots {:?} do not permit data at data.{}",
                self.roots,
                path.join(".")
            ))),
        }
    }
}

/// A parsed, verified bundle.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub name: Arc<str>,
    pub manifest: Manifest,
    pub modules: Vec<PolicyFile>,
    /// The bundle's base document (its data files merged at their paths).
    pub data: Value,
}

/// One bundle of an authorizer: its configuration, its health and what is active.
#[derive(Clone, Debug)]
pub struct Slot {
    pub config: Arc<BundleConfig>,
    pub status: Arc<Status>,
    pub active: Arc<Loaded>,
}

/// Every bundle of one authorizer as active now.
#[derive(Clone, Debug, Default)]
pub struct BundleSet {
    pub slots: Vec<Slot>,
}

impl BundleSet {
    /// Loads every bundle for a new authorizer: local ones from disk, remote ones downloaded
    /// (or, when the service cannot be reached, from `persist_dir`).
    ///
    /// # Errors
    /// The first bundle that cannot be loaded, named; overlapping roots, naming both bundles.
    pub fn load(configs: &[Arc<BundleConfig>], rego_v0: bool) -> Result<Self> {
        let mut slots = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            if configs[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::config(format!(
                    "two bundles are named {:?}: give one a name=",
                    c.name
                )));
            }
            let status = Arc::new(Status::default());
            let started = std::time::Instant::now();
            let loaded = match &c.location {
                Location::Path(p) => load_path(&c.name, p, c, rego_v0),
                Location::Url(_) => poll::initial(c, &status, rego_v0),
            };
            match loaded {
                Ok(l) => {
                    if status.last_error.lock().is_some() {
                        // Started from the persisted copy: the service has not answered yet.
                        status.loaded.fetch_add(1, Ordering::Relaxed);
                        status.loading.observe(started.elapsed());
                    } else {
                        status.activated(started.elapsed());
                    }
                    slots.push(Slot {
                        config: c.clone(),
                        status,
                        active: Arc::new(l),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let set = Self { slots };
        set.check_roots()?;
        Ok(set)
    }

    /// The same bundles with local ones read again from disk (`reload()`); remote ones keep
    /// what they have (their poller is woken instead). The caller counts the outcome
    /// ([`BundleSet::count_local`]).
    ///
    /// # Errors
    /// As [`BundleSet::load`].
    pub fn reloaded(&self, rego_v0: bool) -> Result<Self> {
        let mut next = self.clone();
        for slot in &mut next.slots {
            if let Location::Path(p) = &slot.config.location {
                slot.active = Arc::new(load_path(&slot.config.name, p, &slot.config, rego_v0)?);
            }
        }
        next.check_roots()?;
        Ok(next)
    }

    /// The same bundles with `loaded` in place of the one of its name.
    ///
    /// # Errors
    /// `Error::Config` for an unknown name or roots that overlap another bundle's.
    pub fn with(&self, loaded: Loaded) -> Result<Self> {
        let mut next = self.clone();
        let slot = next
            .slots
            .iter_mut()
            .find(|s| *s.active.name == *loaded.name)
            .ok_or_else(|| Error::config(format!("no bundle named {:?}", loaded.name)))?;
        slot.active = Arc::new(loaded);
        next.check_roots()?;
        Ok(next)
    }

    /// Counts a `reload()` for every local bundle: activated (with its duration) or failed.
    pub fn count_local<T>(&self, outcome: &Result<T>, took: Duration) {
        for slot in &self.slots {
            if matches!(slot.config.location, Location::Path(_)) {
                match outcome {
                    Ok(_) => slot.status.activated(took),
                    Err(e) => slot.status.failed(e),
                }
            }
        }
    }

    /// Several bundles may only own disjoint parts of `data`.
    fn check_roots(&self) -> Result<()> {
        for (i, a) in self.slots.iter().enumerate() {
            for b in &self.slots[i + 1..] {
                for ra in &a.active.manifest.roots {
                    for rb in &b.active.manifest.roots {
                        if overlaps(&segments(ra), &segments(rb)) {
                            return Err(Error::config(format!(
                                "bundles {:?} and {:?} have overlapping roots ({:?} and {:?})",
                                a.config.name, b.config.name, ra, rb
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a `set_data` path lies inside (or above) a bundle's root: bundles own their
    /// roots, as in OPA, so such a write is refused.
    pub fn owner_of(&self, path: &[String]) -> Option<&str> {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        self.slots.iter().find_map(|s| {
            s.active
                .manifest
                .roots
                .iter()
                .any(|r| overlaps(&segments(r), &path))
                .then_some(s.config.name.as_str())
        })
    }

    /// The revision's modules and base document: `plain` modules and `data` (the data in force,
    /// holding `previous`'s bundle data, which is removed first), then every bundle's.
    ///
    /// # Errors
    /// `Error::Data` when data outside the bundles lies under a bundle's root.
    pub fn compose(
        &self,
        plain: &[PolicyFile],
        mut data: Value,
        previous: Option<&BundleSet>,
    ) -> Result<(Vec<PolicyFile>, Value)> {
        if let Some(prev) = previous {
            for slot in &prev.slots {
                for root in &slot.active.manifest.roots {
                    remove_path(&mut data, &segments(root));
                }
            }
        }
        for slot in &self.slots {
            for root in &slot.active.manifest.roots {
                if has_path(&data, &segments(root)) {
                    return Err(Error::data(format!(
                        "data given outside bundle {:?} lies under its root {:?}: bundles own their roots",
                        slot.config.name, root
                    )));
                }
            }
        }
        let mut files = plain.to_vec();
        for slot in &self.slots {
            files.extend(slot.active.modules.iter().cloned());
            format::merge_at(&mut data, &[], slot.active.data.clone()).map_err(|p| {
                Error::data(format!(
                    "bundle {:?}: its data conflicts with other data at data.{p}",
                    slot.config.name
                ))
            })?;
        }
        Ok((files, data))
    }

    /// What a revision built from this set shows of its bundles.
    pub fn infos(&self) -> Arc<[BundleInfo]> {
        self.slots
            .iter()
            .map(|s| BundleInfo {
                name: Arc::from(s.config.name.as_str()),
                revision: Arc::from(s.active.manifest.revision.as_str()),
                roots: s.active.manifest.roots.clone(),
                metadata: s.active.manifest.metadata.clone(),
                source: s.config.source(),
                status: s.status.clone(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Reads and verifies a local bundle.
///
/// # Errors
/// As [`format::parse`]; `Error::Config` for a missing path.
pub fn load_path(name: &str, path: &Path, c: &BundleConfig, rego_v0: bool) -> Result<Loaded> {
    let files = if path.is_dir() {
        format::read_dir(name, path, c.max_bytes)?
    } else if path.is_file() {
        let meta =
            std::fs::metadata(path).map_err(|e| Error::config(format!("bundle {name:?}: {e}")))?;
        if meta.len() > c.max_bytes {
            return Err(Error::config(format!(
                "bundle {name:?}: larger than {} bytes",
                c.max_bytes
            )));
        }
        let bytes =
            std::fs::read(path).map_err(|e| Error::config(format!("bundle {name:?}: {e}")))?;
        format::read_archive(name, &bytes, c.max_bytes)?
    } else {
        return Err(Error::config(format!(
            "bundle {name:?}: {} does not exist",
            path.display()
        )));
    };
    format::parse(name, files, c.verification.as_ref(), rego_v0)
}

fn has_path(data: &Value, path: &[&str]) -> bool {
    let mut node = data;
    for seg in path {
        match node {
            Value::Object(o) => match o.get(&Value::from(*seg)) {
                Some(n) => node = n,
                None => return false,
            },
            _ => return false,
        }
    }
    match node {
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn remove_path(data: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        *data = Value::new_object();
        return;
    };
    let mut node = data;
    for seg in parents {
        let Ok(obj) = node.as_object_mut() else {
            return;
        };
        match obj.get_mut(&Value::from(*seg)) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Ok(obj) = node.as_object_mut() {
        obj.remove(&Value::from(*last));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_permits() {
        let m = Manifest::parse("b", br#"{"revision":"r1","roots":["a/b","c"]}"#).unwrap();
        assert!(m.permits(&["a", "b"]));
        assert!(m.permits(&["a", "b", "x"]));
        assert!(!m.permits(&["a"]));
        assert!(!m.permits(&["ab"]));
        assert!(m.permits(&["c"]));
        assert!(Manifest::parse("b", br#"{"roots":["a","a/b"]}"#).is_err());
        assert!(Manifest::parse("b", br#"{"roots":"a"}"#).is_err());
        assert!(Manifest::parse("b", br#"{"rego_version":2}"#).is_err());
        assert!(Manifest::default().permits(&["anything"]));
    }

    #[test]
    fn data_outside_roots_is_refused() {
        let m = Manifest::parse("b", br#"{"roots":["a/b"]}"#).unwrap();
        let ok = Value::from_json_str(r#"{"b":{"x":1}}"#).unwrap();
        assert!(m.check_data("b", &["a".into()], &ok).is_ok());
        let bad = Value::from_json_str(r#"{"b":{"x":1},"c":2}"#).unwrap();
        assert!(m.check_data("b", &["a".into()], &bad).is_err());
        assert!(m
            .check_data("b", &["z".into()], &Value::from(1_u64))
            .is_err());
    }

    /// A gzip'd tarball of `files` (the Python tests write `opa build`'s leading slashes).
    fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    const POLICY: &str =
        "package authz\ndefault allow := false\nallow if input.user in data.authz.admins\n";

    fn version(admins: &str, revision: &str, roots: &str) -> Vec<u8> {
        let manifest = format!(r#"{{"revision":"{revision}","roots":{roots}}}"#);
        let data = format!(r#"{{"admins":{admins}}}"#);
        tar_gz(&[
            (".manifest", &manifest),
            ("authz/policy.rego", POLICY),
            ("authz/data.json", &data),
        ])
    }

    #[test]
    fn activation_is_one_new_revision_and_a_failure_keeps_the_old_one() {
        use crate::authorizer::{Authorizer, AuthorizerConfig};
        let dir = std::env::temp_dir().join(format!("regoguard-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.tar.gz");
        std::fs::write(&path, version(r#"["alice"]"#, "r1", r#"["authz"]"#)).unwrap();
        let mut cfg = AuthorizerConfig::new(Vec::new());
        let mut b = BundleConfig::new(path.to_str().unwrap()).unwrap();
        b.name = "main".into();
        cfg.bundles = vec![Arc::new(b.clone())];
        let a = Authorizer::new(cfg).unwrap();
        let input = |u: &str| Value::from_json_str(&format!(r#"{{"user":"{u}"}}"#)).unwrap();
        assert!(a.check_value(None, &input("alice")).unwrap().outcome.allow);
        let r1 = a.current().revision.clone();
        assert_eq!(&*r1.bundles[0].revision, "r1");

        let parse = |bytes: &[u8]| {
            format::parse(
                "main",
                format::read_archive("main", bytes, 1 << 20).unwrap(),
                None,
                false,
            )
            .unwrap()
        };
        let r2 = a
            .activate_bundle(parse(&version(r#"["bob"]"#, "r2", r#"["authz"]"#)))
            .unwrap();
        assert_ne!(r2, r1.display);
        let d = a.check_value(None, &input("alice")).unwrap();
        assert!(!d.outcome.allow, "the cached allow of r1 is unreachable");
        assert_eq!(&*a.current().revision.bundles[0].revision, "r2");

        // Identical files under another manifest revision: another revision all the same.
        let r3 = a
            .activate_bundle(parse(&version(r#"["bob"]"#, "r3", r#"["authz"]"#)))
            .unwrap();
        assert_ne!(r3, r2);

        // A bundle whose policy does not compile, or of another name: nothing changes.
        let broken = tar_gz(&[("authz/policy.rego", "package authz\nallow if {")]);
        assert!(a.activate_bundle(parse(&broken)).is_err());
        let mut stranger = parse(&version("[]", "x", r#"["authz"]"#));
        stranger.name = "stranger".into();
        assert!(a.activate_bundle(stranger).is_err());
        assert_eq!(a.current().revision.display, r3);
        assert!(a.check_value(None, &input("bob")).unwrap().outcome.allow);
        // Bundles own their roots.
        assert!(a
            .set_data(&["authz".into(), "admins".into()], Value::new_array())
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names() {
        assert_eq!(
            default_name("https://u:p@h.example/b/x.tar.gz?token=s"),
            "h.example/b/x.tar.gz"
        );
        assert_eq!(default_name("bundles/x/"), "bundles/x");
    }
}
