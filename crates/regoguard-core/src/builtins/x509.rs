//! `crypto.x509.*` and `crypto.parse_private_keys`: certificates, requests and keys in the
//! shapes OPA returns, which are Go's `encoding/json` renderings of `x509.Certificate`,
//! `x509.CertificateRequest` and the key types (README, "Builtins", lists the fields).
//!
//! Parsing is `x509-parser`'s; chain verification is written here after Go's
//! `Certificate.Verify` as OPA calls it: the first certificate of the input is the root, the
//! last the leaf, the others intermediates; every certificate of the chain must be valid at
//! the evaluation's clock (or the `CurrentTime` option), intermediates must be CAs, path
//! lengths and extended key usages (`serverAuth` unless the options say otherwise) are
//! enforced, and each signature is checked with the issuer's key (ring, through x509-parser).
//! A verification that read the clock bounds the decision (ARCHITECTURE.md, "Caching rules" 8):
//! a valid chain holds until its first `NotAfter`, an invalid one until the next `NotBefore`.
//!
//! Name constraints and certificate policies are checked as Go checks a candidate chain
//! (`x509_constraints.rs`).
//!
//! ECDSA signatures ring cannot check (P-521, SHA-512 over P-256/P-384) go to `RustCrypto`.
//!
//! Differences from Go, all refusals: SHA-1 and MD5 signatures never verify (Go refuses them
//! too), nor do DSA signatures (ring lacks them).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use regorus::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use super::jwt::der_tlv;
use super::misc::string;
use super::x509_constraints::{self as constraints, NameConstraints, PolicyInfo, SanNames};
use super::Builtin;
use crate::eval_context;

/// The largest input accepted (bytes of PEM or base64 text).
pub const MAX_INPUT_LEN: usize = 1024 * 1024;
/// The most certificates one input may hold.
const MAX_CERTS: usize = 64;

/// This family's builtins. The two verifiers read the clock unless given `CurrentTime`.
pub const BUILTINS: &[Builtin] = &[
    Builtin::pure("crypto.x509.parse_certificates", 1, parse_certificates),
    Builtin {
        name: "crypto.x509.parse_and_verify_certificates",
        nargs: 1,
        f: parse_and_verify,
        nondeterministic: true,
    },
    Builtin {
        name: "crypto.x509.parse_and_verify_certificates_with_options",
        nargs: 2,
        f: parse_and_verify_with_options,
        nondeterministic: true,
    },
    Builtin::pure(
        "crypto.x509.parse_certificate_request",
        1,
        parse_certificate_request,
    ),
    Builtin::pure(
        "crypto.x509.parse_rsa_private_key",
        1,
        parse_rsa_private_key,
    ),
    Builtin::pure("crypto.x509.parse_keypair", 2, parse_keypair),
    Builtin::pure("crypto.parse_private_keys", 1, parse_private_keys),
];

// ---------------------------------------------------------------------------------------
// Values in Go's JSON shapes.

/// A JSON object; pairs whose value is `Undefined` are left out.
fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::from(
        pairs
            .into_iter()
            .filter(|(_, v)| *v != Value::Undefined)
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<Value, Value>>(),
    )
}

/// `[]byte`: standard base64 with padding; a nil slice is null.
fn bytes(b: &[u8]) -> Value {
    Value::from(base64::engine::general_purpose::STANDARD.encode(b))
}

fn opt_bytes(b: Option<&[u8]>) -> Value {
    b.map_or(Value::Null, bytes)
}

/// A `[]T` that Go leaves nil when empty: null, else the array.
fn list(v: Vec<Value>) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::from(v)
    }
}

fn strings(v: Vec<String>) -> Value {
    list(v.into_iter().map(Value::from).collect())
}

/// A `*big.Int`: a JSON number of any size.
fn big(be: &[u8]) -> Value {
    Value::from_numeric_string(&BigUint::from_bytes_be(be).to_string()).unwrap_or(Value::Null)
}

fn oid_arcs(oid: &x509_parser::der_parser::oid::Oid<'_>) -> Value {
    oid.iter().map_or(Value::Null, |arcs| {
        Value::from(arcs.map(Value::from).collect::<Vec<_>>())
    })
}

fn oid_string(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    oid.to_id_string()
}

/// Go's `time.Time` in JSON: RFC 3339, UTC.
fn rfc3339(t: x509_parser::time::ASN1Time) -> Value {
    let d = t.to_datetime();
    Value::from(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    ))
}

const OID_PREFIX_NAME: &[u64] = &[2, 5, 4];

/// Go's `pkix.Name` after `FillFromRDNSequence`.
fn name(n: &X509Name<'_>) -> Value {
    let mut fields: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut serial = String::new();
    let mut cn = String::new();
    let mut names = Vec::new();
    for atv in n.iter_attributes() {
        let value = atv.as_str().ok();
        names.push(obj(vec![
            ("Type", oid_arcs(atv.attr_type())),
            ("Value", value.map_or(Value::Null, Value::from)),
        ]));
        let Some(value) = value else { continue };
        let arcs: Vec<u64> = atv
            .attr_type()
            .iter()
            .map(Iterator::collect)
            .unwrap_or_default();
        if arcs.len() != 4 || &arcs[..3] != OID_PREFIX_NAME {
            continue;
        }
        let field = match arcs[3] {
            3 => {
                value.clone_into(&mut cn);
                continue;
            }
            5 => {
                value.clone_into(&mut serial);
                continue;
            }
            6 => "Country",
            7 => "Locality",
            8 => "Province",
            9 => "StreetAddress",
            10 => "Organization",
            11 => "OrganizationalUnit",
            17 => "PostalCode",
            _ => continue,
        };
        fields.entry(field).or_default().push(value.to_owned());
    }
    let mut pairs = vec![
        ("CommonName", Value::from(cn)),
        ("SerialNumber", Value::from(serial)),
        ("Names", list(names)),
        ("ExtraNames", Value::Null),
    ];
    for f in [
        "Country",
        "Organization",
        "OrganizationalUnit",
        "Locality",
        "Province",
        "StreetAddress",
        "PostalCode",
    ] {
        pairs.push((f, strings(fields.remove(f).unwrap_or_default())));
    }
    obj(pairs)
}

/// Go's `x509.SignatureAlgorithm` number.
fn signature_algorithm(alg: &AlgorithmIdentifier<'_>) -> u64 {
    match oid_string(&alg.algorithm).as_str() {
        "1.2.840.113549.1.1.2" => 1,
        "1.2.840.113549.1.1.4" => 2,
        "1.2.840.113549.1.1.5" => 3,
        "1.2.840.113549.1.1.11" => 4,
        "1.2.840.113549.1.1.12" => 5,
        "1.2.840.113549.1.1.13" => 6,
        "1.2.840.10040.4.3" => 7,
        "2.16.840.1.101.3.4.3.2" => 8,
        "1.2.840.10045.4.1" => 9,
        "1.2.840.10045.4.3.2" => 10,
        "1.2.840.10045.4.3.3" => 11,
        "1.2.840.10045.4.3.4" => 12,
        "1.2.840.113549.1.1.10" => alg
            .parameters
            .as_ref()
            .and_then(|p| x509_parser::signature_algorithm::RsaSsaPssParams::try_from(p).ok())
            .map_or(0, |p| match oid_string(p.hash_algorithm_oid()).as_str() {
                "2.16.840.1.101.3.4.2.1" => 13,
                "2.16.840.1.101.3.4.2.2" => 14,
                "2.16.840.1.101.3.4.2.3" => 15,
                _ => 0,
            }),
        "1.3.101.112" => 16,
        _ => 0,
    }
}

