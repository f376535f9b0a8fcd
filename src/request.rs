//! The input document of an HTTP request, written straight into canonical bytes.
//!
//! This is the single definition of what a policy sees for a request (README, "The request
//! input"). The middleware hands Rust the raw ASGI scope parts; on an L1 hit no Python dict is
//! ever built, and on a miss the engine decodes these same bytes.
//!
//! ```text
//! {"body"?: any, "headers": {name: value}, "method": str, "path": str,
//!  "path_params"?: {name: str}, "path_segments": [str], "query": {name: [str]},
//!  "route"?: str, "user": any, "websocket"?: true}
//! ```
//! Keys are written in canonical (byte) order, which is the order above. `path_segments` is
//! not written: it is a function of `path`, so [`complete`] adds it after decoding on a miss
//! and the key (which covers `path`) stays exact with fewer bytes to hash.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value;

use crate::canonical::CanonicalWriter;

/// Which request headers reach the policy (lower-cased names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderFilter {
    names: Vec<Vec<u8>>,
}

impl HeaderFilter {
    /// A filter passing exactly `names` (case-insensitive).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<Vec<u8>> = names.into_iter().map(|n| n.trim().to_ascii_lowercase().into_bytes()).collect();
        names.sort();
        names.dedup();
        Self { names }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| std::str::from_utf8(n).unwrap_or(""))
    }

    /// Whether `name` (as the client sent it) passes.
    #[inline]
    pub fn allows(&self, name: &[u8]) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Collects allowed headers: lower-cased names, latin-1 values (as Starlette decodes them, so
/// every byte string has exactly one text form), repeated headers joined with ", " in arrival
/// order (RFC 9110 section 5.3).
#[derive(Default)]
pub struct HeaderCollector {
    values: BTreeMap<String, String>,
}

impl HeaderCollector {
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let name = latin1(name).to_ascii_lowercase();
        let value = latin1(value);
        match self.values.get_mut(&name) {
            Some(existing) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => {
                self.values.insert(name, value.into_owned());
            }
        }
    }

    /// Writes `{name: value}` in canonical order.
    pub fn write(&self, w: &mut CanonicalWriter) {
        w.open_object();
        for (i, (k, v)) in self.values.iter().enumerate() {
            if i > 0 {
                w.comma();
            }
            w.key(k);
            w.str(v);
        }
        w.close_object();
    }
}

fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8 and maps to itself in latin-1.
        Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default())
    } else {
        Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())
    }
}

/// `path_segments` of a request: the non-empty `/`-separated parts of its `path`.
pub fn path_segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Adds the fields derived from others to a decoded request document: `path_segments` (see
/// [`path_segments`]). The key leaves them out (they add nothing to it).
pub fn complete(input: &mut Value) {
    let segments = match input {
        Value::Object(fields) => match fields.get(&Value::from("path")) {
            Some(Value::String(path)) => path_segments(path).map(Value::from).collect::<Vec<_>>(),
            _ => return,
        },
        _ => return,
    };
    if let Ok(fields) = input.as_object_mut() {
        fields.insert(Value::from("path_segments"), Value::from(segments));
    }
}

/// Writes `query`: every parameter as a list of its values in order, so `?a=1&a=2` is
/// `{"a": ["1", "2"]}`. Decoding follows the URL standard's form-urlencoded parser (`+` is a
/// space, `%XX` a byte, invalid UTF-8 replaced by U+FFFD, as Starlette's `request.query_params`
/// does); a key without `=` has the value `""`.
pub fn write_query(w: &mut CanonicalWriter, query: &[u8]) {
    if query.is_empty() {
        w.open_object();
        w.close_object();
        return;
    }
    let mut params: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        params.entry(form_decode(k)).or_default().push(form_decode(v));
    }
    w.open_object();
    for (i, (k, values)) in params.iter().enumerate() {
        if i > 0 {
            w.comma();
        }
        w.key(k);
        w.open_array();
        for (j, v) in values.iter().enumerate() {
            if j > 0 {
                w.comma();
            }
            w.str(v);
        }
        w.close_array();
    }
    w.close_object();
}

fn form_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(raw.get(i + 1)), hex(raw.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn hex(b: Option<&u8>) -> Option<u8> {
    match b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut CanonicalWriter)) -> String {
        let mut w = CanonicalWriter::new();
        f(&mut w);
        String::from_utf8(w.into_bytes()).unwrap()
    }

    #[test]
    fn query_keeps_every_value() {
        assert_eq!(
            written(|w| write_query(w, b"b=2&a=1&a=x+y&c&d=%41%zz%2&&e=%C3%A9&f=%FF")),
            r#"{"a":["1","x y"],"b":["2"],"c":[""],"d":["A%zz%2"],"e":["é"],"f":["�"]}"#
        );
        assert_eq!(written(|w| write_query(w, b"")), "{}");
    }

    #[test]
    fn segments_skip_empty_parts() {
        for (path, segments) in [("/api//v1/x/", r#"["api","v1","x"]"#), ("/", "[]")] {
            let mut v = Value::from_json_str(&format!(r#"{{"path":"{path}"}}"#)).unwrap();
            complete(&mut v);
            assert_eq!(v[&Value::from("path_segments")], Value::from_json_str(segments).unwrap());
        }
    }

    #[test]
    fn headers_are_filtered_lowercased_and_joined() {
        let f = HeaderFilter::new(["X-Tenant", "accept"]);
        assert!(f.allows(b"x-tenant") && f.allows(b"X-TENANT") && !f.allows(b"cookie"));
        let mut c = HeaderCollector::default();
        for (k, v) in [(&b"x-tenant"[..], &b"a"[..]), (b"accept", b"*/*"), (b"X-Tenant", b"b\xe9")] {
            if f.allows(k) {
                c.push(k, v);
            }
        }
        assert_eq!(written(|w| c.write(w)), r#"{"accept":"*/*","x-tenant":"a, bé"}"#);
    }
}
