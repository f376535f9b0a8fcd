//! The canonical form of an input document: the bytes every cache key is derived from.
//!
//! It is compact JSON with object keys sorted by their UTF-8 bytes, integers in decimal, floats in
//! their shortest round-trip form (always with a `.` or an exponent, so `1` and `1.0` stay apart)
//! and no whitespace. It depends on nothing but the value: not on dict order, Python's hash seed,
//! the process or the machine (ARCHITECTURE.md, "Caching rules", rule 5). Because it is JSON, the same bytes
//! are also what the engine decodes on a miss, so the key can never describe a different input
//! from the one that was evaluated (rule 1).

use regorus::Value;

use crate::error::{Error, Result};

/// Deepest nesting of arrays and objects an input may have. Deeper inputs (and cyclic ones,
/// which are infinitely deep) are rejected with `Error::Input` naming the path.
pub const MAX_DEPTH: usize = 64;

/// Writes canonical JSON into a reusable buffer.
///
/// The caller drives it in document order; objects must be written through [`sort_entries`]
/// order so the bytes do not depend on insertion order.
#[derive(Debug, Default)]
pub struct CanonicalWriter {
    buf: Vec<u8>,
}

impl CanonicalWriter {
    /// An empty writer with room for a typical request input.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(512),
        }
    }

    /// Forgets what was written, keeping the allocation.
    #[inline]
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The bytes written so far.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes the writer and returns its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    #[inline]
    pub fn null(&mut self) {
        self.buf.extend_from_slice(b"null");
    }

    #[inline]
    pub fn bool(&mut self, b: bool) {
        self.buf
            .extend_from_slice(if b { b"true" } else { b"false" });
    }

    #[inline]
    pub fn i64(&mut self, n: i64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    #[inline]
    pub fn u64(&mut self, n: u64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// An integer too large for 64 bits, as its decimal digits (optionally with a leading `-`).
    ///
    /// # Errors
    /// `Error::Input` (with an empty path, filled in by the caller) when `digits` is not an
    /// integer literal.
    pub fn big_int(&mut self, digits: &str) -> Result<()> {
        let body = digits.strip_prefix('-').unwrap_or(digits);
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(input_error(format!("{digits:?} is not an integer")));
        }
        self.buf.extend_from_slice(digits.as_bytes());
        Ok(())
    }

    /// A float in its shortest round-trip form.
    ///
    /// # Errors
    /// `Error::Input` (with an empty path) for NaN and infinities, which have no JSON form.
    #[inline]
    pub fn f64(&mut self, x: f64) -> Result<()> {
        if !x.is_finite() {
            return Err(input_error(format!(
                "{x} has no JSON form (NaN and infinities are rejected)"
            )));
        }
        self.buf
            .extend_from_slice(ryu::Buffer::new().format_finite(x).as_bytes());
        Ok(())
    }

    /// A JSON string: `"`, `\` and control characters escaped, everything else raw UTF-8.
    #[inline]
    pub fn str(&mut self, s: &str) {
        let bytes = s.as_bytes();
        self.buf.reserve(bytes.len() + 2);
        self.buf.push(b'"');
        // Nearly every string needs no escape: one vectorisable scan, one copy.
        if bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
            self.escaped(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.buf.push(b'"');
    }

    #[cold]
    fn escaped(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b >= 0x20 && b != b'"' && b != b'\\' {
                continue;
            }
            self.buf.extend_from_slice(&bytes[start..i]);
            match b {
                b'"' => self.buf.extend_from_slice(b"\\\""),
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    self.buf.extend_from_slice(b"\\u00");
                    self.buf.push(HEX[usize::from(b >> 4)]);
                    self.buf.push(HEX[usize::from(b & 0xf)]);
                }
            }
            start = i + 1;
        }
        self.buf.extend_from_slice(&bytes[start..]);
    }

    #[inline]
    pub fn open_array(&mut self) {
        self.buf.push(b'[');
    }

    #[inline]
    pub fn close_array(&mut self) {
        self.buf.push(b']');
    }

    #[inline]
    pub fn open_object(&mut self) {
        self.buf.push(b'{');
    }

    #[inline]
    pub fn close_object(&mut self) {
        self.buf.push(b'}');
    }

    /// An object key followed by `:`.
    #[inline]
    pub fn key(&mut self, k: &str) {
        self.str(k);
        self.buf.push(b':');
    }

    /// Appends bytes that are already canonical JSON (a fragment written by this writer
    /// earlier, such as a verified token's claims).
    #[inline]
    pub fn raw(&mut self, canonical: &[u8]) {
        self.buf.extend_from_slice(canonical);
    }

    /// The separator between array items or object members.
    #[inline]
    pub fn comma(&mut self) {
        self.buf.push(b',');
    }

    /// Writes a regorus value canonically (data documents, Rust tests and benches).
    ///
    /// # Errors
    /// `Error::Input` for non-finite numbers, non-string object keys, undefined values and
    /// nesting deeper than [`MAX_DEPTH`]; the path starts at `root`.
    pub fn value(&mut self, v: &Value, root: &str) -> Result<()> {
        self.value_at(v, 0).map_err(|e| prefix_path(e, root))
    }

    /// An array (or a set, written as its sorted array) of values at `depth`.
    fn array_at<'v>(&mut self, items: impl Iterator<Item = &'v Value>, depth: usize) -> Result<()> {
        check_depth(depth)?;
        self.open_array();
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.comma();
            }
            self.value_at(item, depth + 1)
                .map_err(|e| prefix_index(e, i))?;
        }
        self.close_array();
        Ok(())
    }

    fn value_at(&mut self, v: &Value, depth: usize) -> Result<()> {
        match v {
            Value::Null => self.null(),
            Value::Bool(b) => self.bool(*b),
            Value::String(s) => self.str(s),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.i64(i);
                } else if let Some(u) = n.as_u64() {
                    self.u64(u);
                } else if n.is_integer() {
                    self.big_int(&n.format_decimal())?;
                } else {
                    self.f64(n.as_f64().unwrap_or(f64::NAN))?;
                }
            }
            Value::Array(items) => self.array_at(items.iter(), depth)?,
            // Sets have no JSON form; they only reach here from data, where regorus itself
            // serialises them as sorted arrays.
            Value::Set(items) => self.array_at(items.iter(), depth)?,
            Value::Object(fields) => {
                check_depth(depth)?;
                // Sorted by Value; for string keys that is byte order, as `sort_entries` gives.
                self.open_object();
                for (i, (k, item)) in fields.iter_sorted().enumerate() {
                    let Value::String(k) = k else {
                        return Err(input_error(format!("object key {k} is not a string")));
                    };
                    if i > 0 {
                        self.comma();
                    }
                    self.key(k);
                    self.value_at(item, depth + 1)
                        .map_err(|e| prefix_key(e, k))?;
                }
                self.close_object();
            }
            Value::Undefined => return Err(input_error("undefined has no JSON form".to_owned())),
        }
        Ok(())
    }
}