/// Go's `x509.PublicKeyAlgorithm` number and its `PublicKey` value.
fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> (u64, Value) {
    let key = &spki.subject_public_key.data;
    match oid_string(&spki.algorithm.algorithm).as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => (
                1,
                obj(vec![("N", big(rsa.modulus)), ("E", big(rsa.exponent))]),
            ),
            _ => (1, Value::Null),
        },
        "1.2.840.10040.4.1" => (2, Value::Null),
        "1.2.840.10045.2.1" => {
            // An uncompressed point: 04 || X || Y. Go's curve value has no exported field.
            if key.len() > 1 && key[0] == 4 && key.len() % 2 == 1 {
                let (x, y) = key[1..].split_at((key.len() - 1) / 2);
                (
                    3,
                    obj(vec![
                        ("Curve", Value::new_object()),
                        ("X", big(x)),
                        ("Y", big(y)),
                    ]),
                )
            } else {
                (3, Value::Null)
            }
        }
        "1.3.101.112" => (4, bytes(key)),
        _ => (0, Value::Null),
    }
}

/// Go's `net.IP` as text.
fn ip_text(b: &[u8]) -> Value {
    match b.len() {
        4 => Value::from(Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            let v6 = Ipv6Addr::from(a);
            Value::from(
                v6.to_ipv4_mapped()
                    .map_or_else(|| IpAddr::V6(v6).to_string(), |v4| v4.to_string()),
            )
        }
        _ => Value::from(format!(
            "?{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        )),
    }
}

/// Go's `url.URL` struct in JSON, for the URIs a certificate names (Go's `url.Parse` of the
/// common `scheme://host/path?query#fragment` and `scheme:opaque` shapes).
fn go_url(s: &str) -> Value {
    let UrlParts {
        scheme,
        opaque,
        user,
        host,
        path,
        query,
        fragment,
    } = url_parts(s);
    obj(vec![
        ("Scheme", Value::from(scheme)),
        ("Opaque", Value::from(opaque)),
        (
            "User",
            if user {
                Value::new_object()
            } else {
                Value::Null
            },
        ),
        ("Host", Value::from(host)),
        ("Path", Value::from(percent_decode(path))),
        ("RawPath", Value::from("")),
        ("OmitHost", Value::from(false)),
        ("ForceQuery", Value::from(query == Some(""))),
        ("RawQuery", Value::from(query.unwrap_or(""))),
        ("Fragment", Value::from(percent_decode(fragment))),
        ("RawFragment", Value::from("")),
    ])
}

/// The pieces of a URI as Go's `url.Parse` splits the common shapes.
struct UrlParts<'a> {
    scheme: String,
    opaque: &'a str,
    user: bool,
    host: String,
    path: &'a str,
    query: Option<&'a str>,
    fragment: &'a str,
}

fn url_parts(s: &str) -> UrlParts<'_> {
    let (scheme, rest) = match s.split_once(':') {
        Some((sch, rest))
            if !sch.is_empty()
                && sch.starts_with(|c: char| c.is_ascii_alphabetic())
                && sch
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (sch.to_ascii_lowercase(), rest)
        }
        _ => (String::new(), s),
    };
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest
        .split_once('?')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let (mut host, mut user, mut opaque, mut path) = (String::new(), false, "", rest);
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find('/').unwrap_or(after.len());
        let authority = &after[..end];
        path = &after[end..];
        let authority = match authority.rsplit_once('@') {
            Some((_, h)) => {
                user = true;
                h
            }
            None => authority,
        };
        authority.clone_into(&mut host);
    } else if !scheme.is_empty() && !rest.starts_with('/') {
        opaque = rest;
        path = "";
    }
    UrlParts {
        scheme,
        opaque,
        user,
        host,
        path,
        query,
        fragment,
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Bytes, not a str slice: a multi-byte character after `%` must not split.
            if let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `x509.ExtKeyUsage` number of an extended key usage OID.
fn ext_key_usage(oid: &str) -> Option<u64> {
    Some(match oid {
        "2.5.29.37.0" => 0,
        "1.3.6.1.5.5.7.3.1" => 1,
        "1.3.6.1.5.5.7.3.2" => 2,
        "1.3.6.1.5.5.7.3.3" => 3,
        "1.3.6.1.5.5.7.3.4" => 4,
        "1.3.6.1.5.5.7.3.5" => 5,
        "1.3.6.1.5.5.7.3.6" => 6,
        "1.3.6.1.5.5.7.3.7" => 7,
        "1.3.6.1.5.5.7.3.8" => 8,
        "1.3.6.1.5.5.7.3.9" => 9,
        "1.3.6.1.4.1.311.10.3.3" => 10,
        "2.16.840.1.113730.4.1" => 11,
        "1.3.6.1.4.1.311.2.1.22" => 12,
        "1.3.6.1.4.1.311.61.1.1" => 13,
        _ => return None,
    })
}

/// The OIDs of an extended-key-usage extension's value, in their order.
fn eku_oids(value: &[u8]) -> Vec<x509_parser::der_parser::oid::Oid<'_>> {
    let Ok((_, seq)) = x509_parser::der_parser::der::parse_der_sequence(value) else {
        return Vec::new();
    };
    seq.as_sequence()
        .map(|items| {
            items
                .iter()
                .filter_map(|o| o.as_oid().ok().cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// The subject alternative names Go collects: DNS names, emails, IPs, URIs.
#[derive(Default)]
struct Sans {
    dns: Vec<String>,
    email: Vec<String>,
    ip: Vec<Vec<u8>>,
    uri: Vec<String>,
}

impl Sans {
    fn count(&self) -> usize {
        self.dns.len() + self.email.len() + self.ip.len() + self.uri.len()
    }
}

fn sans_of(general_names: &[GeneralName<'_>], into: &mut Sans) {
    for g in general_names {
        match g {
            GeneralName::DNSName(s) => into.dns.push((*s).to_owned()),
            GeneralName::RFC822Name(s) => into.email.push((*s).to_owned()),
            GeneralName::IPAddress(b) => into.ip.push(b.to_vec()),
            GeneralName::URI(s) => into.uri.push((*s).to_owned()),
            _ => {}
        }
    }
}

/// One side (permitted or excluded) of a name-constraints extension.
#[derive(Default)]
struct NameSubtrees {
    dns: Vec<String>,
    ip: Vec<Value>,
    email: Vec<String>,
    uri: Vec<String>,
}

fn subtrees_of(trees: Option<&Vec<x509_parser::extensions::GeneralSubtree<'_>>>) -> NameSubtrees {
    let mut out = NameSubtrees::default();
    for t in trees.into_iter().flatten() {
        match &t.base {
            GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
            GeneralName::RFC822Name(e) => out.email.push((*e).to_owned()),
            GeneralName::URI(u) => out.uri.push((*u).to_owned()),
            GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                let (ip, mask) = b.split_at(b.len() / 2);
                out.ip
                    .push(obj(vec![("IP", ip_text(ip)), ("Mask", bytes(mask))]));
            }
            _ => {}
        }
    }
    out
}

/// What Go reads from a certificate's extensions (its flags are Go's own fields).
#[derive(Default)]
#[allow(clippy::struct_excessive_bools)]
struct Exts {
    key_usage: u64,
    ext_key_usage: Vec<u64>,
    unknown_eku: Vec<Value>,
    basic_valid: bool,
    is_ca: bool,
    max_path_len: i64,
    skid: Option<Vec<u8>>,
    akid: Option<Vec<u8>>,
    ocsp: Vec<String>,
    issuing_url: Vec<String>,
    crl_dp: Vec<String>,
    policies: Vec<Value>,
    policy_strings: Vec<Value>,
    policy_mappings: Vec<Value>,
    inhibit_any_policy: Option<u32>,
    require_explicit_policy: Option<u32>,
    inhibit_policy_mapping: Option<u32>,
    sans: Sans,
    /// A critical extension Go would not handle (verification fails on it).
    unhandled_critical: Vec<Value>,
    /// An extension Go's parser refuses (a malformed name-constraints extension): Go cannot
    /// read the certificate at all.
    go_unparseable: bool,
    /// A subject-alternative-name extension is present (Go's `hasSANExtension`).
    has_san: bool,
    /// The name constraints as Go's verifier reads them.
    name_constraints: Option<NameConstraints>,
    /// What Go's policy validation reads.
    policy: PolicyInfo,
    /// Name constraints, in Go's fields: permitted, excluded.
    nc_critical: bool,
    nc: [NameSubtrees; 2],
    list: Vec<Value>,
}

fn exts_of(cert: &X509Certificate<'_>) -> Exts {
    let mut e = Exts::default();
    for x in cert.extensions() {
        e.list.push(obj(vec![
            ("Id", oid_arcs(&x.oid)),
            ("Critical", Value::from(x.critical)),
            ("Value", bytes(x.value)),
        ]));
        let mut handled = true;
        let oid = oid_string(&x.oid);
        if oid == "2.5.29.17" {
            e.has_san = true;
        }
        if oid == "2.5.29.30" {
            match constraints::parse_name_constraints(x.value) {
                Ok(nc) => {
                    handled = !nc.unhandled;
                    e.name_constraints = Some(nc);
                }
                Err(_) => e.go_unparseable = true,
            }
        }
        match x.parsed_extension() {
            ParsedExtension::KeyUsage(k) => e.key_usage = u64::from(k.flags),
            ParsedExtension::ExtendedKeyUsage(_) => {
                for oid in eku_oids(x.value) {
                    match ext_key_usage(&oid_string(&oid)) {
                        Some(n) => e.ext_key_usage.push(n),
                        None => e.unknown_eku.push(oid_arcs(&oid)),
                    }
                }
            }
            ParsedExtension::BasicConstraints(b) => {
                e.basic_valid = true;
                e.is_ca = b.ca;
                e.max_path_len = b.path_len_constraint.map_or(-1, i64::from);
            }
            ParsedExtension::SubjectKeyIdentifier(k) => e.skid = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                e.akid = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for d in aia.iter() {
                    let GeneralName::URI(u) = d.access_location else {
                        continue;
                    };
                    match oid_string(&d.access_method).as_str() {
                        "1.3.6.1.5.5.7.48.1" => e.ocsp.push(u.to_owned()),
                        "1.3.6.1.5.5.7.48.2" => e.issuing_url.push(u.to_owned()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                for p in points.iter() {
                    if let Some(x509_parser::extensions::DistributionPointName::FullName(names)) =
                        &p.distribution_point
                    {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                e.crl_dp.push((*u).to_owned());
                            }
                        }
                    }
                }
            }
            ParsedExtension::CertificatePolicies(ps) => {
                for p in ps {
                    e.policy.policies.push(p.policy_id.as_bytes().to_vec());
                    e.policies.push(oid_arcs(&p.policy_id));
                    e.policy_strings.push(Value::from(oid_string(&p.policy_id)));
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                let before = e.sans.count();
                sans_of(&san.general_names, &mut e.sans);
                // Go: a SAN extension naming none of DNS, email, IP, URI is not handled (so a
                // critical one makes the certificate unverifiable).
                handled = e.sans.count() > before;
            }
            ParsedExtension::NameConstraints(nc) => {
                e.nc_critical = x.critical;
                e.nc = [
                    subtrees_of(nc.permitted_subtrees.as_ref()),
                    subtrees_of(nc.excluded_subtrees.as_ref()),
                ];
            }
            ParsedExtension::PolicyConstraints(c) => {
                e.require_explicit_policy = c.require_explicit_policy;
                e.inhibit_policy_mapping = c.inhibit_policy_mapping;
                e.policy.require_explicit_policy = c.require_explicit_policy.map(i64::from);
                e.policy.inhibit_policy_mapping = c.inhibit_policy_mapping.map(i64::from);
            }
            ParsedExtension::InhibitAnyPolicy(i) => {
                e.inhibit_any_policy = Some(i.skip_certs);
                e.policy.inhibit_any_policy = Some(i64::from(i.skip_certs));
            }
            ParsedExtension::PolicyMappings(m) => {
                for p in &m.mappings {
                    e.policy.mappings.push((
                        p.issuer_domain_policy.as_bytes().to_vec(),
                        p.subject_domain_policy.as_bytes().to_vec(),
                    ));
                    e.policy_mappings.push(obj(vec![
                        (
                            "IssuerDomainPolicy",
                            Value::from(oid_string(&p.issuer_domain_policy)),
                        ),
                        (
                            "SubjectDomainPolicy",
                            Value::from(oid_string(&p.subject_domain_policy)),
                        ),
                    ]));
                }
            }
            // Name constraints are read above, from the extension's bytes, as Go does.
            _ => handled = handled && oid == "2.5.29.30",
        }
        if x.critical && !handled {
            e.unhandled_critical.push(oid_arcs(&x.oid));
        }
    }
    e
}

/// Go's `x509.Certificate` in JSON, plus OPA's `URIStrings` where OPA adds it
/// (`parse_certificates`).
fn certificate_value(cert: &X509Certificate<'_>, uri_strings: bool) -> Value {
    let tbs = &cert.tbs_certificate;
    let e = exts_of(cert);
    let uri_strings = if uri_strings {
        strings(e.sans.uri.clone())
    } else {
        Value::Undefined
    };
    let (pk_alg, pk) = public_key(tbs.public_key());
    let uris: Vec<Value> = e.sans.uri.iter().map(|u| go_url(u)).collect();
    let [permitted, excluded] = e.nc;
    obj(vec![
        ("Raw", bytes(cert.as_raw())),
        ("RawTBSCertificate", bytes(tbs.as_ref())),
        ("RawSubjectPublicKeyInfo", bytes(tbs.public_key().raw)),
        ("RawSubject", bytes(tbs.subject().as_raw())),
        ("RawIssuer", bytes(tbs.issuer().as_raw())),
        ("Signature", bytes(&cert.signature_value.data)),
        (
            "SignatureAlgorithm",
            Value::from(signature_algorithm(&cert.signature_algorithm)),
        ),
        ("PublicKeyAlgorithm", Value::from(pk_alg)),
        ("PublicKey", pk),
        ("Version", Value::from(u64::from(tbs.version().0) + 1)),
        ("SerialNumber", big(tbs.raw_serial())),
        ("Issuer", name(tbs.issuer())),
        ("Subject", name(tbs.subject())),
        ("NotBefore", rfc3339(tbs.validity().not_before)),
        ("NotAfter", rfc3339(tbs.validity().not_after)),
        ("KeyUsage", Value::from(e.key_usage)),
        ("Extensions", list(e.list)),
        ("ExtraExtensions", Value::Null),
        ("UnhandledCriticalExtensions", list(e.unhandled_critical)),
        (
            "ExtKeyUsage",
            list(e.ext_key_usage.into_iter().map(Value::from).collect()),
        ),
        ("UnknownExtKeyUsage", list(e.unknown_eku)),
        ("BasicConstraintsValid", Value::from(e.basic_valid)),
        ("IsCA", Value::from(e.is_ca)),
        ("MaxPathLen", Value::from(e.max_path_len)),
        (
            "MaxPathLenZero",
            Value::from(e.basic_valid && e.max_path_len == 0),
        ),
        ("SubjectKeyId", opt_bytes(e.skid.as_deref())),
        ("AuthorityKeyId", opt_bytes(e.akid.as_deref())),
        ("OCSPServer", strings(e.ocsp)),
        ("IssuingCertificateURL", strings(e.issuing_url)),
        ("DNSNames", strings(e.sans.dns)),
        ("EmailAddresses", strings(e.sans.email)),
        (
            "IPAddresses",
            list(e.sans.ip.iter().map(|b| ip_text(b)).collect()),
        ),
        ("URIs", list(uris)),
        ("PermittedDNSDomainsCritical", Value::from(e.nc_critical)),
        ("PermittedDNSDomains", strings(permitted.dns)),
        ("ExcludedDNSDomains", strings(excluded.dns)),
        ("PermittedIPRanges", list(permitted.ip)),
        ("ExcludedIPRanges", list(excluded.ip)),
        ("PermittedEmailAddresses", strings(permitted.email)),
        ("ExcludedEmailAddresses", strings(excluded.email)),
        ("PermittedURIDomains", strings(permitted.uri)),
        ("ExcludedURIDomains", strings(excluded.uri)),
        ("CRLDistributionPoints", strings(e.crl_dp)),
        ("PolicyIdentifiers", list(e.policies)),
        ("Policies", list(e.policy_strings)),
        ("PolicyMappings", list(e.policy_mappings)),
        (
            "InhibitAnyPolicy",
            Value::from(e.inhibit_any_policy.map_or(0, i64::from)),
        ),
        (
            "InhibitAnyPolicyZero",
            Value::from(e.inhibit_any_policy == Some(0)),
        ),
        (
            "InhibitPolicyMapping",
            Value::from(e.inhibit_policy_mapping.map_or(0, i64::from)),
        ),
        (
            "InhibitPolicyMappingZero",
            Value::from(e.inhibit_policy_mapping == Some(0)),
        ),
        (
            "RequireExplicitPolicy",
            Value::from(e.require_explicit_policy.map_or(0, i64::from)),
        ),
        (
            "RequireExplicitPolicyZero",
            Value::from(e.require_explicit_policy == Some(0)),
        ),
        ("URIStrings", uri_strings),
    ])
}

// ---------------------------------------------------------------------------------------
// Inputs: PEM blocks or base64 (of PEM or DER), as OPA's getX509CertsFromString reads them.

/// PEM blocks of `text`: (label, DER), in order; trailing text without a block is ignored,
/// as Go's `pem.Decode` loop does.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body.find(&end_marker) else {
            break;
        };
        let b64: String = body[..body_end]
            .lines()
            .filter(|l| !l.contains(':')) // PEM headers (Proc-Type, ...)
            .flat_map(|l| l.chars().filter(|c| !c.is_ascii_whitespace()))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| anyhow!("invalid PEM block"))?;
        out.push((label.to_owned(), der));
        rest = &body[body_end + end_marker.len()..];
    }
    Ok(out)
}

fn std_b64(s: &str) -> Result<Vec<u8>> {
    let clean: String = s.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| anyhow!("illegal base64 data: {e}"))
}

