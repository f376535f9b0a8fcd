//! OPA's bundle format: reading a `.tar.gz` or a folder into files, then the files into a
//! [`Loaded`] bundle (manifest, modules, data), every check done before anything is returned.
//!
//! Rules (OPA's, README "Bundles"): `.manifest` gives `revision`, `roots` (default: the whole
//! of `data`), `metadata` and `rego_version`; every `.rego` file is a module whose package must
//! lie under a root; a `data.json` or `data.yaml` is mounted at its folder's path (`a/b/data.json`
//! is `data.a.b`) and must lie under a root too; `.signatures.json` is checked first when a
//! verification key is configured (`verify.rs`). Entries that are not regular files, paths that
//! climb out of the bundle (`..`), duplicated paths, delta bundles and Wasm modules are refused.

use std::io::Read;
use std::path::Path;

use regorus::Value;

use super::verify::{self, Verification};
use super::{Loaded, Manifest, RawFile};
use crate::engine::PolicyFile;
use crate::error::{Error, Result};

pub(crate) const MANIFEST: &str = ".manifest";

/// Normalizes a path inside a bundle; `None` for one that climbs out of it or is empty.
fn normalize(raw: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

fn bad(name: &str, message: impl std::fmt::Display) -> Error {
    Error::config(format!("bundle {name:?}: {message}"))
}

/// Reads a gzip'd tarball held in memory. The decompressed size is bounded by `max_bytes`
/// (a gzip bomb stops there); the whole gzip stream is read, so a truncated or corrupted
/// download fails its CRC or length check.
///
/// # Errors
/// `Error::Config` naming the bundle for anything but a well-formed archive of regular files.
pub fn read_archive(name: &str, compressed: &[u8], max_bytes: u64) -> Result<Vec<RawFile>> {
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut tar_bytes)
        .map_err(|e| {
            bad(
                name,
                format!("not a readable .tar.gz (truncated or corrupt?): {e}"),
            )
        })?;
    if tar_bytes.len() as u64 > max_bytes {
        return Err(bad(
            name,
            format!("larger than {max_bytes} bytes once decompressed"),
        ));
    }
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut files: Vec<RawFile> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(name, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(name, format!("bad tar entry: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| bad(name, format!("bad tar entry path: {e}")))?
            .to_string_lossy()
            .into_owned();
        match entry.header().entry_type() {
            // Directories, and pax global headers (metadata only, as `git archive` writes).
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            // pax/GNU extension headers are consumed by the tar crate itself.
            other => {
                return Err(bad(
                    name,
                    format!("{raw_path}: only regular files may be in a bundle, found {other:?}"),
                ))
            }
        }
        let path = normalize(&raw_path)
            .ok_or_else(|| bad(name, format!("{raw_path:?} escapes the bundle")))?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| bad(name, format!("{path}: truncated entry: {e}")))?;
        files.push(RawFile { path, bytes });
    }
    check_unique(name, &files)?;
    Ok(files)
}

/// Reads a folder bundle (every file under it, symlinks followed as `opa run` does).
///
/// # Errors
/// `Error::Config` for an unreadable folder or file, or more than `max_bytes` in total.
pub fn read_dir(name: &str, root: &Path, max_bytes: u64) -> Result<Vec<RawFile>> {
    let mut files = Vec::new();
    let mut total = 0u64;
    walk(name, root, "", &mut files, &mut total, max_bytes, 0)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(
    name: &str,
    dir: &Path,
    prefix: &str,
    out: &mut Vec<RawFile>,
    total: &mut u64,
    max_bytes: u64,
    depth: usize,
) -> Result<()> {
    // A symlink loop would recurse for ever.
    if depth > 64 {
        return Err(bad(name, format!("{prefix}: folders nested too deeply")));
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| bad(name, format!("cannot list {prefix:?}: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(name, format!("cannot list {prefix:?}: {e}")))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            file_name.clone()
        } else {
            format!("{prefix}/{file_name}")
        };
        let path = entry.path();
        if path.is_dir() {
            walk(name, &path, &rel, out, total, max_bytes, depth + 1)?;
        } else if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| bad(name, format!("{rel}: {e}")))?;
            *total += bytes.len() as u64;
            if *total > max_bytes {
                return Err(bad(name, format!("larger than {max_bytes} bytes")));
            }
            out.push(RawFile { path: rel, bytes });
        }
    }
    Ok(())
}

fn check_unique(name: &str, files: &[RawFile]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(files.len());
    for f in files {
        if !seen.insert(f.path.as_str()) {
            return Err(bad(name, format!("{} appears twice", f.path)));
        }
    }
    Ok(())
}

/// Turns a bundle's files into a [`Loaded`] bundle: signatures first (when `verification` is
/// given), then the manifest, the modules and the data, each checked against the roots.
///
/// # Errors
/// `Error::Config` for a bad signature, manifest or layout, `Error::Data` for data that does not
/// parse, `Error::Policy` for a module that is not UTF-8 text.
pub fn parse(
    name: &str,
    files: Vec<RawFile>,
    verification: Option<&Verification>,
    rego_v0: bool,
) -> Result<Loaded> {
    check_unique(name, &files)?;
    if let Some(v) = verification {
        verify::verify(name, &files, v)?;
    }
    let manifest = match files.iter().find(|f| f.path == MANIFEST) {
        Some(f) => Manifest::parse(name, &f.bytes)?,
        None => Manifest::default(),
    };
    match (manifest.rego_version, rego_v0) {
        (Some(0), false) => {
            return Err(bad(
                name,
                "its manifest says rego_version 0: load it with Authorizer(..., rego_v0=True)",
            ))
        }
        (Some(1), true) => {
            return Err(bad(
                name,
                "its manifest says rego_version 1 but the Authorizer has rego_v0=True",
            ))
        }
        _ => {}
    }
    let mut modules = Vec::new();
    let mut data = Value::new_object();
    for f in files {
        let base = f.path.rsplit('/').next().unwrap_or(&f.path);
        let folder = f
            .path
            .strip_suffix(base)
            .unwrap_or("")
            .trim_end_matches('/');
        if base == "patch.json" {
            return Err(bad(name, "delta bundles (patch.json) are not supported"));
        }
        if Path::new(base).extension().and_then(|e| e.to_str()) == Some("wasm") {
            return Err(bad(
                name,
                format!("{}: Wasm modules are not supported", f.path),
            ));
        }
        if Path::new(base).extension().and_then(|e| e.to_str()) == Some("rego") {
            let display = format!("{name}/{}", f.path);
            let Ok(text) = String::from_utf8(f.bytes) else {
                return Err(Error::Policy(vec![crate::error::PolicyIssue {
                    file: display,
                    line: 0,
                    column: 0,
                    code: "rego_parse_error",
                    message: "the file is not UTF-8 text".into(),
                    snippet: String::new(),
                }]));
            };
            if let Some(package) = package_path(&text) {
                if !manifest.permits(&package) {
                    return Err(bad(
                        name,
                        format!(
                            "manifest roots {:?} do not permit 'package {}' in module {}",
                            manifest.roots,
                            package.join("."),
                            f.path
                        ),
                    ));
                }
            }
            modules.push(PolicyFile {
                path: display,
                text,
            });
        } else if base == "data.json" || base == "data.yaml" {
            let shown = format!("{name}/{}", f.path);
            let value = parse_data(&shown, base, &f.bytes)?;
            let segments: Vec<String> = if folder.is_empty() {
                Vec::new()
            } else {
                folder.split('/').map(str::to_owned).collect()
            };
            if segments.is_empty() {
                // It is mounted at `data` itself.
                crate::engine::check_data_root(&value, &shown)?;
            }
            manifest.check_data(name, &segments, &value)?;
            merge_at(&mut data, &segments, value).map_err(|path| {
                Error::data(format!("{shown}: conflicts with other data at data.{path}"))
            })?;
        }
    }
    Ok(Loaded {
        name: name.into(),
        manifest,
        modules,
        data,
    })
}

fn parse_data(shown: &str, base: &str, bytes: &[u8]) -> Result<Value> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| Error::data(format!("{shown}: not UTF-8 text")))?;
    let value = if base == "data.json" {
        // One parse; serde_json again only to locate an error (line and column).
        Value::from_json_str(text).map_err(|e| {
            match serde_json::from_str::<serde_json::Value>(text) {
                Err(e) => Error::data(format!("{shown}:{}:{}: {e}", e.line(), e.column())),
                Ok(_) => Error::data(format!("{shown}: {e:#}")),
            }
        })?
    } else {
        Value::from_yaml_str(text).map_err(|e| Error::data(format!("{shown}: {e:#}")))?
    };
    Ok(value)
}