/// Puts object members in canonical order: by the UTF-8 bytes of their keys.
#[inline]
pub fn sort_entries<T>(entries: &mut [(&str, T)]) {
    if entries.len() > 1 {
        entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
}

/// Fails once `depth` containers are open already.
///
/// # Errors
/// `Error::Input` (empty path) past [`MAX_DEPTH`].
#[inline]
pub fn check_depth(depth: usize) -> Result<()> {
    if depth >= MAX_DEPTH {
        return Err(input_error(format!(
            "nested deeper than {MAX_DEPTH} levels (or cyclic)"
        )));
    }
    Ok(())
}

/// Decodes canonical bytes back into the value the engine evaluates.
///
/// A small parser for exactly the JSON [`CanonicalWriter`] produces (about five times faster
/// than going through serde on a request-sized input). Numbers are read as regorus reads
/// them, so decisions match those made on a value parsed by regorus itself.
///
/// # Errors
/// `Error::Input` if the bytes are not such JSON (they always are when made by the writer).
pub fn decode(bytes: &[u8]) -> Result<Value> {
    let mut p = Parser { b: bytes, i: 0 };
    let v = p.value(0)?;
    if p.i != bytes.len() {
        return Err(p.fail("trailing bytes"));
    }
    Ok(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    #[cold]
    fn fail(&self, what: &str) -> Error {
        input_error(format!("not canonical JSON at byte {}: {what}", self.i))
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, lit: &[u8]) -> Result<()> {
        if self.b.get(self.i..self.i + lit.len()) == Some(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(self.fail("unexpected token"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        match self.peek() {
            Some(b'"') => Ok(Value::String(self.string()?.into())),
            Some(b'{') => {
                check_depth(depth)?;
                self.i += 1;
                let mut map = std::collections::BTreeMap::new();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Value::new_object());
                }
                loop {
                    let k = self.string()?;
                    self.eat(b":")?;
                    let v = self.value(depth + 1)?;
                    map.insert(Value::String(k.into()), v);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Value::from(map));
                        }
                        _ => return Err(self.fail("expected , or }")),
                    }
                }
            }
            Some(b'[') => {
                check_depth(depth)?;
                self.i += 1;
                let mut items = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::from(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::from(items));
                        }
                        _ => return Err(self.fail("expected , or ]")),
                    }
                }
            }
            Some(b't') => self.eat(b"true").map(|()| Value::Bool(true)),
            Some(b'f') => self.eat(b"false").map(|()| Value::Bool(false)),
            Some(b'n') => self.eat(b"null").map(|()| Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.fail("expected a value")),
        }
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.i;
        let mut integral = true;
        while let Some(c) = self.peek() {
            match c {
                b'0'..=b'9' | b'-' | b'+' => {}
                b'.' | b'e' | b'E' => integral = false,
                _ => break,
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| self.fail("number"))?;
        // The writer's floats (ryu) have at most three exponent digits. A longer exponent is
        // never canonical, and regorus would build 10^exponent as a big integer: `1e99999999`
        // took minutes (found by fuzz/, regression fuzz/regressions/canonical_decode/).
        if let Some(e) = text.find(['e', 'E']) {
            if text[e + 1..].trim_start_matches(['+', '-']).len() > 3 {
                return Err(self.fail("exponent out of range"));
            }
        }
        if integral {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Value::from(n));
            }
            if let Ok(n) = text.parse::<u64>() {
                return Ok(Value::from(n));
            }
        }
        // Floats and big integers: exactly as regorus's own JSON reader makes them.
        Value::from_numeric_string(text).map_err(|_| self.fail("number"))
    }

    fn string(&mut self) -> Result<String> {
        if self.peek() != Some(b'"') {
            return Err(self.fail("expected a string"));
        }
        self.i += 1;
        let mut out = Vec::new();
        let mut start = self.i;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.fail("unterminated string"));
            };
            match c {
                b'"' => {
                    out.extend_from_slice(&self.b[start..self.i]);
                    self.i += 1;
                    break;
                }
                b'\\' => {
                    out.extend_from_slice(&self.b[start..self.i]);
                    let esc = self.b.get(self.i + 1).copied();
                    self.i += 2;
                    match esc {
                        Some(b'"') => out.push(b'"'),
                        Some(b'\\') => out.push(b'\\'),
                        Some(b'n') => out.push(b'\n'),
                        Some(b'r') => out.push(b'\r'),
                        Some(b't') => out.push(b'\t'),
                        Some(b'u') => {
                            let hex = self
                                .b
                                .get(self.i..self.i + 4)
                                .ok_or_else(|| self.fail("escape"))?;
                            let hex = std::str::from_utf8(hex).map_err(|_| self.fail("escape"))?;
                            let code =
                                u32::from_str_radix(hex, 16).map_err(|_| self.fail("escape"))?;
                            let ch = char::from_u32(code).ok_or_else(|| self.fail("escape"))?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            self.i += 4;
                        }
                        _ => return Err(self.fail("escape")),
                    }
                    start = self.i;
                }
                _ => self.i += 1,
            }
        }
        String::from_utf8(out).map_err(|_| self.fail("invalid UTF-8"))
    }
}