/// The DER bytes of every certificate in `input`.
fn cert_ders(input: &str) -> Result<Vec<u8>> {
    if input.len() > MAX_INPUT_LEN {
        bail!("input longer than {MAX_INPUT_LEN} bytes");
    }
    let from_pem = |text: &str| -> Result<Vec<u8>> {
        let mut all = Vec::new();
        for (label, der) in pem_blocks(text)? {
            if label != "CERTIFICATE" {
                bail!("PEM block type is '{label}', expected CERTIFICATE");
            }
            all.extend(der);
        }
        Ok(all)
    };
    if input.starts_with("-----BEGIN") {
        return from_pem(input);
    }
    let decoded = std_b64(input)?;
    if decoded.starts_with(b"-----BEGIN") {
        return from_pem(std::str::from_utf8(&decoded)?);
    }
    Ok(decoded)
}

/// Parses concatenated DER certificates (Go's `x509.ParseCertificates`).
fn parse_all(der: &[u8]) -> Result<Vec<X509Certificate<'_>>> {
    let mut out = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        if out.len() == MAX_CERTS {
            bail!("more than {MAX_CERTS} certificates");
        }
        let (r, cert) = X509Certificate::from_der(rest)
            .map_err(|e| anyhow!("x509: malformed certificate: {e}"))?;
        out.push(cert);
        rest = r;
    }
    Ok(out)
}