/// Merges `value` into `doc` at `path`: objects merge key by key; anything else may only land
/// where nothing is yet. `Err` names the conflicting path.
pub(crate) fn merge_at(
    doc: &mut Value,
    path: &[String],
    value: Value,
) -> std::result::Result<(), String> {
    let mut node = doc;
    for (i, seg) in path.iter().enumerate() {
        let Ok(obj) = node.as_object_mut() else {
            return Err(path[..i].join("."));
        };
        node = obj.get_or_insert_with(Value::from(seg.as_str()), Value::new_object);
    }
    merge_values(node, value, &mut path.to_vec())
}

fn merge_values(
    into: &mut Value,
    from: Value,
    path: &mut Vec<String>,
) -> std::result::Result<(), String> {
    match (into.as_object_mut(), from) {
        (Ok(dst), Value::Object(src)) => {
            for (k, v) in src.iter() {
                let key = match k {
                    Value::String(s) => s.to_string(),
                    other => other.to_string(),
                };
                if let Some(existing) = dst.get_mut(k) {
                    path.push(key);
                    merge_values(existing, v.clone(), path)?;
                    path.pop();
                } else {
                    dst.insert(k.clone(), v.clone());
                }
            }
            Ok(())
        }
        (Ok(dst), other) if dst.is_empty() => {
            *into = other;
            Ok(())
        }
        _ => Err(path.join(".")),
    }
}

