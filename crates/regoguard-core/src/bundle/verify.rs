//! `.signatures.json`: OPA's bundle signatures, checked before any file of the bundle is used.
//!
//! The file holds `{"signatures": [<one compact JWS>]}`. The JWS is verified with the
//! configured key by `builtins/jwt.rs` (the one JWS verifier of the crate: RS*/PS*/ES*/`EdDSA`
//! public keys, HS* secrets, no `alg: none`, a key never used for another key type's
//! algorithm). Its payload lists every file with a hash (`files: [{name, hash, algorithm}]`),
//! and may carry a `keyid` and a `scope`. As in OPA: the scope must equal the configured one
//! (both may be empty); every file of the bundle but `.signatures.json` must be listed with a
//! matching digest ("not included in bundle signature"); every listed file must be present
//! ("specified in bundle signatures but not found"). Structured files (`.manifest`,
//! `data.json`, `data.yaml`) are hashed as OPA hashes them: parsed, then written back with
//! sorted object keys and numbers as written, so whitespace does not change the digest.

use serde_json::Value as Json;
use sha2::Digest;

use super::{RawFile, SIGNATURES};
use crate::builtins::jwt::{self, Constraints, VerificationKey};
use crate::error::{Error, Result};

/// How a bundle's signature is checked.
#[derive(Clone, Debug)]
pub struct Verification {
    keys: Vec<VerificationKey>,
    secret: Option<Vec<u8>>,
    /// The key's id: a token naming another `kid`/`keyid` is refused.
    pub key_id: Option<String>,
    /// The scope the signature must carry (OPA: empty when not configured).
    pub scope: Option<String>,
}

impl Verification {
    /// `key` is a PEM public key or certificate, a JWK or JWK set (RS*, PS*, ES*, `EdDSA`), or
    /// else an HMAC secret (HS*).
    ///
    /// # Errors
    /// `Error::Config` for key material that looks like a PEM block or a JWK but does not parse.
    pub fn new(key: &str, key_id: Option<String>, scope: Option<String>) -> Result<Self> {
        let trimmed = key.trim_start();
        let (keys, secret) = if trimmed.starts_with("-----BEGIN") || trimmed.starts_with('{') {
            let keys = jwt::parse_keys(key)
                .map_err(|e| Error::config(format!("verification_key: {e}")))?;
            (keys, None)
        } else {
            if key.is_empty() {
                return Err(Error::config("verification_key is empty"));
            }
            (Vec::new(), Some(key.as_bytes().to_vec()))
        };
        Ok(Self {
            keys,
            secret,
            key_id,
            scope,
        })
    }
}

fn bad(name: &str, message: impl std::fmt::Display) -> Error {
    Error::config(format!(
        "bundle {name:?}: signature check failed: {message}"
    ))
}