fn parse_certificates(args: &[Value]) -> Result<Value> {
    let input = string("crypto.x509.parse_certificates", 1, &args[0])?;
    let der = cert_ders(input)?;
    let certs = parse_all(&der)?;
    if certs.iter().any(|c| exts_of(c).go_unparseable) {
        bail!("x509: invalid NameConstraints extension");
    }
    Ok(Value::from(
        certs
            .iter()
            .map(|c| certificate_value(c, true))
            .collect::<Vec<_>>(),
    ))
}

// ---------------------------------------------------------------------------------------
// Chain verification (Go's Certificate.Verify with the options OPA passes).

/// `x509.VerifyOptions` as OPA's `extractVerifyOpts` reads them.
#[derive(Default)]
struct Options {
    dns_name: Option<String>,
    current_time_ns: Option<i64>,
    key_usages: Vec<u64>,
}

const KEY_USAGE_NAMES: &[&str] = &[
    "KeyUsageAny",
    "KeyUsageServerAuth",
    "KeyUsageClientAuth",
    "KeyUsageCodeSigning",
    "KeyUsageEmailProtection",
    "KeyUsageIPSECEndSystem",
    "KeyUsageIPSECTunnel",
    "KeyUsageIPSECUser",
    "KeyUsageTimeStamping",
    "KeyUsageOCSPSigning",
    "KeyUsageMicrosoftServerGatedCrypto",
    "KeyUsageNetscapeServerGatedCrypto",
    "KeyUsageMicrosoftCommercialCodeSigning",
    "KeyUsageMicrosoftKernelCodeSigning",
];

fn options_of(given: &Value) -> Result<Options> {
    let Value::Object(m) = given else {
        bail!("crypto.x509.parse_and_verify_certificates_with_options: operand 2 must be object")
    };
    let mut o = Options::default();
    for (k, v) in m.iter() {
        match k.as_string().map(AsRef::as_ref) {
            Ok("DNSName") => match v {
                Value::String(s) => o.dns_name = Some(s.trim_matches('"').to_owned()),
                _ => bail!("'DNSName' should be a string"),
            },
            Ok("CurrentTime") => match v {
                Value::Number(_) => {
                    o.current_time_ns =
                        Some(v.as_i64().map_err(|_| {
                            anyhow!("'CurrentTime' should be a valid int64 number")
                        })?);
                }
                _ => bail!("'CurrentTime' should be a number"),
            },
            Ok("MaxConstraintComparisions") => match v {
                Value::Number(_) => {
                    v.as_i64().map_err(|_| {
                        anyhow!("'MaxConstraintComparisions' should be a valid int64 number")
                    })?;
                }
                _ => bail!("'MaxConstraintComparisions' should be a number"),
            },
            Ok("KeyUsages") => {
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    Value::Set(s) => s.iter().collect(),
                    _ => bail!("'KeyUsages' should be an Array or Set"),
                };
                let mut invalid = Vec::new();
                for item in items {
                    if let Value::String(s) = item {
                        let usage = s.trim_matches('"');
                        match KEY_USAGE_NAMES.iter().position(|n| *n == usage) {
                            Some(i) => o.key_usages.push(i as u64),
                            None => invalid.push(usage.to_owned()),
                        }
                    }
                }
                if !invalid.is_empty() {
                    bail!(
                        "invalid entries for 'KeyUsages' found: [{}]",
                        invalid.join(" ")
                    );
                }
            }
            _ => bail!("invalid key option"),
        }
    }
    Ok(o)
}

