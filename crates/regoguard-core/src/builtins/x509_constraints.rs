//! What Go's `Certificate.Verify` checks of a candidate chain beyond signatures, validity and
//! key usage, so that `crypto.x509.parse_and_verify_certificates*` agree with OPA (Go 1.26,
//! ARCHITECTURE.md, "Semantics are OPA's"):
//!
//! - **name constraints** (`constraints.go`): each certificate's subject alternative names are
//!   checked against the permitted and excluded subtrees (DNS, email, IP, URI) of every
//!   certificate above it in the chain, with Go's matching rules: DNS constraints match the
//!   name and its subdomains (`.example.com` only subdomains), and so do URI hosts and email
//!   domains (a full mailbox constraint matches exactly), IP networks contain addresses. Go parses the extension strictly when it reads the certificate; what it
//!   refuses there ([`parse_name_constraints`]'s errors) makes the whole input unparseable.
//! - **certificate policies** (`policiesValid`, RFC 5280 section 6.1 as updated by RFC 9618):
//!   OPA passes no policy set, so Go accepts any policy, and a chain fails only where the
//!   policy constraints demand an explicit policy that the chain does not carry, or a
//!   mapping names `anyPolicy`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::{bail, Result};

use super::jwt::der_tlv;

// ---------------------------------------------------------------------------------------
// The extension, as Go's parseNameConstraintsExtension reads it.

/// One side (permitted or excluded) of a name-constraints extension, in Go's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Subtrees {
    pub dns: Vec<String>,
    /// (network address, mask), 4 + 4 or 16 + 16 bytes, as encoded.
    pub ips: Vec<(Vec<u8>, Vec<u8>)>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

/// A parsed name-constraints extension.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct NameConstraints {
    pub permitted: Subtrees,
    pub excluded: Subtrees,
    /// A subtree of a kind Go does not handle (directory names, ...): a critical extension
    /// with one is an unhandled critical extension.
    pub unhandled: bool,
}

