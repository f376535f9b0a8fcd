//! `net.cidr_intersects`, `net.cidr_contains_matches`, `net.cidr_merge`, with Go's `net`
//! package semantics as OPA has them (an IPv4-mapped IPv6 network is an IPv4 network; IPv4 and
//! IPv6 networks never meet).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, bail, Result};
use regorus::Value;

use super::misc::string;
use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "net.cidr_intersects",
        nargs: 2,
        f: cidr_intersects,
        nondeterministic: false,
    },
    Builtin {
        name: "net.cidr_contains_matches",
        nargs: 2,
        f: cidr_contains_matches,
        nondeterministic: false,
    },
    Builtin {
        name: "net.cidr_merge",
        nargs: 1,
        f: cidr_merge,
        nondeterministic: false,
    },
];

/// A network: family, masked address (IPv4 in the low 32 bits), prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Net {
    v6: bool,
    addr: u128,
    prefix: u8,
}

impl Net {
    fn bits(self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    fn mask(bits: u8, prefix: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            let all = if bits == 128 {
                u128::MAX
            } else {
                (1u128 << bits) - 1
            };
            all & !((1u128 << (bits - prefix)) - 1)
        }
    }

    fn new(v6: bool, addr: u128, prefix: u8) -> Self {
        let bits = if v6 { 128 } else { 32 };
        Net {
            v6,
            addr: addr & Self::mask(bits, prefix),
            prefix,
        }
    }

    fn first(self) -> u128 {
        self.addr
    }

    fn last(self) -> u128 {
        let full = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        self.addr | (full ^ Self::mask(self.bits(), self.prefix))
    }

    /// Whether `other` lies inside `self`.
    fn contains(self, other: Net) -> bool {
        self.v6 == other.v6
            && other.prefix >= self.prefix
            && other.addr & Self::mask(self.bits(), self.prefix) == self.addr
    }

    fn render(self) -> String {
        if self.v6 {
            format!("{}/{}", Ipv6Addr::from(self.addr), self.prefix)
        } else {
            format!(
                "{}/{}",
                Ipv4Addr::from(u32::try_from(self.addr).unwrap_or(0)),
                self.prefix
            )
        }
    }
}

/// An address as Go keeps it: IPv4 and IPv4-mapped IPv6 are IPv4.
fn from_ip(ip: IpAddr) -> (bool, u128, u8) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, u128::from(u32::from(v4)), 32),
            None => (true, u128::from(v6), 128),
        },
    }
}

/// `a.b.c.d/n` or `x::y/n` (Go's `net.ParseCIDR`).
fn parse_cidr(s: &str) -> Option<Net> {
    let (addr, prefix) = s.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let ip: IpAddr = addr.parse().ok()?;
    let written_bits = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > written_bits {
        return None;
    }
    let (v6, value, _) = from_ip(ip);
    // A mapped IPv6 network keeps the low 32 bits of its mask.
    let prefix = if !v6 && written_bits == 128 {
        prefix.saturating_sub(96)
    } else {
        prefix
    };
    Some(Net::new(v6, value, prefix))
}

fn cidr(name: &str, v: &Value) -> Result<Net> {
    let s = string(name, 1, v)?;
    parse_cidr(s).ok_or_else(|| anyhow!("{name}: invalid CIDR address: {s}"))
}

fn cidr_intersects(args: &[Value]) -> Result<Value> {
    let a = cidr("net.cidr_intersects", &args[0])?;
    let b = cidr("net.cidr_intersects", &args[1])?;
    Ok(Value::Bool(
        a.contains(Net::new(b.v6, b.addr, b.bits()))
            || b.contains(Net::new(a.v6, a.addr, a.bits())),
    ))
}

/// The `(key, CIDR or address)` pairs of one operand of `net.cidr_contains_matches`: a string
/// (its own key), or an array, set or object of strings or of arrays whose first element is
/// the string (keys: index, element, key).
fn keyed(name: &str, v: &Value) -> Result<Vec<(Value, String)>> {
    fn text(name: &str, v: &Value) -> Result<String> {
        match v {
            Value::String(s) => Ok(s.to_string()),
            Value::Array(a) => match a.get(0) {
                Some(Value::String(s)) => Ok(s.to_string()),
                _ => bail!("{name}: a tuple must start with a string"),
            },
            _ => bail!("{name}: elements must be strings or arrays"),
        }
    }
    Ok(match v {
        Value::String(s) => vec![(v.clone(), s.to_string())],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| Ok((Value::from(i), text(name, x)?)))
            .collect::<Result<_>>()?,
        Value::Set(items) => items
            .iter()
            .map(|x| Ok((x.clone(), text(name, x)?)))
            .collect::<Result<_>>()?,
        Value::Object(fields) => fields
            .iter()
            .map(|(k, x)| Ok((k.clone(), text(name, x)?)))
            .collect::<Result<_>>()?,
        _ => bail!("{name}: operands must be strings, arrays, sets or objects"),
    })
}

