//! The properties the fuzz targets check, one function per target.
//!
//! Shared by the `cargo fuzz` targets (`fuzz/fuzz_targets/*.rs`, nightly) and the stable corpus
//! run (`crates/regoguard-core/tests/fuzz_corpus.rs`, which includes this file), so a corpus or
//! regression file exercises exactly what the fuzzer did. Each function takes raw bytes and
//! panics when a property fails; "no panic" is the first property of every decoder.
//!
//! Inputs that need structure (a value, a request, a stamp) are read from the bytes with the
//! small [`Input`] reader below, so a corpus file is a plain byte string (README, "Fuzzing").

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use regoguard_core::canonical::{self, CanonicalWriter};
use regoguard_core::l2::pubsub::{wire, Message};
use regoguard_core::l2::{DecisionPolicy, RedisConfig, Stamp, L2};
use regoguard_core::request::{self, HeaderCollector, HeaderFilter};
use regoguard_core::Error;
use regorus::Value;

/// Reads structure from fuzz bytes; past the end it yields zeros and empty slices.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let head = self.take(8);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    /// A short string: a length byte (below 32), then that many bytes, read lossily as UTF-8.
    pub fn text(&mut self) -> String {
        let n = usize::from(self.byte() % 32);
        String::from_utf8_lossy(self.take(n)).into_owned()
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// `decode` on arbitrary bytes: never panics, fails only with `Error::Input`, and whatever it
/// accepts has a canonical form that decodes to the same value and is a fixed point.
pub fn canonical_decode(data: &[u8]) {
    let v = match canonical::decode(data) {
        Ok(v) => v,
        Err(Error::Input { .. }) => return,
        Err(e) => panic!("decode failed with a non-input error: {e}"),
    };
    let bytes = match canonical::to_bytes(&v, "input") {
        Ok(b) => b,
        // Accepted numbers regorus reads as infinite (1e400) have no canonical form; the
        // writer refuses them, which is the typed error the request path gives.
        Err(Error::Input { .. }) => return,
        Err(e) => panic!("to_bytes failed with a non-input error: {e}"),
    };
    let back = canonical::decode(&bytes).expect("canonical bytes decode");
    // Numbers by their canonical text (see `same`): regorus reads a non-canonical
    // `123456789012345678905.0` as a float, and the float's canonical digits as an exact integer.
    assert!(
        same(&back, &v),
        "canonical form of {:?} decodes differently: {back:?}",
        lossy(data)
    );
    assert_eq!(
        canonical::to_bytes(&back, "input").expect("canonical again"),
        bytes,
        "canonical form is not a fixed point"
    );
}

/// A value built from the bytes, written canonically: `decode(encode(v)) == v`, and the
/// bytes are a fixed point (equal values have one key, distinct values distinct keys).
pub fn canonical_round_trip(data: &[u8]) {
    let mut inp = Input::new(data);
    let v = value(&mut inp, 0);
    let bytes = canonical::to_bytes(&v, "input").expect("generated values are writable");
    let back = canonical::decode(&bytes).expect("written bytes decode");
    assert!(same(&back, &v), "round trip of {}: {back:?}", lossy(&bytes));
    assert_eq!(
        canonical::to_bytes(&back, "input").expect("rewritable"),
        bytes,
        "canonical form is not a fixed point"
    );
}

/// Equal values, numbers compared by their canonical text: regorus reads an integral float
/// past 64 bits (`1.5e300`) as the exact integer that decimal spells, as OPA's arbitrary
/// precision numbers do, and `-0.0` as `0`; everything else must come back as it was.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => {
            canonical::to_bytes(a, "a").ok() == canonical::to_bytes(b, "b").ok()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((kp, p), (kq, q))| kp == kq && same(p, q))
        }
        _ => a == b,
    }
}