/// Go's `isIA5String`: ASCII only.
fn ia5(b: &[u8]) -> Result<String> {
    if !b.is_ascii() {
        bail!("x509: invalid constraint value");
    }
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// Go's `domainNameValid` (Go 1.26: no empty labels, printable ASCII, no trailing dot; a
/// constraint may start with a dot; the empty string is valid).
pub(super) fn domain_name_valid(s: &str, constraint: bool) -> bool {
    if s.is_empty() {
        return true;
    }
    if s.ends_with('.') {
        return false;
    }
    let s = if constraint {
        s.strip_prefix('.').unwrap_or(s)
    } else {
        s
    };
    s.bytes().all(|b| (33..=126).contains(&b)) && s.split('.').all(|label| !label.is_empty())
}

/// Go's `isValidIPMask`: ones, then zeros.
fn valid_ip_mask(mask: &[u8]) -> bool {
    let mut seen_zero = false;
    for &b in mask {
        if seen_zero {
            if b != 0 {
                return false;
            }
            continue;
        }
        match b {
            0x00 | 0x80 | 0xc0 | 0xe0 | 0xf0 | 0xf8 | 0xfc | 0xfe => seen_zero = true,
            0xff => {}
            _ => return false,
        }
    }
    true
}

/// Whether `s` is an IP address as Go's `net.ParseIP` reads one (dotted quad or IPv6).
fn parses_as_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn subtrees(mut der: &[u8]) -> Result<(Subtrees, bool)> {
    let mut out = Subtrees::default();
    let mut unhandled = false;
    while !der.is_empty() {
        let Some((0x30, seq, rest)) = der_tlv(der) else {
            bail!("x509: invalid NameConstraints extension");
        };
        der = rest;
        let Some((tag, value, _)) = der_tlv(seq) else {
            bail!("x509: invalid NameConstraints extension");
        };
        match tag {
            0x82 => {
                let domain = ia5(value)?;
                if !domain_name_valid(&domain, true) {
                    bail!("x509: failed to parse dnsName constraint {domain:?}");
                }
                out.dns.push(domain);
            }
            0x87 => {
                let (ip, mask) = match value.len() {
                    8 | 32 => value.split_at(value.len() / 2),
                    n => bail!("x509: IP constraint contained value of length {n}"),
                };
                if !valid_ip_mask(mask) {
                    bail!("x509: IP constraint contained invalid mask");
                }
                out.ips.push((ip.to_vec(), mask.to_vec()));
            }
            0x81 => {
                let constraint = ia5(value)?;
                let ok = if constraint.contains('@') {
                    parse_mailbox(&constraint).is_some()
                } else {
                    domain_name_valid(&constraint, true)
                };
                if !ok {
                    bail!("x509: failed to parse rfc822Name constraint {constraint:?}");
                }
                out.emails.push(constraint);
            }
            0x86 => {
                let domain = ia5(value)?;
                if parses_as_ip(&domain) {
                    bail!("x509: failed to parse URI constraint {domain:?}: cannot be IP address");
                }
                if !domain_name_valid(&domain, true) {
                    bail!("x509: failed to parse URI constraint {domain:?}");
                }
                out.uris.push(domain);
            }
            _ => unhandled = true,
        }
    }
    Ok((out, unhandled))
}

/// Go's `parseNameConstraintsExtension` of an extension value.
pub(super) fn parse_name_constraints(value: &[u8]) -> Result<NameConstraints> {
    let invalid = || anyhow::anyhow!("x509: invalid NameConstraints extension");
    let (0x30, mut top, rest) = der_tlv(value).ok_or_else(invalid)? else {
        return Err(invalid());
    };
    if !rest.is_empty() {
        return Err(invalid());
    }
    let mut read_optional = |tag: u8| -> Result<Option<&[u8]>> {
        match der_tlv(top) {
            Some((t, body, rest)) if t == tag => {
                top = rest;
                Ok(Some(body))
            }
            Some(_) => Ok(None),
            None if top.is_empty() => Ok(None),
            None => Err(invalid()),
        }
    };
    let permitted = read_optional(0xa0)?;
    let excluded = read_optional(0xa1)?;
    if !top.is_empty() {
        return Err(invalid());
    }
    if permitted.is_none_or(<[u8]>::is_empty) && excluded.is_none_or(<[u8]>::is_empty) {
        bail!("x509: empty name constraints extension");
    }
    let (permitted, u1) = subtrees(permitted.unwrap_or_default())?;
    let (excluded, u2) = subtrees(excluded.unwrap_or_default())?;
    Ok(NameConstraints {
        permitted,
        excluded,
        unhandled: u1 || u2,
    })
}

// ---------------------------------------------------------------------------------------
// Mailboxes (Go's parseRFC2821Mailbox).

/// An email address split into its local part (unquoted) and domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Mailbox {
    local: String,
    domain: String,
}

/// Go's `domainToReverseLabels` succeeds.
fn reverse_labels_ok(domain: &str) -> bool {
    if domain.is_empty() {
        return true;
    }
    domain
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| (33..=126).contains(&b)))
        // Go decodes runes: any non-ASCII byte is out of range too.
        && domain.is_ascii()
}