fn cidr_contains_matches(args: &[Value]) -> Result<Value> {
    let name = "net.cidr_contains_matches";
    let mut cidrs = Vec::new();
    for (k, s) in keyed(name, &args[0])? {
        cidrs.push((
            k,
            parse_cidr(&s).ok_or_else(|| anyhow!("{name}: invalid CIDR address: {s}"))?,
        ));
    }
    let mut out = BTreeSet::new();
    for (k, s) in keyed(name, &args[1])? {
        let item = if let Some(n) = parse_cidr(&s) {
            n
        } else {
            let ip: IpAddr = s.parse().map_err(|_| {
                anyhow!("{name}: not a valid textual representation of an IP address or CIDR: {s}")
            })?;
            let (v6, value, bits) = from_ip(ip);
            Net::new(v6, value, bits)
        };
        for (ck, c) in &cidrs {
            if c.contains(item) {
                out.insert(Value::from(vec![ck.clone(), k.clone()]));
            }
        }
    }
    Ok(Value::from(out))
}

/// A bare IPv4 address in `net.cidr_merge` takes its classful default mask (Go's
/// `IP.DefaultMask`), as OPA does.
fn merge_operand(s: &str) -> Result<Net> {
    if let Some(n) = parse_cidr(s) {
        return Ok(n);
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => {
            let (v6, value, _) = from_ip(ip);
            if v6 {
                bail!("net.cidr_merge: IPv6 invalid: needs prefix length");
            }
            let first = u8::try_from(value >> 24).unwrap_or(u8::MAX);
            let prefix = match first {
                0..=127 => 8,
                128..=191 => 16,
                192..=223 => 24,
                _ => bail!("net.cidr_merge: {s} has no default mask"),
            };
            Ok(Net::new(false, value, prefix))
        }
        Err(_) => bail!("net.cidr_merge: invalid CIDR address: {s}"),
    }
}

/// The fewest CIDRs covering exactly `[first, last]` of one family.
fn cover(v6: bool, mut first: u128, last: u128, out: &mut Vec<Net>) {
    let bits: u8 = if v6 { 128 } else { 32 };
    loop {
        // The largest block aligned at `first` that stays within `last`.
        let mut size_bits = if first == 0 {
            bits
        } else {
            u8::try_from(first.trailing_zeros().min(u32::from(bits))).unwrap_or(bits)
        };
        while size_bits > 0 {
            let span = if size_bits >= 128 {
                u128::MAX
            } else {
                (1u128 << size_bits) - 1
            };
            if first.checked_add(span).is_some_and(|end| end <= last) {
                break;
            }
            size_bits -= 1;
        }
        out.push(Net::new(v6, first, bits - size_bits));
        let span = if size_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << size_bits) - 1
        };
        match first.checked_add(span) {
            Some(end) if end < last => first = end + 1,
            _ => return,
        }
    }
}

fn cidr_merge(args: &[Value]) -> Result<Value> {
    let name = "net.cidr_merge";
    let items: Vec<&Value> = match &args[0] {
        Value::Array(a) => a.iter().collect(),
        Value::Set(s) => s.iter().collect(),
        _ => bail!("{name}: operand 1 must be array or set"),
    };
    let mut nets = Vec::with_capacity(items.len());
    for v in items {
        nets.push(merge_operand(string(name, 1, v)?)?);
    }
    // IPv4 first, then IPv6, each by range; overlapping or adjacent ranges join.
    let mut ranges: Vec<(bool, u128, u128)> =
        nets.iter().map(|n| (n.v6, n.first(), n.last())).collect();
    ranges.sort_unstable();
    let mut joined: Vec<(bool, u128, u128)> = Vec::new();
    for r in ranges {
        if let Some(last) = joined.last_mut() {
            if last.0 == r.0 && r.1 <= last.2.saturating_add(1) {
                last.2 = last.2.max(r.2);
                continue;
            }
        }
        joined.push(r);
    }
    let mut out = Vec::new();
    for (v6, first, last) in joined {
        cover(v6, first, last, &mut out);
    }
    Ok(Value::from(
        out.into_iter()
            .map(|n| Value::from(n.render()))
            .collect::<Vec<_>>(),
    ))
}