/// Canonical bytes of a value (convenience for tests, benches and data documents).
///
/// # Errors
/// As [`CanonicalWriter::value`].
pub fn to_bytes(v: &Value, root: &str) -> Result<Vec<u8>> {
    let mut w = CanonicalWriter::new();
    w.value(v, root)?;
    Ok(w.into_bytes())
}

#[cold]
pub fn input_error(message: String) -> Error {
    Error::Input {
        path: String::new(),
        message,
    }
}

/// Adds an object key in front of the path of an input error.
#[cold]
pub fn prefix_key(e: Error, key: &str) -> Error {
    match e {
        Error::Input { path, message } => {
            let simple = !key.is_empty()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !key.as_bytes()[0].is_ascii_digit();
            let seg = if simple {
                format!(".{key}")
            } else {
                format!("[{}]", serde_json::Value::String(key.to_owned()))
            };
            Error::Input {
                path: seg + &path,
                message,
            }
        }
        other => other,
    }
}

/// Adds an array index in front of the path of an input error.
#[cold]
pub fn prefix_index(e: Error, index: usize) -> Error {
    match e {
        Error::Input { path, message } => Error::Input {
            path: format!("[{index}]{path}"),
            message,
        },
        other => other,
    }
}

/// Adds the root name (`input`, `data`) in front of the path of an input error.
#[cold]
pub fn prefix_path(e: Error, root: &str) -> Error {
    match e {
        Error::Input { path, message } => Error::Input {
            path: format!("{root}{path}"),
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(json: &str) -> String {
        let v = Value::from_json_str(json).unwrap();
        String::from_utf8(to_bytes(&v, "input").unwrap()).unwrap()
    }

    #[test]
    fn key_order_does_not_matter() {
        assert_eq!(
            canon(r#"{"b":1,"a":{"y":2,"x":[1,2]}}"#),
            r#"{"a":{"x":[1,2],"y":2},"b":1}"#
        );
        assert_eq!(
            canon(r#"{"a":{"x":[1,2],"y":2},"b":1}"#),
            r#"{"a":{"x":[1,2],"y":2},"b":1}"#
        );
    }

    #[test]
    fn ints_and_floats_stay_apart() {
        let mut w = CanonicalWriter::new();
        w.open_array();
        w.i64(1);
        w.comma();
        w.f64(1.0).unwrap();
        w.comma();
        w.f64(-0.5).unwrap();
        w.comma();
        w.f64(1e300).unwrap();
        w.comma();
        w.big_int("-12345678901234567890123").unwrap();
        w.close_array();
        assert_eq!(w.as_bytes(), b"[1,1.0,-0.5,1e300,-12345678901234567890123]");
        assert!(w.big_int("12a").is_err());
    }

    #[test]
    fn equal_bytes_decode_to_equal_values() {
        // regorus reads 1.0 as 1: distinct bytes may decode alike (a harmless extra cache
        // entry), but equal bytes always decode to one value, which is what soundness needs.
        assert_eq!(decode(b"1.0").unwrap(), decode(b"1").unwrap());
    }

    #[test]
    fn strings_are_escaped_and_round_trip() {
        let mut w = CanonicalWriter::new();
        w.str("a\"b\\c\n\u{1}é");
        assert_eq!(w.as_bytes(), "\"a\\\"b\\\\c\\n\\u0001é\"".as_bytes());
        assert_eq!(
            decode(w.as_bytes()).unwrap(),
            Value::from("a\"b\\c\n\u{1}é")
        );
    }

    #[test]
    fn decode_matches_regorus_reader() {
        for text in [
            r#"{"a":[1,-2,3.5,1.0,-0.0,1e300,18446744073709551615],"b":"x\"\\\n\u0001é😀","c":{},"d":[],"e":null,"f":true,"g":false}"#,
            "[]",
            "\"\"",
            "0",
        ] {
            // Debug, not ==: "1e300" may become a float or an exact big integer, which are unequal.
            let (ours, theirs) = (
                decode(text.as_bytes()).unwrap(),
                Value::from_json_str(text).unwrap(),
            );
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "{text}");
            assert_eq!(
                to_bytes(&ours, "input").unwrap(),
                to_bytes(&theirs, "input").unwrap()
            );
        }
        // Past 64 bits regorus's reader rounds to a float; we keep the integer exact, as OPA does.
        assert_eq!(
            decode(b"12345678901234567890123").unwrap(),
            Value::from_numeric_string("12345678901234567890123").unwrap()
        );
        assert_ne!(
            decode(b"12345678901234567890123").unwrap(),
            decode(b"12345678901234567890124").unwrap()
        );
        for bad in [
            "",
            "[1,]",
            "{\"a\"}",
            "tru",
            "[1] ",
            "\"abc",
            "1e9999",
            "[1E-00001]",
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn decode_is_the_inverse() {
        let text = r#"{"method":"GET","user":{"id":"u1","roles":["a","b"]},"n":3,"f":2.5,"z":null,"t":true}"#;
        let v = Value::from_json_str(text).unwrap();
        let bytes = to_bytes(&v, "input").unwrap();
        assert_eq!(decode(&bytes).unwrap(), v);
        assert_eq!(to_bytes(&decode(&bytes).unwrap(), "input").unwrap(), bytes);
    }

    #[test]
    fn non_finite_floats_are_rejected() {
        let mut w = CanonicalWriter::new();
        assert!(matches!(w.f64(f64::NAN), Err(Error::Input { .. })));
        assert!(matches!(w.f64(f64::INFINITY), Err(Error::Input { .. })));
    }

    #[test]
    fn depth_limit_names_the_path() {
        let mut json = String::new();
        for _ in 0..=MAX_DEPTH {
            json.push_str("{\"a\":");
        }
        json.push('1');
        for _ in 0..=MAX_DEPTH {
            json.push('}');
        }
        let v = Value::from_json_str(&json).unwrap();
        match to_bytes(&v, "input") {
            Err(Error::Input { path, message }) => {
                assert!(path.starts_with("input.a.a"), "{path}");
                assert!(message.contains("64"), "{message}");
            }
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    #[test]
    fn path_segments_quote_odd_keys() {
        let e = prefix_path(
            prefix_key(prefix_index(input_error("x".into()), 2), "a b"),
            "input",
        );
        assert_eq!(e.to_string(), "input[\"a b\"][2]: x");
    }
}