/// Verifies `files` against their `.signatures.json` with `v`.
///
/// # Errors
/// `Error::Config` naming the bundle and the first problem found.
pub fn verify(name: &str, files: &[RawFile], v: &Verification) -> Result<()> {
    let sig_file = files
        .iter()
        .find(|f| f.path == SIGNATURES)
        .ok_or_else(|| bad(name, "bundle missing .signatures.json file"))?;
    let doc: Json = serde_json::from_slice(&sig_file.bytes)
        .map_err(|e| bad(name, format!(".signatures.json: {e}")))?;
    let token = match doc
        .get("signatures")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
    {
        Some([Json::String(t)]) => t.as_str(),
        _ => {
            return Err(bad(
                name,
                ".signatures.json: missing JWT (expected exactly one)",
            ))
        }
    };
    let constraints = Constraints {
        keys: v.keys.clone(),
        secret: v.secret.clone(),
        ..Constraints::default()
    };
    let verified = jwt::verify(token, &constraints, crate::clock::unix_ns())
        .map_err(|e| bad(name, format!("failed to verify JWT signature: {e}")))?;
    let kid = verified
        .header
        .get("kid")
        .and_then(Json::as_str)
        .or_else(|| verified.payload.get("keyid").and_then(Json::as_str));
    if let (Some(want), Some(got)) = (&v.key_id, kid) {
        if want != got {
            return Err(bad(
                name,
                format!("signed with key id {got:?}, expected {want:?}"),
            ));
        }
    }
    let scope = verified
        .payload
        .get("scope")
        .and_then(Json::as_str)
        .unwrap_or("");
    if scope != v.scope.as_deref().unwrap_or("") {
        return Err(bad(name, "scope mismatch"));
    }
    let Some(Json::Array(listed)) = verified.payload.get("files") else {
        return Err(bad(name, "the signature lists no files"));
    };
    let mut expected: std::collections::BTreeMap<String, (String, String)> =
        std::collections::BTreeMap::new();
    for f in listed {
        let (Some(n), Some(h), Some(a)) = (
            f.get("name").and_then(Json::as_str),
            f.get("hash").and_then(Json::as_str),
            f.get("algorithm").and_then(Json::as_str),
        ) else {
            return Err(bad(name, "a files entry lacks name, hash or algorithm"));
        };
        let n = n
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_owned();
        expected.insert(n, (h.to_ascii_lowercase(), a.to_owned()));
    }
    for f in files {
        if f.path == SIGNATURES {
            continue;
        }
        let Some((hash, alg)) = expected.remove(&f.path) else {
            return Err(bad(
                name,
                format!("file {} not included in bundle signature", f.path),
            ));
        };
        let got = digest(&f.path, &f.bytes, &alg).map_err(|m| bad(name, m))?;
        // Digests are public: comparing them in constant time buys nothing.
        if got != hash {
            return Err(bad(
                name,
                format!("{}: digest mismatch (want: {hash}, got: {got})", f.path),
            ));
        }
    }
    if !expected.is_empty() {
        let missing: Vec<&str> = expected.keys().map(String::as_str).collect();
        return Err(bad(
            name,
            format!(
                "file(s) {missing:?} specified in bundle signatures but not found in the target bundle"
            ),
        ));
    }
    Ok(())
}

/// Whether OPA hashes `path` as a structured document.
fn is_structured(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    matches!(
        base,
        "data.json" | "data.yaml" | ".manifest" | ".signatures.json"
    )
}

/// The hex digest of a file as OPA computes it (see the module docs).
///
/// # Errors
/// A message for an unknown algorithm or a structured file that does not parse.
pub fn digest(path: &str, bytes: &[u8], alg: &str) -> std::result::Result<String, String> {
    let canonical;
    let input: &[u8] = if is_structured(path) {
        canonical = if path.rsplit('/').next() == Some("data.yaml") {
            structured_yaml(bytes).map_err(|e| format!("{path}: {e}"))?
        } else {
            let mut p = RawJson {
                b: bytes,
                i: 0,
                depth: 0,
            };
            let mut out = Vec::with_capacity(bytes.len());
            p.value(&mut out).map_err(|e| format!("{path}: {e}"))?;
            p.ws();
            if p.i != bytes.len() {
                return Err(format!("{path}: trailing bytes after the JSON value"));
            }
            out
        };
        &canonical
    } else {
        bytes
    };
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    Ok(match alg {
        "MD5" => hex(&md5::Md5::digest(input)),
        "SHA-1" => hex(&sha1::Sha1::digest(input)),
        "SHA-224" => hex(&sha2::Sha224::digest(input)),
        "SHA-256" => hex(&sha2::Sha256::digest(input)),
        "SHA-384" => hex(&sha2::Sha384::digest(input)),
        "SHA-512" => hex(&sha2::Sha512::digest(input)),
        "SHA-512-224" => hex(&sha2::Sha512_224::digest(input)),
        "SHA-512-256" => hex(&sha2::Sha512_256::digest(input)),
        other => return Err(format!("unsupported hashing algorithm: {other}")),
    })
}

/// A YAML data file, hashed through its JSON form (numbers in Go's shortest form).
fn structured_yaml(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let value = regorus::Value::from_yaml_str(text).map_err(|e| format!("{e:#}"))?;
    let json = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    let mut p = RawJson {
        b: &json,
        i: 0,
        depth: 0,
    };
    let mut out = Vec::with_capacity(json.len());
    p.value(&mut out)?;
    Ok(out)
}

/// A JSON reader that writes OPA's hashing form as it goes: objects with sorted keys, no
/// whitespace, numbers exactly as written (Go decodes them with `UseNumber`), strings
/// re-escaped as Go's encoder does without HTML escaping.
struct RawJson<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 512;