/// A certificate with what verification needs of it, parsed once.
struct Node<'a> {
    cert: X509Certificate<'a>,
    exts: Exts,
    not_before_ns: i128,
    not_after_ns: i128,
}

impl<'a> Node<'a> {
    fn new(cert: X509Certificate<'a>) -> Self {
        let mut exts = exts_of(&cert);
        exts.policy.self_issued = cert.issuer().as_raw() == cert.subject().as_raw();
        let v = cert.validity();
        Node {
            not_before_ns: i128::from(v.not_before.timestamp()) * 1_000_000_000,
            not_after_ns: i128::from(v.not_after.timestamp()) * 1_000_000_000,
            cert,
            exts,
        }
    }

    fn valid_at(&self, now_ns: i128) -> bool {
        self.not_before_ns <= now_ns && now_ns <= self.not_after_ns
    }
}

/// Whether `child`'s signature verifies with `parent`'s key (weak algorithms refused).
fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    // MD2, MD5, SHA-1 with RSA or ECDSA: Go refuses them for chains, and so do we.
    if matches!(
        signature_algorithm(&child.signature_algorithm),
        1..=3 | 7 | 9
    ) {
        return false;
    }
    if let Some(ok) = ecdsa_signed_by(child, parent.public_key()) {
        return ok;
    }
    child.verify_signature(Some(parent.public_key())).is_ok()
}

/// An ECDSA signature (DER) over a prehashed `digest` by the SEC1 `point`, on the curve of the
/// `RustCrypto` crate `$curve` (the same API for `p256` and `p384`).
macro_rules! prehash_verifies {
    ($curve:ident, $point:expr, $sig:expr, $digest:expr) => {{
        use $curve::ecdsa::signature::hazmat::PrehashVerifier;
        match (
            $curve::ecdsa::VerifyingKey::from_sec1_bytes($point),
            $curve::ecdsa::Signature::from_der($sig),
        ) {
            (Ok(vk), Ok(sig)) => vk.verify_prehash($digest, &sig).is_ok(),
            _ => false,
        }
    }};
}

/// ECDSA where ring has no verifier: a P-521 issuer key (ring has no P-521), or SHA-512 over
/// P-256/P-384 (ring pairs those curves with SHA-256/384 only). Go accepts any of
/// SHA-256/384/512 with any curve; `RustCrypto`'s `p256`/`p384`/`p521` check the digest the
/// signature algorithm names. `None`: ring's path (x509-parser) decides.
fn ecdsa_signed_by(child: &X509Certificate<'_>, key: &SubjectPublicKeyInfo<'_>) -> Option<bool> {
    use sha2::Digest;
    if oid_string(&key.algorithm.algorithm) != "1.2.840.10045.2.1" {
        return None;
    }
    let curve = oid_string(&key.algorithm.parameters.as_ref()?.as_oid().ok()?);
    let alg = signature_algorithm(&child.signature_algorithm);
    // ring checks P-256/P-384 with SHA-256/384 itself.
    let ring_can = alg != 12 && matches!(curve.as_str(), "1.2.840.10045.3.1.7" | "1.3.132.0.34");
    if ring_can
        || !matches!(
            curve.as_str(),
            "1.2.840.10045.3.1.7" | "1.3.132.0.34" | "1.3.132.0.35"
        )
    {
        return None;
    }
    let tbs = child.tbs_certificate.as_ref();
    let digest: Vec<u8> = match alg {
        10 => sha2::Sha256::digest(tbs).to_vec(),
        11 => sha2::Sha384::digest(tbs).to_vec(),
        12 => sha2::Sha512::digest(tbs).to_vec(),
        _ => return Some(false),
    };
    let point = &key.subject_public_key.data;
    let sig = &child.signature_value.data;
    Some(match curve.as_str() {
        "1.3.132.0.35" => p521_prehash(point, sig, &digest),
        // A digest longer than the order: its leftmost bits, as Go's hashToInt.
        "1.2.840.10045.3.1.7" => prehash_verifies!(p256, point, sig, &digest),
        _ => prehash_verifies!(p384, point, sig, &digest),
    })
}

fn p521_prehash(point: &[u8], sig: &[u8], digest: &[u8]) -> bool {
    use p521::ecdsa::signature::hazmat::PrehashVerifier;
    let (Ok(vk), Ok(sig)) = (
        p521::ecdsa::VerifyingKey::from_sec1_bytes(point),
        p521::ecdsa::Signature::from_der(sig),
    ) else {
        return false;
    };
    // The digest as a number, as Go's hashToInt reads one shorter than the order: `ecdsa`
    // refuses prehashes under half the field size, so left-pad it (the value is unchanged).
    let mut field = [0u8; 66];
    let Some(tail) = field.get_mut(66usize.saturating_sub(digest.len())..) else {
        return false;
    };
    if tail.len() != digest.len() {
        return false;
    }
    tail.copy_from_slice(digest);
    vk.verify_prehash(&field, &sig).is_ok()
}

/// Whether the leaf may serve one of `wanted` (Go's `checkChainForKeyUsage`).
fn chain_allows_usage(chain: &[&Node<'_>], wanted: &[u64]) -> bool {
    if wanted.contains(&0) {
        return true;
    }
    let mut remaining: Vec<u64> = wanted.to_vec();
    for node in chain.iter().rev() {
        let e = &node.exts;
        if e.ext_key_usage.is_empty() && e.unknown_eku.is_empty() {
            continue;
        }
        if e.ext_key_usage.contains(&0) {
            continue;
        }
        remaining.retain(|u| {
            e.ext_key_usage.contains(u)
                // Go: a server-auth request is met by the old server-gated-crypto usages.
                || (*u == 1 && (e.ext_key_usage.contains(&10) || e.ext_key_usage.contains(&11)))
        });
        if remaining.is_empty() {
            return false;
        }
    }
    true
}

/// Go's `VerifyHostname` for the leaf: IP SANs for an IP, else DNS SANs with one-label
/// wildcards, case-insensitively.
fn matches_host(leaf: &Node<'_>, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return leaf.exts.sans.ip.iter().any(|b| match (b.len(), ip) {
            (4, IpAddr::V4(v4)) => b.as_slice() == v4.octets(),
            (16, IpAddr::V6(v6)) => b.as_slice() == v6.octets(),
            (16, IpAddr::V4(v4)) => b.as_slice() == v4.to_ipv6_mapped().octets(),
            _ => false,
        });
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    leaf.exts.sans.dns.iter().any(|pattern| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        if let Some(suffix) = pattern.strip_prefix("*.") {
            host.split_once('.')
                .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
        } else {
            pattern == host
        }
    })
}

/// Signature checks one verification may spend (Go's `maxChainSignatureChecks`): certificates
/// that all sign each other cannot make the path search exponential.
const MAX_SIGNATURE_CHECKS: usize = 100;