/// The package path of a module (`package a.b["c-d"]` is `[a, b, c-d]`), read from its first
/// `package` statement; `None` when there is none (regorus then reports the parse error).
pub(crate) fn package_path(text: &str) -> Option<Vec<String>> {
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let rest = line.strip_prefix("package")?;
        if !rest.starts_with([' ', '\t']) {
            return None;
        }
        let rest = rest.split('#').next().unwrap_or("").trim();
        return Some(ref_segments(rest));
    }
    None
}

fn ref_segments(r: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = r.chars().peekable();
    let mut cur = String::new();
    while let Some(c) = chars.next() {
        match c {
            '.' => out.push(std::mem::take(&mut cur)),
            '[' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                let mut s = String::new();
                let quoted = chars.peek() == Some(&'"');
                if quoted {
                    chars.next();
                }
                for c in chars.by_ref() {
                    if (quoted && c == '"') || (!quoted && c == ']') {
                        break;
                    }
                    s.push(c);
                }
                if quoted {
                    // the closing bracket
                    chars.next();
                }
                out.push(s);
                if chars.peek() == Some(&'.') {
                    chars.next();
                }
            }
            c if c.is_whitespace() => break,
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_escapes_refused() {
        assert_eq!(
            normalize("/a/./b/data.json").as_deref(),
            Some("a/b/data.json")
        );
        assert_eq!(normalize("./.manifest").as_deref(), Some(".manifest"));
        assert_eq!(normalize("a/../../etc/passwd"), None);
        assert_eq!(normalize("/"), None);
    }

    #[test]
    fn package_paths() {
        assert_eq!(
            package_path("# c\npackage a.b.c\n"),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            package_path("package a[\"b-c\"].d # x\n"),
            Some(vec!["a".into(), "b-c".into(), "d".into()])
        );
        assert_eq!(package_path("allow := true"), None);
    }

    #[test]
    fn merge_conflicts_name_the_path() {
        let mut doc = Value::new_object();
        merge_at(
            &mut doc,
            &["a".into()],
            Value::from_json_str(r#"{"x":1}"#).unwrap(),
        )
        .unwrap();
        merge_at(
            &mut doc,
            &["a".into()],
            Value::from_json_str(r#"{"y":2}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(
            merge_at(
                &mut doc,
                &["a".into()],
                Value::from_json_str(r#"{"x":3}"#).unwrap()
            ),
            Err("a.x".into())
        );
    }
}