pub(super) fn parse_mailbox(input: &str) -> Option<Mailbox> {
    let b = input.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut local: Vec<u8> = Vec::with_capacity(b.len() / 2);
    let mut i = 0;
    if b.first() == Some(&b'"') {
        i = 1;
        loop {
            let &c = b.get(i)?;
            i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let &n = b.get(i)?;
                    if n == 11 || n == 12 || (1..=9).contains(&n) || (14..=127).contains(&n) {
                        local.push(n);
                        i += 1;
                    } else {
                        return None;
                    }
                }
                11 | 12 | 32 | 33 | 127 | 1..=8 | 14..=31 | 35..=91 | 93..=126 => local.push(c),
                _ => return None,
            }
        }
    } else {
        while let Some(&c) = b.get(i) {
            let c = if c == b'\\' {
                i += 1;
                *b.get(i)?
            } else if c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c) {
                c
            } else {
                break;
            };
            local.push(c);
            i += 1;
        }
        if local.is_empty()
            || local.first() == Some(&b'.')
            || local.last() == Some(&b'.')
            || local.windows(2).any(|w| w == b"..")
        {
            return None;
        }
    }
    if b.get(i) != Some(&b'@') {
        return None;
    }
    let domain = input.get(i + 1..)?;
    if !reverse_labels_ok(domain) {
        return None;
    }
    Some(Mailbox {
        local: String::from_utf8_lossy(&local).into_owned(),
        domain: domain.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// Constraint sets (Go's nameConstraintsSet: sorted, pruned, binary-searched).

/// Go's `dnsCompareTable`: ASCII lowercased, `.` below everything.
fn dns_key(b: u8) -> u8 {
    if b == b'.' {
        0
    } else {
        b.to_ascii_lowercase()
    }
}

/// Go's `dnsCompare`: compared from the end, case-insensitively.
fn dns_compare(a: &str, b: &str) -> std::cmp::Ordering {
    let ka = a.bytes().rev().map(dns_key);
    let kb = b.bytes().rev().map(dns_key);
    ka.cmp(kb)
}

/// Go's `dnsHasSuffix(a, b)`: constraint `a` is a label suffix of `b` (a leading dot in `a`
/// only matches proper subdomains).
fn dns_has_suffix(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > b.len() {
        return false;
    }
    let tail = &b[b.len() - a.len()..];
    if !a.eq_ignore_ascii_case(tail) {
        return false;
    }
    !(a.first() != Some(&b'.') && b.len() > a.len() && b[b.len() - a.len() - 1] != b'.')
}

/// Go's `sortAndPrune`.
fn sort_and_prune<T: Clone>(
    mut set: Vec<T>,
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
    subset: impl Fn(&T, &T) -> bool,
) -> Vec<T> {
    if set.len() < 2 {
        return set;
    }
    set.sort_by(&cmp);
    let mut out: Vec<T> = Vec::with_capacity(set.len());
    for item in set {
        match out.last() {
            Some(prev) if subset(prev, &item) => {}
            _ => out.push(item),
        }
    }
    out
}

/// Go's `nameConstraintsSet.search`: the lower bound, or the element before it, if it
/// matches.
fn search<T, V: ?Sized>(
    set: &[T],
    target: &V,
    cmp: impl Fn(&T, &V) -> std::cmp::Ordering,
    matches: impl Fn(&T, &V) -> bool,
) -> bool {
    if set.is_empty() {
        return false;
    }
    let i = set.partition_point(|c| cmp(c, target) == std::cmp::Ordering::Less);
    if set.get(i).is_some_and(|c| cmp(c, target).is_eq()) {
        return true;
    }
    let candidate = if i == 0 { set.first() } else { set.get(i - 1) };
    candidate.is_some_and(|c| matches(c, target))
}

struct DnsConstraints {
    all: bool,
    permitted: bool,
    set: Vec<String>,
    parents: HashMap<String, String>,
}

impl DnsConstraints {
    fn new(l: &[String], permitted: bool) -> Option<Self> {
        if l.is_empty() {
            return None;
        }
        if l.iter().any(String::is_empty) {
            return Some(DnsConstraints {
                all: true,
                permitted,
                set: Vec::new(),
                parents: HashMap::new(),
            });
        }
        let set = sort_and_prune(
            l.to_vec(),
            |a, b| dns_compare(a, b),
            |a, b| dns_has_suffix(a, b),
        );
        let mut parents = HashMap::new();
        if !permitted {
            for name in &set {
                let name = name.to_ascii_lowercase();
                let trimmed = trim_first_label(&name);
                if !trimmed.is_empty() {
                    parents.insert(trimmed.to_owned(), name.clone());
                }
            }
        }
        Some(DnsConstraints {
            all: false,
            permitted,
            set,
            parents,
        })
    }

    fn query(&self, s: &str) -> bool {
        if self.all {
            return true;
        }
        if search(
            &self.set,
            s,
            |c, t| dns_compare(c, t),
            |c, t| dns_has_suffix(c, t),
        ) {
            return true;
        }
        if !self.permitted && s.starts_with('*') {
            let lowered = s.to_ascii_lowercase();
            return self.parents.contains_key(trim_first_label(&lowered));
        }
        false
    }
}

fn trim_first_label(name: &str) -> &str {
    name.find('.').map_or("", |i| &name[i..])
}

/// Full mailboxes (domain lowercased) match exactly; domains as DNS constraints do.
struct EmailConstraints {
    domains: Option<DnsConstraints>,
    full: HashSet<Mailbox>,
}

impl EmailConstraints {
    fn new(l: &[String], permitted: bool) -> Option<Self> {
        if l.is_empty() {
            return None;
        }
        let mut full = HashSet::new();
        let mut domains = Vec::new();
        for c in l {
            if !c.contains('@') {
                domains.push(c.clone());
                continue;
            }
            if let Some(mut m) = parse_mailbox(c) {
                m.domain = m.domain.to_ascii_lowercase();
                full.insert(m);
            }
        }
        Some(EmailConstraints {
            domains: DnsConstraints::new(&domains, permitted),
            full,
        })
    }

    fn query(&self, m: &Mailbox) -> bool {
        self.full.contains(m) || self.domains.as_ref().is_some_and(|h| h.query(&m.domain))
    }
}

type Net = (Vec<u8>, Vec<u8>);

/// Go's `net.IP.To4`.
fn to4(ip: &[u8]) -> Option<&[u8]> {
    match ip.len() {
        4 => Some(ip),
        16 if ip[..10].iter().all(|&b| b == 0) && ip[10] == 0xff && ip[11] == 0xff => {
            Some(&ip[12..])
        }
        _ => None,
    }
}

/// Go's `net.IPNet.Contains`.
fn net_contains((ip, mask): &Net, target: &[u8]) -> bool {
    let nn: &[u8] = match to4(ip) {
        Some(v4) => v4,
        None if ip.len() == 16 => ip,
        None => return false,
    };
    let m: &[u8] = match (mask.len(), nn.len()) {
        (4, 4) | (16, 16) => mask,
        (16, 4) => &mask[12..],
        _ => return false,
    };
    let t = to4(target).unwrap_or(target);
    if t.len() != nn.len() {
        return false;
    }
    nn.iter()
        .zip(m)
        .zip(t)
        .all(|((&n, &mk), &x)| n & mk == x & mk)
}

fn net_subset(a: &Net, b: &Net) -> bool {
    if !net_contains(a, &b.0) {
        return false;
    }
    let broadcast: Vec<u8> =
        b.0.iter()
            .zip(b.1.iter().chain(std::iter::repeat(&0)))
            .map(|(&i, &m)| i | !m)
            .collect();
    net_contains(a, &broadcast)
}

struct IpConstraints {
    v4: Option<Vec<Net>>,
    v6: Option<Vec<Net>>,
}

impl IpConstraints {
    fn new(l: &[Net]) -> Option<Self> {
        if l.is_empty() {
            return None;
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (ip, mask) in l {
            // The masked network address (a subtree may carry host bits).
            let masked: Vec<u8> = ip.iter().zip(mask).map(|(&a, &m)| a & m).collect();
            if ip.len() == 4 {
                v4.push((masked, mask.clone()));
            } else {
                v6.push((masked, mask.clone()));
            }
        }
        let prune = |set: Vec<Net>| {
            (!set.is_empty()).then(|| {
                sort_and_prune(
                    set,
                    |a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)),
                    net_subset,
                )
            })
        };
        Some(IpConstraints {
            v4: prune(v4),
            v6: prune(v6),
        })
    }

    fn query(&self, ip: &[u8]) -> bool {
        let set = if ip.len() == 4 { &self.v4 } else { &self.v6 };
        set.as_ref().is_some_and(|s| {
            search(
                s,
                ip,
                |c: &Net, t: &[u8]| c.0.as_slice().cmp(t),
                net_contains,
            )
        })
    }
}

/// The compiled constraints of one certificate.
struct ChainConstraints {
    ip: (Option<IpConstraints>, Option<IpConstraints>),
    dns: (Option<DnsConstraints>, Option<DnsConstraints>),
    uri: (Option<DnsConstraints>, Option<DnsConstraints>),
    email: (Option<EmailConstraints>, Option<EmailConstraints>),
    index: usize,
}

/// Go's `checkConstraints`: permitted by one (when any), excluded by none.
fn allowed(permitted: Option<bool>, excluded: Option<bool>) -> bool {
    permitted != Some(false) && excluded != Some(true)
}

impl ChainConstraints {
    fn new(nc: &NameConstraints, index: usize) -> Self {
        let (p, e) = (&nc.permitted, &nc.excluded);
        ChainConstraints {
            ip: (IpConstraints::new(&p.ips), IpConstraints::new(&e.ips)),
            dns: (
                DnsConstraints::new(&p.dns, true),
                DnsConstraints::new(&e.dns, false),
            ),
            uri: (
                DnsConstraints::new(&p.uris, true),
                DnsConstraints::new(&e.uris, false),
            ),
            email: (
                EmailConstraints::new(&p.emails, true),
                EmailConstraints::new(&e.emails, false),
            ),
            index,
        }
    }

    fn check(&self, names: &SanNames<'_>, uris: &[String], emails: &[Mailbox]) -> bool {
        for ip in names.ips {
            let q = |c: &Option<IpConstraints>| c.as_ref().map(|c| c.query(ip));
            if !allowed(q(&self.ip.0), q(&self.ip.1)) {
                return false;
            }
        }
        for d in names.dns {
            if !domain_name_valid(d, false) {
                return false;
            }
            let q = |c: &Option<DnsConstraints>| c.as_ref().map(|c| c.query(d));
            if !allowed(q(&self.dns.0), q(&self.dns.1)) {
                return false;
            }
        }
        for u in uris {
            if !domain_name_valid(u, false) {
                return false;
            }
            let q = |c: &Option<DnsConstraints>| c.as_ref().map(|c| c.query(u));
            if !allowed(q(&self.uri.0), q(&self.uri.1)) {
                return false;
            }
        }
        for m in emails {
            if !domain_name_valid(&m.domain, false) {
                return false;
            }
            let q = |c: &Option<EmailConstraints>| c.as_ref().map(|c| c.query(m));
            if !allowed(q(&self.email.0), q(&self.email.1)) {
                return false;
            }
        }
        true
    }
}

/// A certificate's subject alternative names, as Go's fields hold them.
pub(super) struct SanNames<'a> {
    /// The certificate has a SAN extension (Go's `hasSANExtension`).
    pub present: bool,
    pub dns: &'a [String],
    pub emails: &'a [String],
    pub ips: &'a [Vec<u8>],
    /// Each URI's host (Go's `url.URL.Host`).
    pub uri_hosts: Vec<String>,
}