/// A JSON value from the bytes: every kind the writer handles, nested a few levels.
pub fn value(inp: &mut Input<'_>, depth: usize) -> Value {
    let kinds = if depth >= 5 { 7 } else { 9 };
    match inp.byte() % kinds {
        0 => Value::Null,
        1 => Value::Bool(inp.byte() & 1 == 1),
        #[allow(clippy::cast_possible_wrap)] // any bit pattern is a fine i64
        2 => Value::from(inp.u64() as i64),
        3 => Value::from(inp.u64()),
        4 => {
            let f = f64::from_bits(inp.u64());
            Value::from(if f.is_finite() { f } else { 0.5 })
        }
        5 => Value::from(inp.text()),
        6 => {
            // An integer past 64 bits, as Python ints reach the writer.
            let mut digits = String::from(if inp.byte() & 1 == 1 { "-1" } else { "1" });
            for _ in 0..20 + inp.byte() % 30 {
                digits.push(char::from(b'0' + inp.byte() % 10));
            }
            Value::from_numeric_string(&digits).expect("digits parse")
        }
        7 => Value::from(
            (0..inp.byte() % 5)
                .map(|_| value(inp, depth + 1))
                .collect::<Vec<_>>(),
        ),
        _ => {
            let mut m = BTreeMap::new();
            for _ in 0..inp.byte() % 5 {
                m.insert(Value::from(inp.text()), value(inp, depth + 1));
            }
            Value::from(m)
        }
    }
}

/// The request document from scope parts split out of the bytes at NUL: the header filter
/// (comma-separated names), method, path, query string, raw body, then header name/value
/// pairs. The document is written as the bindings write it (`src/bindings/request.rs`),
/// decoded as a miss decodes it, and every field must be what Starlette shows the app.
pub fn request_document(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let filter_text = String::from_utf8_lossy(next()).into_owned();
    // ASCII names only: a non-ASCII `include_headers` name passes the raw bytes of its UTF-8
    // form under the configured name, which Starlette's latin-1 `Headers` can never look up
    // (found by fuzzing, fuzz/regressions/request_document/non-ascii-filter-name; reported, a
    // config check belongs to RequestSpec).
    let filter = HeaderFilter::new(filter_text.split(',').filter(|n| n.is_ascii()));
    let method = String::from_utf8_lossy(next()).into_owned();
    let path = String::from_utf8_lossy(next()).into_owned();
    let query = next();
    let raw_body = next();
    let mut headers = Vec::new();
    while let (Some(name), value) = (parts.next(), parts.next()) {
        headers.push((name, value.unwrap_or_default()));
    }

    let mut w = CanonicalWriter::new();
    w.open_object();
    let mut collector = HeaderCollector::new(&filter);
    for (name, value) in &headers {
        collector.push(name, *value);
    }
    collector.write(&mut w);
    w.comma();
    w.key("method");
    w.str(&method);
    w.comma();
    w.key("path");
    w.str(&path);
    w.comma();
    w.key("query");
    request::write_query(&mut w, query);
    w.comma();
    w.key("raw_body");
    w.open_object();
    w.key("size");
    w.u64(raw_body.len() as u64);
    w.comma();
    w.key("text");
    w.str(&String::from_utf8_lossy(raw_body));
    w.close_object();
    w.comma();
    w.key("user");
    w.null();
    w.close_object();
    let bytes = w.into_bytes();

    let decoded = canonical::decode(&bytes).expect("the request document decodes");
    assert_eq!(
        canonical::to_bytes(&decoded, "input").expect("rewritable"),
        bytes,
        "the request writer's bytes are not canonical (key order or escapes)"
    );
    let mut input = decoded;
    request::complete(&mut input);
    let field = |name: &str| input[&Value::from(name)].clone();
    assert_eq!(field("method"), Value::from(method.as_str()));
    assert_eq!(field("path"), Value::from(path.as_str()));
    let segments: Vec<Value> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(Value::from)
        .collect();
    assert_eq!(field("path_segments"), Value::from(segments));

    // Starlette: `Headers` decodes names and values as latin-1; `get` is the first value,
    // `getlist` every value in order; names match exactly (ASGI names are lower-case).
    let mut first = BTreeMap::new();
    let mut all: BTreeMap<Value, Vec<Value>> = BTreeMap::new();
    for (name, value) in &headers {
        if filter.names().any(|n| n.as_bytes() == *name) {
            let key = Value::from(latin1(name));
            first
                .entry(key.clone())
                .or_insert_with(|| Value::from(latin1(value)));
            all.entry(key).or_default().push(Value::from(latin1(value)));
        }
    }
    assert_eq!(field("headers"), Value::from(first));
    let all: BTreeMap<Value, Value> = all.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
    assert_eq!(field("header_values"), Value::from(all));

    let expected: BTreeMap<Value, Value> = parse_qsl(query)
        .into_iter()
        .map(|(k, v)| {
            (
                Value::from(k),
                Value::from(v.into_iter().map(Value::from).collect::<Vec<_>>()),
            )
        })
        .collect();
    assert_eq!(
        field("query"),
        Value::from(expected),
        "query {:?} is not what Starlette's query_params gives",
        lossy(query)
    );
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Starlette's `request.query_params`, written from Python's source as a reference model:
/// `parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)`.
pub fn parse_qsl(query: &[u8]) -> BTreeMap<String, Vec<String>> {
    let text = latin1(query);
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in text.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(unquote(&k.replace('+', " ")))
            .or_default()
            .push(unquote(&v.replace('+', " ")));
    }
    out
}