/// The verified chain (leaf first, root last), or `None`.
fn build_chain<'n, 'a>(
    nodes: &'n [Node<'a>],
    now_ns: i128,
    usages: &[u64],
) -> Option<Vec<&'n Node<'a>>> {
    let leaf = nodes.last()?;
    let mut chain = vec![leaf];
    let mut checks = 0;
    extend(nodes, &mut chain, now_ns, usages, &mut checks).then_some(chain)
}

/// Depth-first search for a path from the chain's last certificate up to the root
/// (`nodes[0]`) through intermediates (`nodes[1..len-1]`).
fn extend<'n, 'a>(
    nodes: &'n [Node<'a>],
    chain: &mut Vec<&'n Node<'a>>,
    now_ns: i128,
    usages: &[u64],
    checks: &mut usize,
) -> bool {
    const MAX_DEPTH: usize = 16;
    let Some(&child) = chain.last() else {
        return false;
    };
    if !child.valid_at(now_ns) || !child.exts.unhandled_critical.is_empty() {
        return false;
    }
    if chain.len() > MAX_DEPTH {
        return false;
    }
    let candidates = nodes.len() - 1; // the leaf is never a parent
    for (i, parent) in nodes[..candidates].iter().enumerate() {
        if chain.iter().any(|c| std::ptr::eq(*c, parent)) {
            continue;
        }
        if parent.cert.subject().as_raw() != child.cert.issuer().as_raw() {
            continue;
        }
        if let (Some(a), Some(s)) = (&child.exts.akid, &parent.exts.skid) {
            if a != s {
                continue;
            }
        }
        *checks += 1;
        if *checks > MAX_SIGNATURE_CHECKS {
            return false;
        }
        if !signed_by(&child.cert, &parent.cert) {
            continue;
        }
        let is_root = i == 0;
        if !(is_root || parent.exts.basic_valid && parent.exts.is_ca) {
            continue;
        }
        // Path length: the intermediates below this CA.
        if parent.exts.basic_valid && parent.exts.max_path_len >= 0 {
            let below = i64::try_from(chain.len() - 1).unwrap_or(i64::MAX);
            if below > parent.exts.max_path_len {
                continue;
            }
        }
        chain.push(parent);
        if is_root {
            if parent.valid_at(now_ns)
                && parent.exts.unhandled_critical.is_empty()
                && chain_allows_usage(chain, usages)
                && go_chain_checks(chain)
            {
                return true;
            }
        } else if extend(nodes, chain, now_ns, usages, checks) {
            return true;
        }
        chain.pop();
    }
    false
}

