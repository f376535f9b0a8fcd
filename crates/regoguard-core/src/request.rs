//! The input document of an HTTP request, written straight into canonical bytes.
//!
//! This is the single definition of what a policy sees for a request (README, "The request
//! input"). The middleware hands Rust the raw ASGI scope parts; on an L1 hit no Python dict is
//! ever built, and on a miss the engine decodes these same bytes.
//!
//! ```text
//! {"body"?: any, "header_values": {name: [str]}, "headers": {name: str}, "method": str,
//!  "path": str, "path_params"?: {name: str}, "path_segments": [str], "query": {name: [str]},
//!  "raw_body"?: {"size": int, "text": str}, "route"?: str,
//!  "token"?: {"alg": str, "exp"?: number, "kid"?: str}, "user": any, "websocket"?: true}
//! ```
//! Keys are written in canonical (byte) order, which is the order above. `path_segments` is
//! not written: it is a function of `path`, so [`complete`] adds it after decoding on a miss
//! and the key (which covers `path`) stays exact with fewer bytes to hash.

use std::borrow::Cow;
use std::collections::BTreeMap;

use regorus::Value;

use crate::canonical::CanonicalWriter;

/// What the canonical bytes of a check hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputForm {
    /// The whole input document.
    Plain,
    /// A request document without its derived fields ([`complete`] adds them
    /// before evaluation). They are functions of fields the key covers, so leaving them out of
    /// the key keeps it exact and makes it cheaper to hash.
    Request,
}

/// Which request headers reach the policy (lower-cased names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderFilter {
    names: Vec<String>,
}

impl HeaderFilter {
    /// A filter passing exactly `names`, looked up as Starlette's `request.headers` does: the
    /// lower-cased name against the raw (already lower-case, per ASGI) name.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = names
            .into_iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        Self { names }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The index of `name` (as the scope holds it) among the passed names, if it passes. The
    /// match is exact, as in Starlette's `Headers.get`: a raw `X-Tenant` (which no ASGI server
    /// sends) reaches neither the app's lookup nor the policy.
    #[inline]
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        self.names.iter().position(|n| n.as_bytes() == name)
    }
}

/// Collects the allowed headers of one request in arrival order, without copying them: `V` is
/// whatever holds the raw value bytes. Values are decoded as latin-1 (as Starlette does, so
/// every byte string has exactly one text form) when written.
///
/// What the policy gets for a name sent several times: `headers[name]` is the *first* value,
/// what the app's `request.headers.get(name)` (and a `Header()` parameter) reads, and
/// `header_values[name]` is every value in order (`request.headers.getlist(name)`). Joining
/// them (RFC 9110 section 5.3) would show the policy a value the app never reads.
pub struct HeaderCollector<'f, V> {
    filter: &'f HeaderFilter,
    seen: Vec<(usize, V)>,
}

impl<'f, V: AsRef<[u8]>> HeaderCollector<'f, V> {
    pub fn new(filter: &'f HeaderFilter) -> Self {
        Self {
            filter,
            seen: Vec::new(),
        }
    }

    /// Keeps `value` when `name` passes the filter.
    #[inline]
    pub fn push(&mut self, name: &[u8], value: V) {
        if let Some(i) = self.filter.position(name) {
            self.seen.push((i, value));
        }
    }

