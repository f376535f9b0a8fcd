//! `uri.parse` and `uri.is_valid` (OPA v1): Go's `net/url.Parse`, ported for what these two
//! builtins show of it (scheme, host, port, path, query, fragment, and Go's errors: a missing
//! scheme before `:`, a colon in the first segment of a relative path, a bad port, a bad
//! percent-escape, a control character). The WHATWG `url` crate differs from Go on exactly
//! these leniencies, so it is not used here.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use regorus::Value;

use super::misc::string;
use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[
    Builtin::pure("uri.parse", 1, parse_builtin),
    Builtin::pure("uri.is_valid", 1, is_valid_builtin),
];

/// The parts of a parsed URL OPA reports.
#[derive(Debug, Default, PartialEq, Eq)]
struct Url {
    scheme: String,
    host: String,
    path: String,
    raw_path: String,
    raw_query: String,
    fragment: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Fragment,
}

/// Go's `shouldEscape`, for the modes used here.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if mode == Mode::Host && b"!$&'()*+,;=:[]<>\"".contains(&c) {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => c == b'?',
            Mode::Fragment | Mode::Host => false,
        },
        _ => {
            if mode == Mode::Fragment {
                !b"!()*".contains(&c)
            } else {
                true
            }
        }
    }
}

fn unhex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Go's `unescape`.
fn unescape(s: &str, mode: Mode) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(unhex);
                let lo = b.get(i + 2).copied().and_then(unhex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    let end = (i + 3).min(b.len());
                    bail!(
                        "invalid URL escape {:?}",
                        String::from_utf8_lossy(&b[i..end])
                    );
                };
                out.push(hi << 4 | lo);
                i += 3;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && should_escape(c, mode) {
                    bail!("invalid character {:?} in host name", char::from(c));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `escape` in path mode.
fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if should_escape(c, Mode::Path) {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(char::from(c));
        }
    }
    out
}

fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|d| d.bytes().all(|c| c.is_ascii_digit()))
}

/// Go's `parseHost`.
fn parse_host(host: &str) -> Result<String> {
    if host.starts_with('[') {
        let Some(end) = host.rfind(']') else {
            bail!("missing ']' in host");
        };
        let colon_port = &host[end + 1..];
        if !valid_optional_port(colon_port) {
            bail!("invalid port {colon_port:?} after host");
        }
        return unescape(host, Mode::Host);
    }
    if let Some(i) = host.rfind(':') {
        let colon_port = &host[i..];
        if !valid_optional_port(colon_port) {
            bail!("invalid port {colon_port:?} after host");
        }
    }
    unescape(host, Mode::Host)
}

fn valid_userinfo(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c) || !c.is_ascii())
}

/// Go's `url.Parse` (not in request mode).
fn parse(raw: &str) -> Result<Url> {
    if raw.bytes().any(|c| c < 0x20 || c == 0x7f) {
        bail!("net/url: invalid control character in URL");
    }
    let (rest, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    let mut u = Url {
        fragment: unescape(fragment, Mode::Fragment)?,
        ..Url::default()
    };
    if rest.is_empty() {
        return Ok(u);
    }
    if rest == "*" {
        rest.clone_into(&mut u.path);
        rest.clone_into(&mut u.raw_path);
        return Ok(u);
    }
    // The scheme: letters, then letters, digits, `+`, `-`, `.` up to a `:`.
    let mut rest = rest;
    for (i, c) in rest.char_indices() {
        if c.is_ascii_alphabetic() {
            continue;
        }
        if c.is_ascii_digit() || c == '+' || c == '-' || c == '.' {
            if i == 0 {
                break;
            }
            continue;
        }
        if c == ':' {
            if i == 0 {
                bail!("missing protocol scheme");
            }
            u.scheme = rest[..i].to_ascii_lowercase();
            rest = &rest[i + 1..];
        }
        break;
    }
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        rest = &rest[..rest.len() - 1];
    } else if let Some((r, q)) = rest.split_once('?') {
        q.clone_into(&mut u.raw_query);
        rest = r;
    }
    if !rest.starts_with('/') {
        if !u.scheme.is_empty() {
            // An opaque URL (`mailto:a@b.c`): OPA reports only its scheme.
            return Ok(u);
        }
        let first = rest.split('/').next().unwrap_or("");
        if first.contains(':') {
            bail!("first path segment in URL cannot contain colon");
        }
    }
    if (!u.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let after = &rest[2..];
        let end = after.find('/').unwrap_or(after.len());
        let authority = &after[..end];
        rest = &after[end..];
        let host = match authority.rfind('@') {
            Some(i) => {
                if !valid_userinfo(&authority[..i]) {
                    bail!("net/url: invalid userinfo");
                }
                &authority[i + 1..]
            }
            None => authority,
        };
        u.host = parse_host(host)?;
    }
    u.path = unescape(rest, Mode::Path)?;
    u.raw_path = if escape_path(&u.path) == rest {
        u.path.clone()
    } else {
        rest.to_owned()
    };
    Ok(u)
}

/// Go's `URL.Hostname()` and `URL.Port()`.
fn host_and_port(host: &str) -> (&str, &str) {
    let (h, port) = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], &host[i + 1..]),
        _ => (host, ""),
    };
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    (h, port)
}

fn parse_builtin(args: &[Value]) -> Result<Value> {
    let s = string("uri.parse", 1, &args[0])?;
    let u = match parse(s) {
        Ok(u) => u,
        Err(e) => bail!("uri.parse: parse {s:?}: {e}"),
    };
    let (hostname, port) = host_and_port(&u.host);
    let mut out = BTreeMap::new();
    for (k, v) in [
        ("scheme", u.scheme.as_str()),
        ("hostname", hostname),
        ("port", port),
        ("path", u.path.as_str()),
        ("raw_path", u.raw_path.as_str()),
        ("raw_query", u.raw_query.as_str()),
        ("fragment", u.fragment.as_str()),
    ] {
        if !v.is_empty() {
            out.insert(Value::from(k), Value::from(v));
        }
    }
    Ok(Value::from(out))
}

/// `uri.is_valid(x)`: false for a non-string, an empty string or what `uri.parse` refuses.
#[allow(clippy::unnecessary_wraps)] // the builtin signature
fn is_valid_builtin(args: &[Value]) -> Result<Value> {
    Ok(Value::from(match &args[0] {
        Value::String(s) => !s.is_empty() && parse(s).is_ok(),
        _ => false,
    }))
}