impl RawJson<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn err<T>(&self, m: &str) -> std::result::Result<T, String> {
        Err(format!("{m} at byte {}", self.i))
    }

    fn value(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        self.ws();
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        let r = match self.b.get(self.i) {
            Some(b'{') => self.object(out),
            Some(b'[') => self.array(out),
            Some(b'"') => {
                let s = self.string()?;
                encode_string(&s, out);
                Ok(())
            }
            Some(b't') => self.literal(b"true", out),
            Some(b'f') => self.literal(b"false", out),
            Some(b'n') => self.literal(b"null", out),
            Some(b'-' | b'0'..=b'9') => self.number(out),
            _ => self.err("unexpected character"),
        };
        self.depth -= 1;
        r
    }

    fn literal(&mut self, lit: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            out.extend_from_slice(lit);
            Ok(())
        } else {
            self.err("bad literal")
        }
    }

    fn number(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        let start = self.i;
        while self.i < self.b.len()
            && matches!(
                self.b[self.i],
                b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
            )
        {
            self.i += 1;
        }
        let text = &self.b[start..self.i];
        // Validate with serde_json's grammar.
        if serde_json::from_slice::<serde_json::Number>(text).is_err() {
            return self.err("bad number");
        }
        out.extend_from_slice(text);
        Ok(())
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let start = self.i;
        self.i += 1;
        let mut escaped = false;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            self.i += 1;
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                return serde_json::from_slice::<String>(&self.b[start..self.i])
                    .map_err(|e| format!("bad string at byte {start}: {e}"));
            }
        }
        self.err("unterminated string")
    }

    fn object(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        self.i += 1;
        let mut members: std::collections::BTreeMap<String, Vec<u8>> =
            std::collections::BTreeMap::new();
        self.ws();
        if self.b.get(self.i) == Some(&b'}') {
            self.i += 1;
        } else {
            loop {
                self.ws();
                if self.b.get(self.i) != Some(&b'"') {
                    return self.err("expected a key");
                }
                let key = self.string()?;
                self.ws();
                if self.b.get(self.i) != Some(&b':') {
                    return self.err("expected ':'");
                }
                self.i += 1;
                let mut v = Vec::new();
                self.value(&mut v)?;
                // Go keeps the last of repeated keys.
                members.insert(key, v);
                self.ws();
                match self.b.get(self.i) {
                    Some(b',') => self.i += 1,
                    Some(b'}') => {
                        self.i += 1;
                        break;
                    }
                    _ => return self.err("expected ',' or '}'"),
                }
            }
        }
        out.push(b'{');
        for (n, (k, v)) in members.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            encode_string(k, out);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        Ok(())
    }

    fn array(&mut self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        self.i += 1;
        out.push(b'[');
        self.ws();
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            out.push(b']');
            return Ok(());
        }
        let mut first = true;
        loop {
            if !first {
                out.push(b',');
            }
            first = false;
            self.value(out)?;
            self.ws();
            match self.b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    out.push(b']');
                    return Ok(());
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }
}

/// Go's `encoding/json` string form with `SetEscapeHTML(false)`.
fn encode_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c if (c as u32) < 0x20 => {
                let n = c as usize;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[n >> 4]);
                out.push(HEX[n & 0xf]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_files_hash_independently_of_whitespace_and_order() {
        let a = digest("data.json", br#"{"b": [1, 2.50], "a": "x<y"}"#, "SHA-256").unwrap();
        let b = digest("data.json", b"{\"a\":\"x<y\",\n\"b\":[1,2.50]}", "SHA-256").unwrap();
        assert_eq!(a, b);
        let expected = hex_sha256(br#"{"a":"x<y","b":[1,2.50]}"#);
        assert_eq!(a, expected);
        // A policy is hashed byte for byte.
        assert_eq!(
            digest("p.rego", b"package p\n", "SHA-256").unwrap(),
            hex_sha256(b"package p\n")
        );
        assert!(digest("data.json", b"{", "SHA-256").is_err());
        assert!(digest("p.rego", b"", "MD6").is_err());
    }

    fn hex_sha256(b: &[u8]) -> String {
        sha2::Sha256::digest(b)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