    /// Writes `"header_values": {name: [value, ...]}, "headers": {name: first value}` (the two
    /// keys are adjacent in canonical order), names in canonical order.
    pub fn write(&self, w: &mut CanonicalWriter) {
        // Literal keys: already canonical, no escape scan (the request path writes them on
        // every check).
        w.raw(br#""header_values":"#);
        self.write_object(w, true);
        w.raw(br#","headers":"#);
        self.write_object(w, false);
    }

    fn write_object(&self, w: &mut CanonicalWriter, all: bool) {
        w.open_object();
        let mut first = true;
        // The filter's names are sorted, so walking them gives canonical order; they are few
        // (configuration), so this is a scan of `seen` per name, with no allocation.
        for (i, name) in self.filter.names.iter().enumerate() {
            let mut values = self
                .seen
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, v)| v.as_ref());
            let Some(head) = values.next() else { continue };
            if !first {
                w.comma();
            }
            first = false;
            w.key(name);
            if all {
                w.open_array();
                w.str(&latin1(head));
                for v in values {
                    w.comma();
                    w.str(&latin1(v));
                }
                w.close_array();
            } else {
                w.str(&latin1(head));
            }
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
/// [`path_segments`]), and the empty `headers`, `header_values` and `query` the bytes leave
/// out (every request document has them). The key leaves them out (they add nothing to it:
/// the bytes without them stand for exactly one document, the one with them empty).
///
/// A document with a verified token (`input.token`, written by `JWTIdentity`) also reports the
/// token's `exp` to the evaluation's context: the decision is cached no longer than the token
/// (ARCHITECTURE.md, "Caching rules" 8). Call it inside the evaluation's `eval_context::Scope`.
pub fn complete(input: &mut Value) {
    if let Value::Object(fields) = &*input {
        if let Some(Value::Object(token)) = fields.get(&Value::from("token")) {
            if let Some(exp) = token.get(&Value::from("exp")).and_then(|e| e.as_f64().ok()) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let ns = if exp <= 0.0 {
                    0
                } else if exp >= 1.8e10 {
                    u64::MAX
                } else {
                    (exp * 1e9) as u64
                };
                crate::eval_context::valid_until(ns);
            }
        }
    }
    if let Ok(fields) = input.as_object_mut() {
        for key in ["header_values", "headers", "query"] {
            let key = Value::from(key);
            if !fields.contains_key(&key) {
                fields.insert(key, Value::new_object());
            }
        }
    }
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
/// `{"a": ["1", "2"]}`. Decoded exactly as Starlette's `request.query_params` (Python's
/// `parse_qsl` on the latin-1 text of the query string): `+` is a space, `%XX` a byte, each run
/// of ASCII is then read as UTF-8 (invalid sequences replaced by U+FFFD) and a raw byte above
/// 0x7f (servers pass them through) is its latin-1 character; a key without `=` has the value
/// `""`.
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
        params
            .entry(form_decode(k))
            .or_default()
            .push(form_decode(v));
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
    if raw.is_ascii() {
        return percent_decode_utf8(raw);
    }
    // Python's `unquote` decodes only the ASCII runs of its (latin-1) text: reading raw
    // non-ASCII bytes as UTF-8 instead would show the policy `é` where the app reads `Ã©`
    // (found by fuzz/, regression fuzz/regressions/request-raw-utf8-query).
    let mut out = String::with_capacity(raw.len() * 2);
    for run in raw.chunk_by(|a, b| a.is_ascii() == b.is_ascii()) {
        if run[0].is_ascii() {
            out.push_str(&percent_decode_utf8(run));
        } else {
            out.extend(run.iter().map(|&b| char::from(b)));
        }
    }
    out
}

/// `+` to space and `%XX` to a byte over ASCII text, then the bytes as UTF-8 (lossy).
fn percent_decode_utf8(raw: &[u8]) -> String {
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
        // Raw bytes above 0x7f are latin-1, as Starlette reads them; escapes next to them
        // still decode as UTF-8 on their own (Python's `unquote` over ASCII runs).
        assert_eq!(
            written(|w| write_query(w, b"g=\xc3\xa9&h=%C3\xa9%41&i=%\xff")),
            r#"{"g":["Ã©"],"h":["�©A"],"i":["%ÿ"]}"#
        );
        assert_eq!(written(|w| write_query(w, b"")), "{}");
    }

    #[test]
    fn complete_adds_the_empty_parts_the_bytes_leave_out() {
        let mut v = Value::from_json_str(r#"{"method":"GET","path":"/a","user":null}"#).unwrap();
        complete(&mut v);
        let full = r#"{"header_values":{},"headers":{},"method":"GET","path":"/a","path_segments":["a"],"query":{},"user":null}"#;
        assert_eq!(v, Value::from_json_str(full).unwrap());
        // Parts that are there are kept as they are.
        let mut v = Value::from_json_str(r#"{"headers":{"x":"1"},"path":"/","query":{"a":["1"]}}"#)
            .unwrap();
        complete(&mut v);
        assert_eq!(
            v[&Value::from("headers")],
            Value::from_json_str(r#"{"x":"1"}"#).unwrap()
        );
        assert_eq!(
            v[&Value::from("query")],
            Value::from_json_str(r#"{"a":["1"]}"#).unwrap()
        );
    }

    #[test]
    fn segments_skip_empty_parts() {
        for (path, segments) in [("/api//v1/x/", r#"["api","v1","x"]"#), ("/", "[]")] {
            let mut v = Value::from_json_str(&format!(r#"{{"path":"{path}"}}"#)).unwrap();
            complete(&mut v);
            assert_eq!(
                v[&Value::from("path_segments")],
                Value::from_json_str(segments).unwrap()
            );
        }
    }

    #[test]
    fn headers_give_the_first_value_and_every_value() {
        let f = HeaderFilter::new(["X-Tenant", "accept", "x-absent"]);
        let mut c = HeaderCollector::new(&f);
        for (k, v) in [
            (&b"x-tenant"[..], &b"a"[..]),
            (b"accept", b"*/*"),
            (b"cookie", b"secret"),
            (b"X-Tenant", b"raw-uppercase"),
            (b"x-tenant", b"b\xe9"),
        ] {
            c.push(k, v);
        }
        assert_eq!(
            written(|w| c.write(w)),
            r#""header_values":{"accept":["*/*"],"x-tenant":["a","bé"]},"headers":{"accept":"*/*","x-tenant":"a"}"#
        );
        let empty = HeaderCollector::<&[u8]>::new(&f);
        assert_eq!(
            written(|w| empty.write(w)),
            r#""header_values":{},"headers":{}"#
        );
    }
}