/// Go's `parseURIs`: each host lowercased and without its port; `None` when one cannot be
/// matched against constraints (empty, an IP address).
fn uri_domains(hosts: &[String]) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(hosts.len());
    for raw in hosts {
        if raw.is_empty() {
            return None;
        }
        let mut host = raw.to_ascii_lowercase();
        if host.contains(':') && !host.ends_with(']') {
            // Go's net.SplitHostPort of the original host: `name:port` or `[name]:port`.
            let (h, _) = raw.rsplit_once(':')?;
            let h = match h.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                Some(inner) => inner,
                None if h.contains([':', '[', ']']) => return None,
                None => h,
            };
            h.clone_into(&mut host);
        }
        if parses_as_ip(&host) || (host.starts_with('[') && host.ends_with(']')) {
            return None;
        }
        out.push(host);
    }
    Some(out)
}

/// Go's `checkChainConstraints` over a chain, leaf first: `constraints[i]` is certificate
/// i's name constraints, `names[i]` its SANs. Names are checked against the constraints of
/// every certificate above them.
pub(super) fn chain_names_allowed(
    constraints: &[Option<&NameConstraints>],
    names: &[SanNames<'_>],
) -> bool {
    let compiled: Vec<ChainConstraints> = constraints
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| ChainConstraints::new(c, i)))
        .collect();
    if compiled.is_empty() {
        return true;
    }
    let mut current = 0usize;
    for (i, n) in names.iter().enumerate() {
        if !n.present {
            continue;
        }
        while compiled.get(current).is_some_and(|c| c.index <= i) {
            if current + 1 >= compiled.len() {
                return true;
            }
            current += 1;
        }
        let Some(uris) = uri_domains(&n.uri_hosts) else {
            return false;
        };
        let mut emails = Vec::with_capacity(n.emails.len());
        for e in n.emails {
            let Some(mut m) = parse_mailbox(e) else {
                return false;
            };
            m.domain = m.domain.to_ascii_lowercase();
            emails.push(m);
        }
        if !compiled
            .get(current..)
            .unwrap_or_default()
            .iter()
            .all(|c| c.check(n, &uris, &emails))
        {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Certificate policies (Go's policiesValid with no user policy set).

/// What the policy check reads of a certificate (OIDs as their DER content bytes).
#[derive(Clone, Debug, Default)]
pub(super) struct PolicyInfo {
    pub policies: Vec<Vec<u8>>,
    /// (issuer domain policy, subject domain policy).
    pub mappings: Vec<(Vec<u8>, Vec<u8>)>,
    pub require_explicit_policy: Option<i64>,
    pub inhibit_policy_mapping: Option<i64>,
    pub inhibit_any_policy: Option<i64>,
    /// Issuer and subject are the same name.
    pub self_issued: bool,
}

/// 2.5.29.32.0
const ANY_POLICY: &[u8] = &[0x55, 0x1d, 0x20, 0x00];

struct PNode {
    valid: Vec<u8>,
    expected: Vec<Vec<u8>>,
    parents: BTreeSet<usize>,
    children: BTreeSet<usize>,
}

/// Go's `policyGraph`, nodes in an arena.
struct PolicyGraph {
    nodes: Vec<PNode>,
    strata: Vec<BTreeMap<Vec<u8>, usize>>,
    parent_index: HashMap<Vec<u8>, Vec<usize>>,
    depth: usize,
}

impl PolicyGraph {
    fn new() -> Self {
        PolicyGraph {
            nodes: vec![PNode {
                valid: ANY_POLICY.to_vec(),
                expected: vec![ANY_POLICY.to_vec()],
                parents: BTreeSet::new(),
                children: BTreeSet::new(),
            }],
            strata: vec![BTreeMap::from([(ANY_POLICY.to_vec(), 0)])],
            parent_index: HashMap::new(),
            depth: 0,
        }
    }

    fn new_node(&mut self, valid: Vec<u8>, parents: &[usize]) -> usize {
        let id = self.nodes.len();
        self.nodes.push(PNode {
            expected: vec![valid.clone()],
            valid,
            parents: parents.iter().copied().collect(),
            children: BTreeSet::new(),
        });
        for &p in parents {
            if let Some(n) = self.nodes.get_mut(p) {
                n.children.insert(id);
            }
        }
        id
    }

    fn insert(&mut self, id: usize) {
        let key = self
            .nodes
            .get(id)
            .map(|n| n.valid.clone())
            .unwrap_or_default();
        if let Some(s) = self.strata.get_mut(self.depth) {
            s.insert(key, id);
        }
    }

    fn parents_with_expected(&self, expected: &[u8]) -> Vec<usize> {
        if self.depth == 0 {
            return Vec::new();
        }
        self.parent_index.get(expected).cloned().unwrap_or_default()
    }

    fn stratum(&self, d: usize) -> Option<&BTreeMap<Vec<u8>, usize>> {
        self.strata.get(d)
    }

    fn parent_with_any_policy(&self) -> Option<usize> {
        if self.depth == 0 {
            return None;
        }
        self.stratum(self.depth - 1)?.get(ANY_POLICY).copied()
    }

    fn leaf_with_policy(&self, policy: &[u8]) -> Option<usize> {
        self.stratum(self.depth)?.get(policy).copied()
    }

    fn delete_leaf(&mut self, policy: &[u8]) {
        let Some(id) = self.leaf_with_policy(policy) else {
            return;
        };
        let (parents, children) = match self.nodes.get(id) {
            Some(n) => (n.parents.clone(), n.children.clone()),
            None => return,
        };
        for p in parents {
            if let Some(n) = self.nodes.get_mut(p) {
                n.children.remove(&id);
            }
        }
        for c in children {
            if let Some(n) = self.nodes.get_mut(c) {
                n.parents.remove(&id);
            }
        }
        if let Some(s) = self.strata.get_mut(self.depth) {
            s.remove(policy);
        }
    }

    fn prune(&mut self) {
        for i in (1..self.depth).rev() {
            let childless: Vec<(Vec<u8>, usize)> = self
                .stratum(i)
                .map(|s| {
                    s.iter()
                        .filter(|(_, &id)| {
                            self.nodes.get(id).is_some_and(|n| n.children.is_empty())
                        })
                        .map(|(k, &id)| (k.clone(), id))
                        .collect()
                })
                .unwrap_or_default();
            for (key, id) in childless {
                let parents = self
                    .nodes
                    .get(id)
                    .map(|n| n.parents.clone())
                    .unwrap_or_default();
                for p in parents {
                    if let Some(n) = self.nodes.get_mut(p) {
                        n.children.remove(&id);
                    }
                }
                if let Some(s) = self.strata.get_mut(i) {
                    s.remove(&key);
                }
            }
        }
    }

    fn incr_depth(&mut self) {
        let mut index: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        if let Some(s) = self.stratum(self.depth) {
            for &id in s.values() {
                if let Some(n) = self.nodes.get(id) {
                    for e in &n.expected {
                        index.entry(e.clone()).or_default().push(id);
                    }
                }
            }
        }
        self.parent_index = index;
        self.depth += 1;
        self.strata.push(BTreeMap::new());
    }

    fn valid_policy_nodes(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for d in (0..=self.depth).rev() {
            for &id in self.stratum(d).into_iter().flat_map(BTreeMap::values) {
                let Some(n) = self.nodes.get(id) else {
                    continue;
                };
                if n.valid == ANY_POLICY {
                    continue;
                }
                if n.parents.len() == 1
                    && n.parents
                        .iter()
                        .all(|&p| self.nodes.get(p).is_some_and(|p| p.valid == ANY_POLICY))
                {
                    out.push(id);
                }
            }
        }
        out
    }
}

/// Go's `policiesValid` for a chain (leaf first, trust anchor last) and no user policies.
pub(super) fn policies_valid(chain: &[&PolicyInfo]) -> bool {
    if chain.len() <= 1 {
        return true;
    }
    let n = chain.len() - 1;
    let mut pg = Some(PolicyGraph::new());
    let (mut inhibit_any, mut explicit, mut mapping_allowed) = (n + 1, n + 1, n + 1);
    let lower = |to: &mut usize, v: Option<i64>| {
        if let Some(v) = v.and_then(|v| usize::try_from(v).ok()) {
            if v < *to {
                *to = v;
            }
        }
    };
    for i in (0..n).rev() {
        let Some(cert) = chain.get(i) else {
            return false;
        };
        if cert.policies.is_empty() {
            pg = None;
        }
        if explicit == 0 && pg.is_none() {
            return false;
        }
        if let Some(g) = pg.as_mut() {
            g.incr_depth();
            let mut seen: HashSet<&[u8]> = HashSet::new();
            for policy in &cert.policies {
                seen.insert(policy);
                if policy == ANY_POLICY {
                    continue;
                }
                let mut parents = g.parents_with_expected(policy);
                if parents.is_empty() {
                    if let Some(any) = g.parent_with_any_policy() {
                        parents = vec![any];
                    }
                }
                if !parents.is_empty() {
                    let id = g.new_node(policy.clone(), &parents);
                    g.insert(id);
                }
            }
            if seen.contains(ANY_POLICY) && (inhibit_any > 0 || (n - i < n && cert.self_issued)) {
                let mut missing: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
                let parents: Vec<usize> = g
                    .stratum(g.depth - 1)
                    .map(|s| s.values().copied().collect())
                    .unwrap_or_default();
                for p in parents {
                    let expected = g
                        .nodes
                        .get(p)
                        .map(|n| n.expected.clone())
                        .unwrap_or_default();
                    for e in expected {
                        if g.leaf_with_policy(&e).is_none() {
                            missing.entry(e).or_default().push(p);
                        }
                    }
                }
                for (oid, parents) in missing {
                    let id = g.new_node(oid, &parents);
                    g.insert(id);
                }
            }
            g.prune();
            if i != 0 && !cert.mappings.is_empty() {
                let mut mappings: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
                for (issuer, subject) in &cert.mappings {
                    if mapping_allowed > 0 {
                        if issuer == ANY_POLICY || subject == ANY_POLICY {
                            return false;
                        }
                        mappings
                            .entry(issuer.clone())
                            .or_default()
                            .push(subject.clone());
                    } else {
                        g.delete_leaf(issuer);
                        g.prune();
                    }
                }
                for (issuer, subjects) in mappings {
                    if let Some(m) = g.leaf_with_policy(&issuer) {
                        if let Some(node) = g.nodes.get_mut(m) {
                            node.expected = subjects;
                        }
                    } else if let Some(any) = g.leaf_with_policy(ANY_POLICY) {
                        let id = g.new_node(issuer, &[any]);
                        if let Some(node) = g.nodes.get_mut(id) {
                            node.expected = subjects;
                        }
                        g.insert(id);
                    }
                }
            }
        }
        if i != 0 {
            if !cert.self_issued {
                explicit = explicit.saturating_sub(1);
                mapping_allowed = mapping_allowed.saturating_sub(1);
                inhibit_any = inhibit_any.saturating_sub(1);
            }
            lower(&mut explicit, cert.require_explicit_policy);
            lower(&mut mapping_allowed, cert.inhibit_policy_mapping);
            lower(&mut inhibit_any, cert.inhibit_any_policy);
        }
    }
    explicit = explicit.saturating_sub(1);
    if chain
        .first()
        .is_some_and(|c| c.require_explicit_policy == Some(0))
    {
        explicit = 0;
    }
    let mut valid = 0;
    if let Some(g) = &pg {
        valid = g.valid_policy_nodes().len();
        if g.leaf_with_policy(ANY_POLICY).is_some() {
            valid += 1;
        }
    }
    // With anyPolicy as the user's set, the user-constrained set is the authority's.
    !(explicit == 0 && valid == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn dns_constraints_match_names_and_subdomains() {
        let p = DnsConstraints::new(&s(&["example.com"]), true).unwrap();
        assert!(p.query("example.com"));
        assert!(p.query("a.EXAMPLE.com"));
        assert!(!p.query("badexample.com"));
        let dot = DnsConstraints::new(&s(&[".example.com"]), true).unwrap();
        assert!(!dot.query("example.com"));
        assert!(dot.query("a.example.com"));
        let ex = DnsConstraints::new(&s(&["a.example.com", "b.example.org"]), false).unwrap();
        assert!(ex.query("*.example.com"));
        assert!(!ex.query("*.example.net"));
    }

    #[test]
    fn ip_constraints_contain_addresses() {
        let c = IpConstraints::new(&[(vec![10, 0, 0, 0], vec![255, 0, 0, 0])]).unwrap();
        assert!(c.query(&[10, 1, 2, 3]));
        assert!(!c.query(&[11, 1, 2, 3]));
        assert!(!c.query(&[0; 16]));
    }

    #[test]
    fn mailboxes_parse_as_go_does() {
        assert!(parse_mailbox("a@example.com").is_some());
        assert!(parse_mailbox("\"a b\"@example.com").is_some());
        assert!(parse_mailbox(".a@example.com").is_none());
        assert!(parse_mailbox("a@").is_some());
        assert!(parse_mailbox("a").is_none());
    }

    #[test]
    fn an_empty_extension_is_refused() {
        assert!(parse_name_constraints(&[0x30, 0x00]).is_err());
        assert!(parse_name_constraints(&[0x30, 0x02, 0xa0, 0x00]).is_err());
        assert!(parse_name_constraints(&[]).is_err());
    }

    #[test]
    fn policies_without_constraints_are_valid() {
        let a = PolicyInfo::default();
        assert!(policies_valid(&[&a, &a, &a]));
        let strict = PolicyInfo {
            require_explicit_policy: Some(0),
            ..PolicyInfo::default()
        };
        assert!(!policies_valid(&[&a, &strict, &a]));
    }
}