/// What Go checks of a candidate chain (leaf first) after building it: its certificate
/// policies and every certificate's names against the name constraints above it.
fn go_chain_checks(chain: &[&Node<'_>]) -> bool {
    let policies: Vec<&PolicyInfo> = chain.iter().map(|n| &n.exts.policy).collect();
    if !constraints::policies_valid(&policies) {
        return false;
    }
    let ncs: Vec<Option<&NameConstraints>> = chain
        .iter()
        .map(|n| n.exts.name_constraints.as_ref())
        .collect();
    if ncs.iter().all(Option::is_none) {
        return true;
    }
    let names: Vec<SanNames<'_>> = chain
        .iter()
        .map(|n| SanNames {
            present: n.exts.has_san,
            dns: &n.exts.sans.dns,
            emails: &n.exts.sans.email,
            ips: &n.exts.sans.ip,
            uri_hosts: n.exts.sans.uri.iter().map(|u| url_parts(u).host).collect(),
        })
        .collect();
    constraints::chain_names_allowed(&ncs, &names)
}

fn invalid() -> Value {
    Value::from(vec![Value::from(false), Value::new_array()])
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
/// `uri_strings`: whether the certificates carry OPA's `URIStrings` (the options variant of
/// OPA returns the plain Go shape).
fn verify_value(input: &str, options: &Options, uri_strings: bool) -> Value {
    let Ok(der) = cert_ders(input) else {
        return invalid();
    };
    let Ok(certs) = parse_all(&der) else {
        return invalid();
    };
    if certs.len() < 2 {
        return invalid();
    }
    let nodes: Vec<Node<'_>> = certs.into_iter().map(Node::new).collect();
    if nodes.iter().any(|n| n.exts.go_unparseable) {
        return invalid();
    }
    let clocked = options.current_time_ns.is_none();
    let now_ns = options
        .current_time_ns
        .map_or_else(|| i128::from(eval_context::now_unix_ns()), i128::from);
    let usages: &[u64] = if options.key_usages.is_empty() {
        &[1] // Go: ExtKeyUsageServerAuth when none is given
    } else {
        &options.key_usages
    };
    let host_ok = options
        .dns_name
        .as_deref()
        .is_none_or(|h| h.is_empty() || nodes.last().is_some_and(|l| matches_host(l, h)));
    let chain = if host_ok {
        build_chain(&nodes, now_ns, usages)
    } else {
        None
    };
    let report = |ns: i128| {
        if clocked && ns > 0 {
            eval_context::valid_until(u64::try_from(ns).unwrap_or(u64::MAX));
        }
    };
    if let Some(chain) = chain {
        // Valid until the first certificate of the chain expires.
        if let Some(end) = chain.iter().map(|n| n.not_after_ns).min() {
            report(end + 1);
        }
        let certs: Vec<Value> = chain
            .iter()
            .map(|n| certificate_value(&n.cert, uri_strings))
            .collect();
        return Value::from(vec![Value::from(true), Value::from(certs)]);
    }
    // Invalid now; a certificate not yet valid may make it valid later.
    if let Some(next) = nodes
        .iter()
        .map(|n| n.not_before_ns)
        .filter(|nb| *nb > now_ns)
        .min()
    {
        report(next);
    }
    invalid()
}

fn parse_and_verify(args: &[Value]) -> Result<Value> {
    let input = string("crypto.x509.parse_and_verify_certificates", 1, &args[0])?;
    Ok(verify_value(input, &Options::default(), true))
}

fn parse_and_verify_with_options(args: &[Value]) -> Result<Value> {
    let name = "crypto.x509.parse_and_verify_certificates_with_options";
    let input = string(name, 1, &args[0])?;
    let options = options_of(&args[1])?;
    Ok(verify_value(input, &options, false))
}

// ---------------------------------------------------------------------------------------
// Certificate requests and keys.

fn parse_certificate_request(args: &[Value]) -> Result<Value> {
    let input = string("crypto.x509.parse_certificate_request", 1, &args[0])?;
    if input.len() > MAX_INPUT_LEN {
        bail!("input longer than {MAX_INPUT_LEN} bytes");
    }
    let mut data = if input.starts_with("-----BEGIN CERTIFICATE REQUEST-----") {
        input.as_bytes().to_vec()
    } else {
        std_b64(input)?
    };
    if let Ok(text) = std::str::from_utf8(&data) {
        if let Some((label, der)) = pem_blocks(text)?.into_iter().next() {
            if label != "CERTIFICATE REQUEST" {
                bail!("invalid PEM-encoded certificate signing request");
            }
            data = der;
        }
    }
    let (_, csr) = X509CertificationRequest::from_der(&data)
        .map_err(|e| anyhow!("x509: malformed certificate request: {e}"))?;
    let info = &csr.certification_request_info;
    let (pk_alg, pk) = public_key(&info.subject_pki);
    let mut sans = Sans::default();
    let mut exts = Vec::new();
    if let Some(requested) = csr.requested_extensions() {
        for x in requested {
            if let ParsedExtension::SubjectAlternativeName(san) = x {
                sans_of(&san.general_names, &mut sans);
            }
        }
    }
    // Go's deprecated `Attributes` keeps only attributes shaped as sets of (type, value)
    // sequences: the extension request, each extension as {Type, Value} (a critical one's
    // Value is its `critical` boolean, the field Go's decoder meets first).
    let mut attributes = Vec::new();
    for attr in info.iter_attributes() {
        if let x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(req) =
            attr.parsed_attribute()
        {
            let mut atvs = Vec::new();
            for x in &req.extensions {
                exts.push(obj(vec![
                    ("Id", oid_arcs(&x.oid)),
                    ("Critical", Value::from(x.critical)),
                    ("Value", bytes(x.value)),
                ]));
                atvs.push(obj(vec![
                    ("Type", oid_arcs(&x.oid)),
                    (
                        "Value",
                        if x.critical {
                            Value::from(true)
                        } else {
                            bytes(x.value)
                        },
                    ),
                ]));
            }
            attributes.push(obj(vec![
                ("Type", oid_arcs(&attr.oid)),
                ("Value", Value::from(vec![Value::from(atvs)])),
            ]));
        }
    }
    let uris: Vec<Value> = sans.uri.iter().map(|u| go_url(u)).collect();
    Ok(obj(vec![
        ("Raw", bytes(csr.as_raw())),
        ("RawTBSCertificateRequest", bytes(info.raw)),
        ("RawSubjectPublicKeyInfo", bytes(info.subject_pki.raw)),
        ("RawSubject", bytes(info.subject.as_raw())),
        ("Version", Value::from(u64::from(info.version.0))),
        ("Signature", bytes(&csr.signature_value.data)),
        (
            "SignatureAlgorithm",
            Value::from(signature_algorithm(&csr.signature_algorithm)),
        ),
        ("PublicKeyAlgorithm", Value::from(pk_alg)),
        ("PublicKey", pk),
        ("Subject", name(&info.subject)),
        ("Attributes", list(attributes)),
        ("Extensions", list(exts)),
        ("ExtraExtensions", Value::Null),
        ("DNSNames", strings(sans.dns)),
        ("EmailAddresses", strings(sans.email)),
        (
            "IPAddresses",
            list(sans.ip.iter().map(|b| ip_text(b)).collect()),
        ),
        ("URIs", list(uris)),
    ]))
}

/// The integers of a PKCS#1 `RSAPrivateKey` (version, n, e, d, p, q, dp, dq, qi).
fn rsa_private_ints(der: &[u8]) -> Option<Vec<&[u8]>> {
    let (0x30, mut seq, _) = der_tlv(der)? else {
        return None;
    };
    let mut ints = Vec::new();
    while !seq.is_empty() && ints.len() < 9 {
        let (0x02, int, rest) = der_tlv(seq)? else {
            return None;
        };
        ints.push(int);
        seq = rest;
    }
    (ints.len() == 9).then_some(ints)
}

/// A private key as Go parses it (`x509.ParsePKCS1PrivateKey`, `ParseECPrivateKey`,
/// `ParsePKCS8PrivateKey`).
enum PrivateKey {
    /// n, e, d, p, q, dp, dq, qi (big-endian).
    Rsa(Vec<Vec<u8>>),
    /// The curve's JWK name, the scalar padded to the field size, the uncompressed point.
    Ec {
        crv: &'static str,
        d: Vec<u8>,
        point: Vec<u8>,
    },
    /// The 32-byte seed and the public key.
    Ed25519 { seed: Vec<u8>, public: Vec<u8> },
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

fn curve_of(oid: &[u8]) -> Option<(&'static str, usize)> {
    match oid {
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07] => Some(("P-256", 32)),
        [0x2b, 0x81, 0x04, 0x00, 0x22] => Some(("P-384", 48)),
        [0x2b, 0x81, 0x04, 0x00, 0x23] => Some(("P-521", 66)),
        _ => None,
    }
}

/// SEC 1 `ECPrivateKey`; `curve` from the PKCS#8 algorithm when the key omits it.
fn ec_private(der: &[u8], curve: Option<&[u8]>) -> Option<PrivateKey> {
    let (0x30, seq, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(seq)? else {
        return None;
    };
    let (0x04, d, mut rest) = der_tlv(rest)? else {
        return None;
    };
    let (mut params, mut point) = (curve, None);
    while let Some((tag, body, r)) = der_tlv(rest) {
        match tag {
            0xa0 => params = der_tlv(body).and_then(|(t, oid, _)| (t == 0x06).then_some(oid)),
            0xa1 => {
                point =
                    der_tlv(body).and_then(|(t, bits, _)| (t == 0x03).then(|| bits.get(1..)))?;
            }
            _ => {}
        }
        rest = r;
    }
    let (crv, size) = curve_of(params?)?;
    if d.len() > size {
        return None;
    }
    let mut padded = vec![0u8; size - d.len()];
    padded.extend_from_slice(d);
    Some(PrivateKey::Ec {
        crv,
        d: padded,
        point: point?.to_vec(),
    })
}

/// PKCS#8 `PrivateKeyInfo`: RSA, EC or Ed25519.
fn pkcs8_private(der: &[u8]) -> Option<PrivateKey> {
    let (0x30, seq, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, _, rest) = der_tlv(seq)? else {
        return None;
    };
    let (0x30, alg, rest) = der_tlv(rest)? else {
        return None;
    };
    let (0x06, oid, params) = der_tlv(alg)? else {
        return None;
    };
    let (0x04, key, _) = der_tlv(rest)? else {
        return None;
    };
    match oid {
        OID_RSA => rsa_private(key),
        OID_EC => ec_private(key, der_tlv(params).map(|(_, c, _)| c)),
        OID_ED25519 => {
            let (0x04, seed, _) = der_tlv(key)? else {
                return None;
            };
            let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed).ok()?;
            Some(PrivateKey::Ed25519 {
                seed: seed.to_vec(),
                public: ring::signature::KeyPair::public_key(&pair)
                    .as_ref()
                    .to_vec(),
            })
        }
        _ => None,
    }
}

fn rsa_private(der: &[u8]) -> Option<PrivateKey> {
    let ints = rsa_private_ints(der)?;
    Some(PrivateKey::Rsa(
        ints[1..].iter().map(|i| i.to_vec()).collect(),
    ))
}

/// The key of one PEM block: `None` for a block that is no private key (OPA skips those),
/// an error for a key block that does not parse.
fn private_key_of_block(label: &str, der: &[u8]) -> Result<Option<PrivateKey>> {
    let key = match label {
        "RSA PRIVATE KEY" => rsa_private(der),
        "EC PRIVATE KEY" => ec_private(der, None),
        "PRIVATE KEY" => pkcs8_private(der),
        _ => return Ok(None),
    };
    key.map(Some)
        .ok_or_else(|| anyhow!("x509: failed to parse the {label} block"))
}

fn strip(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

fn b64url(b: &[u8]) -> Value {
    Value::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl PrivateKey {
    /// The key as a JWK (OPA's `parse_rsa_private_key` renders keys with its JWK library).
    fn jwk(&self) -> Value {
        match self {
            PrivateKey::Rsa(ints) => {
                let names = ["n", "e", "d", "p", "q", "dp", "dq", "qi"];
                let mut pairs: Vec<(&str, Value)> = vec![("kty", Value::from("RSA"))];
                for (n, int) in names.iter().zip(ints) {
                    pairs.push((n, b64url(strip(int))));
                }
                obj(pairs)
            }
            PrivateKey::Ec { crv, d, point } => {
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at((point.len().saturating_sub(1)) / 2);
                obj(vec![
                    ("kty", Value::from("EC")),
                    ("crv", Value::from(*crv)),
                    ("d", b64url(d)),
                    ("x", b64url(x)),
                    ("y", b64url(y)),
                ])
            }
            PrivateKey::Ed25519 { seed, public } => obj(vec![
                ("kty", Value::from("OKP")),
                ("crv", Value::from("Ed25519")),
                ("d", b64url(seed)),
                ("x", b64url(public)),
            ]),
        }
    }

    /// The key in Go's `encoding/json` form (`rsa.PrivateKey`, `ecdsa.PrivateKey`,
    /// `ed25519.PrivateKey`).
    fn go_value(&self) -> Value {
        match self {
            PrivateKey::Rsa(ints) => obj(vec![
                ("N", big(&ints[0])),
                ("E", big(&ints[1])),
                ("D", big(&ints[2])),
                ("Primes", Value::from(vec![big(&ints[3]), big(&ints[4])])),
                (
                    "Precomputed",
                    obj(vec![
                        ("Dp", big(&ints[5])),
                        ("Dq", big(&ints[6])),
                        ("Qinv", big(&ints[7])),
                        ("CRTValues", Value::new_array()),
                    ]),
                ),
            ]),
            PrivateKey::Ec { d, point, .. } => {
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at((point.len().saturating_sub(1)) / 2);
                obj(vec![
                    ("Curve", Value::new_object()),
                    ("X", big(x)),
                    ("Y", big(y)),
                    ("D", big(d)),
                ])
            }
            PrivateKey::Ed25519 { seed, public } => {
                let mut b = seed.clone();
                b.extend_from_slice(public);
                bytes(&b)
            }
        }
    }

    /// Whether it is the private half of `spki`'s public key.
    fn matches(&self, spki: &SubjectPublicKeyInfo<'_>) -> bool {
        let key = &spki.subject_public_key.data;
        match (self, spki.parsed()) {
            (PrivateKey::Rsa(ints), Ok(x509_parser::public_key::PublicKey::RSA(rsa))) => {
                strip(&ints[0]) == strip(rsa.modulus) && strip(&ints[1]) == strip(rsa.exponent)
            }
            (PrivateKey::Ec { point, .. }, Ok(x509_parser::public_key::PublicKey::EC(_))) => {
                point.as_slice() == key.as_ref()
            }
            (PrivateKey::Ed25519 { public, .. }, _) => public.as_slice() == key.as_ref(),
            _ => false,
        }
    }
}

/// PEM text of `input`: itself when it starts with a PEM header, else its base64 decoding.
fn pem_text(input: &str) -> Result<String> {
    if input.len() > MAX_INPUT_LEN {
        bail!("input longer than {MAX_INPUT_LEN} bytes");
    }
    if input.starts_with("-----BEGIN") {
        return Ok(input.to_owned());
    }
    Ok(String::from_utf8_lossy(&std_b64(input)?).into_owned())
}

/// `crypto.x509.parse_rsa_private_key(pem)`: the first private key as a JWK (`kty`, `n`, `e`,
/// `d`, `p`, `q`, `dp`, `dq`, `qi` for RSA; OPA renders EC and Ed25519 keys too); null when
/// the input holds no private key block, as in OPA.
fn parse_rsa_private_key(args: &[Value]) -> Result<Value> {
    let input = string("crypto.x509.parse_rsa_private_key", 1, &args[0])?;
    if input.is_empty() {
        bail!("input PEM data was empty");
    }
    let Ok(text) = pem_text(input) else {
        return Ok(Value::Null);
    };
    let Some((label, der)) = pem_blocks(&text)?.into_iter().next() else {
        return Ok(Value::Null);
    };
    Ok(private_key_of_block(&label, &der)?.map_or(Value::Null, |k| k.jwk()))
}

/// `crypto.parse_private_keys(keys)`: every private key of the PEM blocks (or their base64),
/// in Go's JSON forms; null for an empty input.
fn parse_private_keys(args: &[Value]) -> Result<Value> {
    let input = string("crypto.parse_private_keys", 1, &args[0])?;
    if input.is_empty() {
        return Ok(Value::Null);
    }
    let text = pem_text(input)?;
    let mut keys = Vec::new();
    for (label, der) in pem_blocks(&text)? {
        if let Some(k) = private_key_of_block(&label, &der)? {
            keys.push(k.go_value());
        }
    }
    Ok(Value::from(keys))
}

/// `crypto.x509.parse_keypair(cert, key)`: Go's `tls.Certificate` of a PEM certificate chain
/// and its private key (either may be base64-encoded PEM); the key must match the leaf.
fn parse_keypair(args: &[Value]) -> Result<Value> {
    let name = "crypto.x509.parse_keypair";
    let cert_text = pem_text(string(name, 1, &args[0])?)?;
    let key_text = pem_text(string(name, 2, &args[1])?)?;
    let mut chain = Vec::new();
    for (label, der) in pem_blocks(&cert_text)? {
        if label == "CERTIFICATE" {
            chain.push(der);
        }
    }
    if chain.is_empty() {
        bail!("tls: failed to find any PEM data in certificate input");
    }
    let mut key = None;
    for (label, der) in pem_blocks(&key_text)? {
        if let Some(k) = private_key_of_block(&label, &der)? {
            key = Some(k);
            break;
        }
    }
    let key = key.ok_or_else(|| anyhow!("tls: failed to find any PEM data in key input"))?;
    let (_, leaf) = X509Certificate::from_der(&chain[0])
        .map_err(|e| anyhow!("x509: malformed certificate: {e}"))?;
    if !key.matches(leaf.public_key()) {
        bail!("tls: private key does not match public key");
    }
    Ok(obj(vec![
        (
            "Certificate",
            Value::from(chain.iter().map(|d| bytes(d)).collect::<Vec<_>>()),
        ),
        ("PrivateKey", key.go_value()),
        ("Leaf", certificate_value(&leaf, false)),
        ("OCSPStaple", Value::Null),
        ("SignedCertificateTimestamps", Value::Null),
        ("SupportedSignatureAlgorithms", Value::Null),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_never_splits_a_character() {
        assert_eq!(percent_decode("/a%20b"), "/a b");
        assert_eq!(percent_decode("/%é%"), "/%é%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn go_url_shapes() {
        let field = |v: &Value, k: &str| v[&Value::from(k)].clone();
        let u = go_url("spiffe://td.example/ns/a%20b?x=1#f");
        assert_eq!(field(&u, "Scheme"), Value::from("spiffe"));
        assert_eq!(field(&u, "Host"), Value::from("td.example"));
        assert_eq!(field(&u, "Path"), Value::from("/ns/a b"));
        assert_eq!(field(&u, "RawQuery"), Value::from("x=1"));
        let m = go_url("mailto:a@b.c");
        assert_eq!(field(&m, "Opaque"), Value::from("a@b.c"));
        assert_eq!(field(&m, "User"), Value::Null);
    }

    #[test]
    fn hostile_inputs_are_errors_not_panics() {
        for input in [
            "",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----",
            "AAAA",
        ] {
            let _ = parse_certificates(&[Value::from(input)]);
            let _ = parse_and_verify(&[Value::from(input)]);
            let _ = parse_certificate_request(&[Value::from(input)]);
            let _ = parse_private_keys(&[Value::from(input)]);
            let _ = parse_rsa_private_key(&[Value::from(input)]);
            let _ = parse_keypair(&[Value::from(input), Value::from(input)]);
        }
        let huge = "A".repeat(MAX_INPUT_LEN + 4);
        assert!(parse_certificates(&[Value::from(huge)]).is_err());
    }
}