/// Python's `urllib.parse.unquote`: each run of ASCII characters is percent-decoded to bytes
/// and read as UTF-8 with replacement; other characters stay as they are.
fn unquote(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars() {
        if c.is_ascii() {
            run.push(c);
        } else {
            out.push_str(&unquote_ascii(&run));
            run.clear();
            out.push(c);
        }
    }
    out.push_str(&unquote_ascii(&run));
    out
}

/// `unquote_to_bytes(run).decode("utf-8", "replace")` for an ASCII run.
fn unquote_ascii(run: &str) -> String {
    let mut items = run.split('%');
    let mut bytes = items.next().unwrap_or_default().as_bytes().to_vec();
    for item in items {
        match item.get(..2).map(|h| u8::from_str_radix(h, 16)) {
            Some(Ok(b)) if item.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit) => {
                bytes.push(b);
                bytes.extend_from_slice(&item.as_bytes()[2..]);
            }
            _ => {
                bytes.push(b'%');
                bytes.extend_from_slice(item.as_bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

const SECRET: &[u8] = b"fuzzing-signing-key-0123456789";

fn reader(signed: bool) -> &'static Arc<L2> {
    static SIGNED: OnceLock<Arc<L2>> = OnceLock::new();
    static UNSIGNED: OnceLock<Arc<L2>> = OnceLock::new();
    let make = |key: Option<&[u8]>| {
        let config = RedisConfig::new(
            "redis://127.0.0.1:1/",
            300.0,
            0.05,
            "rg",
            key.map(<[u8]>::to_vec),
            None,
            DecisionPolicy::Auto,
        )
        .expect("config");
        L2::new(config).expect("l2")
    };
    if signed {
        SIGNED.get_or_init(|| make(Some(SECRET)))
    } else {
        UNSIGNED.get_or_init(|| make(None))
    }
}

/// The L2 entry decoder. The bytes are tried as a stored entry (whatever verifies re-seals to
/// exactly those bytes: the format has one encoding), then read as a stamp, payload, key and
/// revision that are sealed, verified back, and tampered with: a signed entry with any byte
/// changed, cut short, extended, or read under another key or revision is refused.
pub fn l2_entry(data: &[u8]) {
    let (key, revision) = ("rg:d:00ff", "rev-1");
    for signed in [true, false] {
        let l2 = reader(signed);
        if let Ok(e) = l2.verify(key, revision, data) {
            assert_eq!(
                l2.seal(key, revision, &e.stamp, e.payload),
                data,
                "an entry verified that is not what seal writes (signed: {signed})"
            );
        }
    }

    let mut inp = Input::new(data);
    let flip_at = inp.u64();
    let mask = inp.byte().max(1);
    let key = format!("rg:d:{}", inp.text());
    let revision = inp.text();
    let stamp = Stamp {
        expires_ms: inp.u64(),
        space_epoch: inp.u64(),
        key_epoch: inp.u64(),
        tags: (0..inp.byte() % 4)
            .map(|_| (inp.text(), inp.u64()))
            .collect(),
    };
    let payload = inp.rest();
    for signed in [true, false] {
        let l2 = reader(signed);
        let entry = l2.seal(&key, &revision, &stamp, payload);
        let e = l2
            .verify(&key, &revision, &entry)
            .expect("a sealed entry verifies");
        assert_eq!((e.payload, &e.stamp), (payload, &stamp));
        let other_revision = format!("{revision}x");
        assert!(
            l2.verify(&key, &other_revision, &entry).is_err(),
            "accepted under another revision"
        );
        assert!(
            reader(!signed).verify(&key, &revision, &entry).is_err(),
            "accepted by a reader of the other kind (signed: {signed})"
        );
        if !signed {
            continue;
        }
        assert!(
            l2.verify(&format!("{key}x"), &revision, &entry).is_err(),
            "accepted under another key"
        );
        #[allow(clippy::cast_possible_truncation)] // reduced modulo the length first
        let at = (flip_at % entry.len() as u64) as usize;
        let mut tampered = entry.clone();
        tampered[at] ^= mask;
        assert!(
            l2.verify(&key, &revision, &tampered).is_err(),
            "accepted with byte {at} changed"
        );
        assert!(
            l2.verify(&key, &revision, &entry[..at]).is_err(),
            "accepted cut at {at}"
        );
        let mut longer = entry.clone();
        longer.insert(at, mask);
        assert!(
            l2.verify(&key, &revision, &longer).is_err(),
            "accepted with a byte inserted at {at}"
        );
    }
}

/// The pub/sub message decoder. The bytes are tried as a received message (with a signing
/// key, whatever verifies must be exactly `<sign(json)> <json>`: no second spelling of a
/// tag), then read as a message that is encoded, decoded back and tampered with: a signed
/// message with any byte changed, removed or inserted is refused.
pub fn pubsub_message(data: &[u8]) {
    if let Some(found) = wire::decode(reader(true), data) {
        let text = std::str::from_utf8(data).expect("accepted as text");
        let (_, json) = text.split_once(' ').expect("tag and body");
        assert_eq!(
            format!("{} {json}", wire::sign(reader(true), json)),
            text,
            "a signed message verified in another spelling: {found:?}"
        );
    }
    if wire::decode(reader(false), data).is_some() {
        assert!(
            data.starts_with(b"- "),
            "an unsigned message needs the tag -"
        );
    }

    let mut inp = Input::new(data);
    let flip_at = inp.u64();
    let mask = inp.byte().max(1);
    let from = inp.text();
    let scope = inp.text();
    let ts = inp.u64();
    let message = match inp.byte() % 5 {
        0 => Message::Reload,
        1 => Message::SetData {
            path: (0..inp.byte() % 4).map(|_| inp.text()).collect(),
            value: inp.text(),
        },
        2 => Message::InvalidateTags((0..inp.byte() % 4).map(|_| inp.text()).collect()),
        3 => Message::InvalidateAll,
        _ => {
            let mut k = [0u8; 32];
            let head = inp.take(32);
            k[..head.len()].copy_from_slice(head);
            Message::InvalidateKey(k)
        }
    };
    for signed in [true, false] {
        let l2 = reader(signed);
        let wire_form = wire::encode(l2, &from, &scope, &message, ts);
        let (f, s, _, _, t, m) = wire::decode(l2, wire_form.as_bytes()).expect("round trip");
        assert_eq!((f, s, t, &m), (from.clone(), scope.clone(), ts, &message));
        assert!(
            wire::decode(reader(!signed), wire_form.as_bytes()).is_none(),
            "accepted by a reader of the other kind (signed: {signed})"
        );
        if !signed {
            continue;
        }
        let bytes = wire_form.as_bytes();
        #[allow(clippy::cast_possible_truncation)] // reduced modulo the length first
        let at = (flip_at % bytes.len() as u64) as usize;
        let mut tampered = bytes.to_vec();
        tampered[at] ^= mask;
        assert!(
            wire::decode(l2, &tampered).is_none(),
            "accepted with byte {at} changed: {}",
            lossy(&tampered)
        );
        let mut shorter = bytes.to_vec();
        shorter.remove(at);
        assert!(
            wire::decode(l2, &shorter).is_none(),
            "accepted with byte {at} removed"
        );
        let mut longer = bytes.to_vec();
        longer.insert(at, mask);
        assert!(
            wire::decode(l2, &longer).is_none(),
            "accepted with a byte inserted at {at}: {}",
            lossy(&longer)
        );
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every target by name: the fuzz targets and the corpus run dispatch through it.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("canonical_decode", canonical_decode),
    ("canonical_round_trip", canonical_round_trip),
    ("request_document", request_document),
    ("l2_entry", l2_entry),
    ("pubsub_message", pubsub_message),
];
