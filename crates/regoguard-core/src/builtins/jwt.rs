//! `io.jwt.*`: JSON Web Token decoding, verification and signing with OPA v1's semantics.
//!
//! The core, [`verify`], knows nothing of regorus: it takes the token, the trusted keys and
//! the constraints and answers [`Verified`] or a [`Reason`], so the same code can verify a
//! bearer token outside a policy (issue 15's `JWTIdentity`). The builtins below only convert
//! `Value`s in and out and apply OPA's choice between an error (the expression is undefined)
//! and `[false, {}, {}]` ([`Reason::is_error`]).
//!
//! Signatures are checked with `ring` (constant-time HMAC comparison, RSA PKCS#1 v1.5 and PSS,
//! ECDSA P-256/P-384, Ed25519) and `RustCrypto`'s `p521` (ES512, which ring lacks). One
//! deliberate difference from OPA, a refusal: RSA keys below 2048 bits do not verify.
//! `alg: none` is never accepted. Tokens and keys are bounded
//! ([`MAX_TOKEN_LEN`], [`MAX_KEY_LEN`]) so a huge input costs nothing but its length check.

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use regorus::Value;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, UnparsedPublicKey};
use serde_json::{Map, Value as Json};

use super::Builtin;
use crate::eval_context;

/// The longest token accepted (bytes). Larger ones are an error before any decoding.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// The longest key material accepted (a PEM block, a JWKS document, a secret), in bytes.
pub const MAX_KEY_LEN: usize = 256 * 1024;
/// How deep nested JWTs (`cty: JWT`) may go.
const MAX_NESTING: usize = 8;

/// This family's builtins. `decode_verify` reads the clock (exp/nbf) unless given `time`.
pub const BUILTINS: &[Builtin] = &[
    Builtin::pure("io.jwt.decode", 1, decode_builtin),
    Builtin {
        name: "io.jwt.decode_verify",
        nargs: 2,
        f: decode_verify_builtin,
        nondeterministic: true,
    },
    Builtin::pure("io.jwt.encode_sign", 3, encode_sign_builtin),
    Builtin::pure("io.jwt.encode_sign_raw", 3, encode_sign_raw_builtin),
    Builtin::pure("io.jwt.verify_hs256", 2, |a| verify_builtin(Alg::HS256, a)),
    Builtin::pure("io.jwt.verify_hs384", 2, |a| verify_builtin(Alg::HS384, a)),
    Builtin::pure("io.jwt.verify_hs512", 2, |a| verify_builtin(Alg::HS512, a)),
    Builtin::pure("io.jwt.verify_rs256", 2, |a| verify_builtin(Alg::RS256, a)),
    Builtin::pure("io.jwt.verify_rs384", 2, |a| verify_builtin(Alg::RS384, a)),
    Builtin::pure("io.jwt.verify_rs512", 2, |a| verify_builtin(Alg::RS512, a)),
    Builtin::pure("io.jwt.verify_ps256", 2, |a| verify_builtin(Alg::PS256, a)),
    Builtin::pure("io.jwt.verify_ps384", 2, |a| verify_builtin(Alg::PS384, a)),
    Builtin::pure("io.jwt.verify_ps512", 2, |a| verify_builtin(Alg::PS512, a)),
    Builtin::pure("io.jwt.verify_es256", 2, |a| verify_builtin(Alg::ES256, a)),
    Builtin::pure("io.jwt.verify_es384", 2, |a| verify_builtin(Alg::ES384, a)),
    Builtin::pure("io.jwt.verify_es512", 2, |a| verify_builtin(Alg::ES512, a)),
    Builtin::pure("io.jwt.verify_eddsa", 2, |a| verify_builtin(Alg::EdDSA, a)),
];

// ---------------------------------------------------------------------------------------
// The reusable core.

/// A JWS algorithm of OPA's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl Alg {
    /// The algorithm named `s` in a token header; `none` and unknown names are `None`.
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            _ => return None,
        })
    }

    /// Its name as written in a header.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
        }
    }
}

/// The elliptic curve of an EC key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Curve {
    P256,
    P384,
    P521,
}

/// Key material to check a signature with.
#[derive(Clone, Debug)]
pub enum Key {
    /// An HMAC secret (a `secret` constraint, or a JWK of `kty: oct`).
    Secret(Vec<u8>),
    /// An RSA public key: modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// An EC public key as an uncompressed SEC1 point (`04 || x || y`).
    Ec {
        /// Its curve.
        curve: Curve,
        /// The point.
        point: Vec<u8>,
    },
    /// An Ed25519 public key (32 bytes).
    Ed25519(Vec<u8>),
}

/// A trusted key, with the `kid` and `alg` its JWK named (if any).
#[derive(Clone, Debug)]
pub struct VerificationKey {
    /// The JWK's `kid`.
    pub kid: Option<String>,
    /// The JWK's `alg`.
    pub alg: Option<String>,
    /// The key.
    pub key: Key,
}

/// What a token must satisfy (OPA's `decode_verify` constraints).
#[derive(Clone, Debug, Default)]
pub struct Constraints {
    /// Public keys (`cert`: PEM certificate or public key, or a JWK/JWKS).
    pub keys: Vec<VerificationKey>,
    /// An HMAC secret (`secret`).
    pub secret: Option<Vec<u8>>,
    /// The required `alg`.
    pub alg: Option<String>,
    /// The required `iss`.
    pub iss: Option<String>,
    /// The required audience (`aud`).
    pub aud: Option<String>,
    /// The time to check `exp`/`nbf` against (Unix ns); `None` is the evaluation's clock.
    pub time_ns: Option<f64>,
}

/// A token that verified: its decoded header and payload.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The (innermost) header.
    pub header: Map<String, Json>,
    /// The payload (claims).
    pub payload: Map<String, Json>,
    /// The payload's `exp`, in seconds, if any.
    pub exp: Option<f64>,
}

/// Why a token did not verify.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// The token or the key material is malformed or unusable (OPA: a builtin error).
    Malformed(String),
    /// The header names an algorithm OPA's list doesn't know (`none` included).
    UnknownAlgorithm(String),
    /// The token is longer than [`MAX_TOKEN_LEN`].
    TooLarge,
    /// The header's `alg` differs from the `alg` constraint.
    AlgorithmMismatch,
    /// No trusted key verifies the signature.
    BadSignature,
    /// `iss` missing or different from the constraint.
    Issuer,
    /// `aud` missing, different, or present without an `aud` constraint.
    Audience,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet; the token becomes valid at this instant (Unix ns).
    NotYetValid(u64),
}

impl Reason {
    /// Whether OPA answers this with an error (the expression is undefined) rather than
    /// `[false, {}, {}]`.
    pub fn is_error(&self) -> bool {
        matches!(self, Reason::Malformed(_))
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Malformed(m) => write!(f, "{m}"),
            Reason::UnknownAlgorithm(a) => write!(f, "unknown JWS algorithm: {a}"),
            Reason::TooLarge => write!(f, "token longer than {MAX_TOKEN_LEN} bytes"),
            Reason::AlgorithmMismatch => write!(f, "algorithm does not match the constraint"),
            Reason::BadSignature => write!(f, "signature not verified"),
            Reason::Issuer => write!(f, "wrong issuer"),
            Reason::Audience => write!(f, "wrong audience"),
            Reason::Expired => write!(f, "token expired"),
            Reason::NotYetValid(_) => write!(f, "token not yet valid"),
        }
    }
}

fn malformed(m: impl Into<String>) -> Reason {
    Reason::Malformed(m.into())
}

const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Base64url decoding as OPA does it: padding optional.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    B64URL.decode(s).ok()
}

/// The three segments of a compact JWS.
struct Parts<'a> {
    header_b64: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
    header: Map<String, Json>,
}

fn split(token: &str) -> Result<Parts<'_>, Reason> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reason::TooLarge);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s)) = (it.next(), it.next(), it.next()) else {
        return Err(malformed("encoded JWT had no period separators"));
    };
    if it.next().is_some() {
        return Err(malformed("encoded JWT must have 3 sections"));
    }
    let header =
        json_object(&b64url_decode(h).ok_or_else(|| malformed("JWT header had invalid encoding"))?)
            .ok_or_else(|| malformed("JWT header is not a JSON object"))?;
    let signature =
        b64url_decode(s).ok_or_else(|| malformed("JWT signature had invalid encoding"))?;
    Ok(Parts {
        header_b64: h,
        payload_b64: p,
        signature,
        header,
    })
}

fn json_object(bytes: &[u8]) -> Option<Map<String, Json>> {
    match serde_json::from_slice(bytes) {
        Ok(Json::Object(m)) => Some(m),
        _ => None,
    }
}

fn header_str<'a>(h: &'a Map<String, Json>, k: &str) -> Result<Option<&'a str>, Reason> {
    match h.get(k) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(format!("JWT header {k} must be a string"))),
    }
}

/// Whether `signature` over `signed` verifies with `key` for `alg`. A key that cannot serve
/// the algorithm (an RSA key for HS256: the "algorithm confusion" attack) never verifies.
fn check(alg: Alg, key: &Key, signed: &[u8], signature: &[u8]) -> bool {
    match (alg, key) {
        (Alg::HS256 | Alg::HS384 | Alg::HS512, Key::Secret(secret)) => {
            let a = match alg {
                Alg::HS256 => ring::hmac::HMAC_SHA256,
                Alg::HS384 => ring::hmac::HMAC_SHA384,
                _ => ring::hmac::HMAC_SHA512,
            };
            // ring::hmac::verify compares in constant time.
            ring::hmac::verify(&ring::hmac::Key::new(a, secret), signed, signature).is_ok()
        }
        (
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
            Key::Rsa { n, e },
        ) => {
            let params: &sig::RsaParameters = match alg {
                Alg::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Alg::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Alg::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Alg::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Alg::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            sig::RsaPublicKeyComponents { n, e }
                .verify(params, signed, signature)
                .is_ok()
        }
        (
            Alg::ES256,
            Key::Ec {
                curve: Curve::P256,
                point,
            },
        ) => UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
            .verify(signed, signature)
            .is_ok(),
        (
            Alg::ES384,
            Key::Ec {
                curve: Curve::P384,
                point,
            },
        ) => UnparsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, point)
            .verify(signed, signature)
            .is_ok(),
        (
            Alg::ES512,
            Key::Ec {
                curve: Curve::P521,
                point,
            },
        ) => p521_verify(point, signed, signature),
        (Alg::EdDSA, Key::Ed25519(k)) => UnparsedPublicKey::new(&sig::ED25519, k)
            .verify(signed, signature)
            .is_ok(),
        _ => false,
    }
}

/// ES512: ECDSA over P-521 with SHA-512, the signature as the fixed 132-byte `r || s` of JWS.
/// ring has no P-521; `RustCrypto`'s `p521` checks it (and refuses a point off the curve).
fn p521_verify(point: &[u8], signed: &[u8], signature: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier;
    let (Ok(key), Ok(sig)) = (
        p521::ecdsa::VerifyingKey::from_sec1_bytes(point),
        p521::ecdsa::Signature::from_slice(signature),
    ) else {
        return false;
    };
    key.verify(signed, &sig).is_ok()
}

/// Whether one of `keys` verifies the token's signature (OPA's `io.jwt.verify_*`: the header's
/// own `alg` is not consulted, the builtin names the algorithm).
///
/// # Errors
/// A malformed token.
pub fn verify_signature(alg: Alg, token: &str, keys: &[VerificationKey]) -> Result<bool, Reason> {
    let parts = split(token)?;
    let signed = signed_part(&parts);
    Ok(keys
        .iter()
        .any(|k| check(alg, &k.key, signed.as_bytes(), &parts.signature)))
}

fn signed_part(parts: &Parts<'_>) -> String {
    let mut s = String::with_capacity(parts.header_b64.len() + 1 + parts.payload_b64.len());
    s.push_str(parts.header_b64);
    s.push('.');
    s.push_str(parts.payload_b64);
    s
}

/// Verifies `token` as OPA's `io.jwt.decode_verify` does: signature (per `constraints`), then
/// `iss`, `aud`, `exp`, `nbf`. `now_ns` is the moment to check against when `constraints`
/// has no `time`.
///
/// # Errors
/// A [`Reason`]; [`Reason::is_error`] tells OPA's error answers from its `false` ones.
pub fn verify(token: &str, constraints: &Constraints, now_ns: u64) -> Result<Verified, Reason> {
    if constraints.keys.is_empty() == constraints.secret.is_none() {
        return Err(malformed(
            "exactly one of 'cert' or 'secret' must be specified",
        ));
    }
    let mut token = token.to_owned();
    let mut nesting = 0;
    let (header, payload_bytes) = loop {
        let parts = split(&token)?;
        let alg_name = header_str(&parts.header, "alg")?.unwrap_or("");
        if alg_name.is_empty() {
            return Err(Reason::BadSignature);
        }
        if constraints.alg.as_deref().is_some_and(|a| a != alg_name) {
            return Err(Reason::AlgorithmMismatch);
        }
        let alg =
            Alg::parse(alg_name).ok_or_else(|| Reason::UnknownAlgorithm(alg_name.to_owned()))?;
        let kid = header_str(&parts.header, "kid")?;
        let signed = signed_part(&parts);
        let verified = if let Some(secret) = &constraints.secret {
            check(
                alg,
                &Key::Secret(secret.clone()),
                signed.as_bytes(),
                &parts.signature,
            )
        } else {
            constraints
                .keys
                .iter()
                .filter(|k| match (&k.kid, kid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                })
                .any(|k| check(alg, &k.key, signed.as_bytes(), &parts.signature))
        };
        if !verified {
            return Err(Reason::BadSignature);
        }
        let payload = b64url_decode(parts.payload_b64)
            .ok_or_else(|| malformed("JWT payload had invalid encoding"))?;
        let nested =
            header_str(&parts.header, "cty")?.is_some_and(|c| c.eq_ignore_ascii_case("JWT"));
        if nested {
            nesting += 1;
            if nesting > MAX_NESTING {
                return Err(malformed("JWT nested too deeply"));
            }
            token = String::from_utf8(payload).map_err(|_| malformed("nested JWT is not UTF-8"))?;
            continue;
        }
        break (parts.header, payload);
    };
    let payload =
        json_object(&payload_bytes).ok_or_else(|| malformed("JWT payload is not a JSON object"))?;

    if let Some(iss) = &constraints.iss {
        if payload.get("iss").and_then(Json::as_str) != Some(iss.as_str()) {
            return Err(Reason::Issuer);
        }
    }
    match payload.get("aud") {
        Some(aud) => {
            let want = constraints.aud.as_deref().ok_or(Reason::Audience)?;
            let ok = match aud {
                Json::String(s) => s == want,
                Json::Array(a) => a.iter().any(|v| v.as_str() == Some(want)),
                _ => false,
            };
            if !ok {
                return Err(Reason::Audience);
            }
        }
        None if constraints.aud.is_some() => return Err(Reason::Audience),
        None => {}
    }
    #[allow(clippy::cast_precision_loss)]
    let now_secs = constraints.time_ns.unwrap_or(now_ns as f64) / 1e9;
    let mut exp_claim = None;
    if let Some(exp) = payload.get("exp") {
        let exp = exp
            .as_f64()
            .ok_or_else(|| malformed("exp value must be a number"))?;
        if now_secs >= exp {
            return Err(Reason::Expired);
        }
        exp_claim = Some(exp);
    }
    if let Some(nbf) = payload.get("nbf") {
        let nbf = nbf
            .as_f64()
            .ok_or_else(|| malformed("nbf value must be a number"))?;
        if now_secs < nbf {
            return Err(Reason::NotYetValid(secs_to_ns(nbf)));
        }
    }
    Ok(Verified {
        header,
        payload,
        exp: exp_claim,
    })
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn secs_to_ns(s: f64) -> u64 {
    if s <= 0.0 {
        0
    } else if s >= 1.8e10 {
        u64::MAX
    } else {
        (s * 1e9) as u64
    }
}

// ---------------------------------------------------------------------------------------
// Keys: PEM (certificate or public key) and JWK / JWKS.

/// Parses OPA's `cert` argument: one PEM `CERTIFICATE` or `PUBLIC KEY` block, or else a JWK
/// or JWK set given as JSON text.
///
/// # Errors
/// Anything else, or a key of a type no algorithm here uses.
pub fn parse_keys(text: &str) -> Result<Vec<VerificationKey>, Reason> {
    if text.len() > MAX_KEY_LEN {
        return Err(malformed(format!("key longer than {MAX_KEY_LEN} bytes")));
    }
    if let Some((label, der)) = pem_decode(text)? {
        let spki = match label.as_str() {
            "CERTIFICATE" => {
                spki_of_certificate(&der).ok_or_else(|| malformed("failed to parse certificate"))?
            }
            "PUBLIC KEY" => der,
            _ => {
                return Err(malformed(
                    "failed to extract a Key from the PEM certificate",
                ))
            }
        };
        let key = key_of_spki(&spki).ok_or_else(|| malformed("failed to parse public key"))?;
        return Ok(vec![VerificationKey {
            kid: None,
            alg: None,
            key,
        }]);
    }
    let doc: Json = serde_json::from_str(text)
        .map_err(|e| malformed(format!("failed to parse a JWK key (set): {e}")))?;
    let jwks: Vec<&Json> = match doc.get("keys") {
        Some(Json::Array(keys)) => keys.iter().collect(),
        Some(_) => {
            return Err(malformed(
                "failed to parse a JWK key (set): keys must be an array",
            ))
        }
        None => vec![&doc],
    };
    jwks.into_iter().map(key_of_jwk).collect()
}

/// The first PEM block of `text` (label, DER), `None` when `text` has no PEM block at all.
fn pem_decode(text: &str) -> Result<Option<(String, Vec<u8>)>, Reason> {
    let Some(start) = text.find("-----BEGIN ") else {
        return Ok(None);
    };
    let rest = &text[start + 11..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| malformed("bad PEM block"))?;
    let label = &rest[..label_end];
    let body_and_end = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let body_end = body_and_end
        .find(&end_marker)
        .ok_or_else(|| malformed("bad PEM block"))?;
    let body: String = body_and_end[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| malformed("bad PEM base64"))?;
    let after = &body_and_end[body_end + end_marker.len()..];
    if !after.trim().is_empty() {
        return Err(malformed("extra data after a PEM certificate block"));
    }
    Ok(Some((label.to_owned(), der)))
}

/// One DER TLV: (tag, contents, rest); also x509.rs's.
pub(crate) fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, mut b) = b.split_first()?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &x in &b[..n] {
            len = (len << 8) | usize::from(x);
        }
        b = &b[n..];
        len
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// The `SubjectPublicKeyInfo` (whole TLV) of an X.509 certificate.
fn spki_of_certificate(der: &[u8]) -> Option<Vec<u8>> {
    let (0x30, cert, _) = der_tlv(der)? else {
        return None;
    };
    let (0x30, tbs, _) = der_tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    let (tag, _, r) = der_tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        rest = der_tlv(rest)?.2;
    }
    let (tag, _, after) = der_tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    Some(rest[..rest.len() - after.len()].to_vec())
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[i..].to_vec()
}

/// A key of a `SubjectPublicKeyInfo`.
fn key_of_spki(spki: &[u8]) -> Option<Key> {
    let (0x30, body, _) = der_tlv(spki)? else {
        return None;
    };
    let (0x30, alg_id, rest) = der_tlv(body)? else {
        return None;
    };
    let (0x03, bits, _) = der_tlv(rest)? else {
        return None;
    };
    let (&0, bits) = bits.split_first()? else {
        return None;
    };
    let (0x06, oid, params) = der_tlv(alg_id)? else {
        return None;
    };
    if oid == OID_RSA {
        let (0x30, seq, _) = der_tlv(bits)? else {
            return None;
        };
        let (0x02, n, r) = der_tlv(seq)? else {
            return None;
        };
        let (0x02, e, _) = der_tlv(r)? else {
            return None;
        };
        Some(Key::Rsa {
            n: strip_zeros(n),
            e: strip_zeros(e),
        })
    } else if oid == OID_EC {
        let (0x06, curve, _) = der_tlv(params)? else {
            return None;
        };
        let curve = match curve {
            c if c == OID_P256 => Curve::P256,
            c if c == OID_P384 => Curve::P384,
            c if c == OID_P521 => Curve::P521,
            _ => return None,
        };
        Some(Key::Ec {
            curve,
            point: bits.to_vec(),
        })
    } else if oid == OID_ED25519 {
        Some(Key::Ed25519(bits.to_vec()))
    } else {
        None
    }
}

fn jwk_field(jwk: &Json, k: &str) -> Result<Vec<u8>, Reason> {
    jwk.get(k)
        .and_then(Json::as_str)
        .and_then(b64url_decode)
        .ok_or_else(|| {
            malformed(format!(
                "failed to parse a JWK key (set): missing or bad {k}"
            ))
        })
}

fn key_of_jwk(jwk: &Json) -> Result<VerificationKey, Reason> {
    let s = |k: &str| jwk.get(k).and_then(Json::as_str).map(str::to_owned);
    let key = match jwk.get("kty").and_then(Json::as_str) {
        Some("RSA") => Key::Rsa {
            n: strip_zeros(&jwk_field(jwk, "n")?),
            e: strip_zeros(&jwk_field(jwk, "e")?),
        },
        Some("EC") => {
            let curve = match jwk.get("crv").and_then(Json::as_str) {
                Some("P-256") => Curve::P256,
                Some("P-384") => Curve::P384,
                Some("P-521") => Curve::P521,
                _ => {
                    return Err(malformed(
                        "failed to parse a JWK key (set): unsupported crv",
                    ))
                }
            };
            let mut point = vec![4u8];
            point.extend(jwk_field(jwk, "x")?);
            point.extend(jwk_field(jwk, "y")?);
            Key::Ec { curve, point }
        }
        Some("OKP") if jwk.get("crv").and_then(Json::as_str) == Some("Ed25519") => {
            Key::Ed25519(jwk_field(jwk, "x")?)
        }
        Some("oct") => Key::Secret(jwk_field(jwk, "k")?),
        _ => {
            return Err(malformed(
                "failed to parse a JWK key (set): unsupported kty",
            ))
        }
    };
    Ok(VerificationKey {
        kid: s("kid"),
        alg: s("alg"),
        key,
    })
}

// ---------------------------------------------------------------------------------------
// Signing (encode_sign, encode_sign_raw): the key is a JWK with its private part.

#[allow(clippy::many_single_char_names)] // the JWK's own field names
fn sign(alg: Alg, jwk: &Json, signing_input: &[u8]) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let f = |k: &str| jwk_field(jwk, k).map_err(|e| anyhow!("{e}"));
    let kty = jwk.get("kty").and_then(Json::as_str).unwrap_or("");
    match (alg, kty) {
        (Alg::HS256 | Alg::HS384 | Alg::HS512, "oct") => {
            let a = match alg {
                Alg::HS256 => ring::hmac::HMAC_SHA256,
                Alg::HS384 => ring::hmac::HMAC_SHA384,
                _ => ring::hmac::HMAC_SHA512,
            };
            Ok(
                ring::hmac::sign(&ring::hmac::Key::new(a, &f("k")?), signing_input)
                    .as_ref()
                    .to_vec(),
            )
        }
        (Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512, "RSA") => {
            let (n, e, d, p, q, dp, dq, qi) = (
                f("n")?,
                f("e")?,
                f("d")?,
                f("p")?,
                f("q")?,
                f("dp")?,
                f("dq")?,
                f("qi")?,
            );
            let pair = ring::rsa::KeyPair::from_components(&ring::rsa::KeyPairComponents {
                public_key: ring::rsa::PublicKeyComponents {
                    n: strip_zeros(&n),
                    e: strip_zeros(&e),
                },
                d: &d,
                p: &p,
                q: &q,
                dP: &dp,
                dQ: &dq,
                qInv: &qi,
            })
            .map_err(|e| anyhow!("invalid RSA key: {e}"))?;
            let enc: &'static dyn sig::RsaEncoding = match alg {
                Alg::RS256 => &sig::RSA_PKCS1_SHA256,
                Alg::RS384 => &sig::RSA_PKCS1_SHA384,
                Alg::RS512 => &sig::RSA_PKCS1_SHA512,
                Alg::PS256 => &sig::RSA_PSS_SHA256,
                Alg::PS384 => &sig::RSA_PSS_SHA384,
                _ => &sig::RSA_PSS_SHA512,
            };
            let mut out = vec![0u8; pair.public().modulus_len()];
            pair.sign(enc, &rng, signing_input, &mut out)
                .map_err(|_| anyhow!("RSA signing failed"))?;
            Ok(out)
        }
        (Alg::ES256 | Alg::ES384, "EC") => {
            let a = if alg == Alg::ES256 {
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let mut point = vec![4u8];
            point.extend(f("x")?);
            point.extend(f("y")?);
            let pair =
                sig::EcdsaKeyPair::from_private_key_and_public_key(a, &f("d")?, &point, &rng)
                    .map_err(|e| anyhow!("invalid EC key: {e}"))?;
            Ok(pair
                .sign(&rng, signing_input)
                .map_err(|_| anyhow!("ECDSA signing failed"))?
                .as_ref()
                .to_vec())
        }
        (Alg::ES512, "EC") => {
            use p521::ecdsa::signature::Signer;
            let key = p521::ecdsa::SigningKey::from_slice(&f("d")?)
                .map_err(|e| anyhow!("invalid EC key: {e}"))?;
            let mut point = vec![4u8];
            point.extend(f("x")?);
            point.extend(f("y")?);
            // As ring does for P-256/P-384: the private key must match the JWK's public point.
            let public = p521::ecdsa::VerifyingKey::from(&key);
            if public.to_encoded_point(false).as_bytes() != point.as_slice() {
                bail!("invalid EC key: the public point does not match the private key");
            }
            let sig: p521::ecdsa::Signature = key.sign(signing_input);
            Ok(sig.to_bytes().to_vec())
        }
        (Alg::EdDSA, "OKP") => {
            let pair = sig::Ed25519KeyPair::from_seed_and_public_key(&f("d")?, &f("x")?)
                .map_err(|e| anyhow!("invalid Ed25519 key: {e}"))?;
            Ok(pair.sign(signing_input).as_ref().to_vec())
        }
        _ => bail!("the key (kty {kty:?}) cannot sign {}", alg.name()),
    }
}

/// Compact JWS of the raw header and payload texts, signed with `jwk`.
///
/// # Errors
/// A header that is not a JSON object naming a known `alg`, or an unusable key.
pub fn encode_sign_raw(header: &str, payload: &str, jwk: &Json) -> Result<String> {
    if header.len() + payload.len() > MAX_TOKEN_LEN {
        bail!("token longer than {MAX_TOKEN_LEN} bytes");
    }
    let h = json_object(header.as_bytes()).ok_or_else(|| anyhow!("invalid JWS header"))?;
    let alg_name = h.get("alg").and_then(Json::as_str).unwrap_or("");
    let alg =
        Alg::parse(alg_name).ok_or_else(|| anyhow!("unknown signature algorithm: {alg_name}"))?;
    let mut out = B64URL.encode(header);
    out.push('.');
    out.push_str(&B64URL.encode(payload));
    let s = sign(alg, jwk, out.as_bytes())?;
    out.push('.');
    out.push_str(&B64URL.encode(s));
    Ok(out)
}

/// JSON as Go's `encoding/json` writes it (OPA serializes `encode_sign`'s objects that way):
/// sorted keys, compact, and `<`, `>`, `&`, U+2028, U+2029 escaped.
fn go_json(v: &Json) -> Result<String> {
    let s = serde_json::to_string(v)?;
    Ok(s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

// ---------------------------------------------------------------------------------------
// The builtins.

fn str_arg<'a>(name: &str, n: usize, v: &'a Value) -> Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => bail!("{name}: operand {n} must be string"),
    }
}

fn to_json(v: &Value) -> Result<Json> {
    Ok(serde_json::to_value(v)?)
}

fn obj(m: Map<String, Json>) -> Value {
    Value::from(Json::Object(m))
}

/// `io.jwt.decode(jwt)`: `[header, payload, signature_hex]`, nothing verified.
fn decode_builtin(args: &[Value]) -> Result<Value> {
    let mut token = str_arg("io.jwt.decode", 1, &args[0])?.to_owned();
    for _ in 0..=MAX_NESTING {
        let parts = split(&token).map_err(|e| anyhow!("{e}"))?;
        let payload = b64url_decode(parts.payload_b64)
            .ok_or_else(|| anyhow!("JWT payload had invalid encoding"))?;
        if header_str(&parts.header, "cty")
            .map_err(|e| anyhow!("{e}"))?
            .is_some_and(|c| c.eq_ignore_ascii_case("JWT"))
        {
            token = String::from_utf8(payload)?;
            continue;
        }
        let payload =
            json_object(&payload).ok_or_else(|| anyhow!("JWT payload is not a JSON object"))?;
        let hex: String = parts.signature.iter().map(|b| format!("{b:02x}")).collect();
        return Ok(Value::from(vec![
            obj(parts.header),
            obj(payload),
            Value::from(hex),
        ]));
    }
    bail!("JWT nested too deeply")
}

fn constraints_of(v: &Value) -> Result<Constraints> {
    let Value::Object(m) = v else {
        bail!("io.jwt.decode_verify: operand 2 must be object")
    };
    let mut c = Constraints::default();
    for (k, v) in m.iter() {
        let key = k
            .as_string()
            .map_err(|_| anyhow!("token constraint keys must be strings"))?;
        let text = || -> Result<String> {
            match v {
                Value::String(s) => Ok(s.to_string()),
                _ => bail!("{key} constraint: must be a string"),
            }
        };
        match key.as_ref() {
            "cert" => c.keys = parse_keys(&text()?).map_err(|e| anyhow!("{e}"))?,
            "secret" => {
                let s = text()?;
                if s.len() > MAX_KEY_LEN {
                    bail!("secret longer than {MAX_KEY_LEN} bytes");
                }
                c.secret = Some(s.into_bytes());
            }
            "alg" => c.alg = Some(text()?),
            "iss" => c.iss = Some(text()?),
            "aud" => c.aud = Some(text()?),
            "time" => match v {
                Value::Number(_) => {
                    c.time_ns = Some(
                        v.as_f64()
                            .map_err(|_| anyhow!("time constraint: bad number"))?,
                    );
                }
                _ => bail!("time constraint: must be a number"),
            },
            other => bail!("unknown token validation constraint: {other}"),
        }
    }
    Ok(c)
}

/// `io.jwt.decode_verify(jwt, constraints)`: `[true, header, payload]` or `[false, {}, {}]`.
fn decode_verify_builtin(args: &[Value]) -> Result<Value> {
    let token = str_arg("io.jwt.decode_verify", 1, &args[0])?;
    let c = constraints_of(&args[1])?;
    let clocked = c.time_ns.is_none();
    let now = if clocked {
        eval_context::now_unix_ns()
    } else {
        0
    };
    match verify(token, &c, now) {
        Ok(v) => {
            if clocked {
                if let Some(exp) = v.exp {
                    eval_context::valid_until(secs_to_ns(exp));
                }
            }
            Ok(Value::from(vec![
                Value::from(true),
                obj(v.header),
                obj(v.payload),
            ]))
        }
        Err(r) if r.is_error() => bail!("{r}"),
        Err(r) => {
            if let (true, Reason::NotYetValid(nbf)) = (clocked, &r) {
                eval_context::valid_until(*nbf);
            }
            Ok(Value::from(vec![
                Value::from(false),
                Value::new_object(),
                Value::new_object(),
            ]))
        }
    }
}

fn verify_builtin(alg: Alg, args: &[Value]) -> Result<Value> {
    let name = "io.jwt.verify";
    let token = str_arg(name, 1, &args[0])?;
    let key = str_arg(name, 2, &args[1])?;
    let keys = match alg {
        Alg::HS256 | Alg::HS384 | Alg::HS512 => {
            if key.len() > MAX_KEY_LEN {
                bail!("secret longer than {MAX_KEY_LEN} bytes");
            }
            vec![VerificationKey {
                kid: None,
                alg: None,
                key: Key::Secret(key.as_bytes().to_vec()),
            }]
        }
        _ => parse_keys(key).map_err(|e| anyhow!("{e}"))?,
    };
    match verify_signature(alg, token, &keys) {
        Ok(v) => Ok(Value::from(v)),
        Err(Reason::TooLarge) => Ok(Value::from(false)),
        Err(e) => bail!("{e}"),
    }
}

fn encode_sign_builtin(args: &[Value]) -> Result<Value> {
    for (i, a) in args.iter().enumerate() {
        if !matches!(a, Value::Object(_)) {
            bail!("io.jwt.encode_sign: operand {} must be object", i + 1);
        }
    }
    let header = go_json(&to_json(&args[0])?)?;
    let payload = go_json(&to_json(&args[1])?)?;
    Ok(Value::from(encode_sign_raw(
        &header,
        &payload,
        &to_json(&args[2])?,
    )?))
}

fn encode_sign_raw_builtin(args: &[Value]) -> Result<Value> {
    let name = "io.jwt.encode_sign_raw";
    let header = str_arg(name, 1, &args[0])?;
    let payload = str_arg(name, 2, &args[1])?;
    let key = str_arg(name, 3, &args[2])?;
    if key.len() > MAX_KEY_LEN {
        bail!("key longer than {MAX_KEY_LEN} bytes");
    }
    let jwk: Json = serde_json::from_str(key)?;
    Ok(Value::from(encode_sign_raw(header, payload, &jwk)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs256(header: &str, payload: &str, secret: &str) -> String {
        let jwk = serde_json::json!({"kty": "oct", "k": B64URL.encode(secret)});
        encode_sign_raw(header, payload, &jwk).unwrap()
    }

    fn secret(s: &str) -> Constraints {
        Constraints {
            secret: Some(s.as_bytes().to_vec()),
            ..Constraints::default()
        }
    }

    #[test]
    fn hs256_round_trip_and_tamper() {
        let t = hs256(r#"{"alg":"HS256"}"#, r#"{"sub":"a","exp":2000}"#, "k");
        let v = verify(&t, &secret("k"), 1_000 * 1_000_000_000).unwrap();
        assert_eq!(v.payload["sub"], "a");
        assert_eq!(v.exp, Some(2000.0));
        assert_eq!(
            verify(&t, &secret("x"), 0).unwrap_err(),
            Reason::BadSignature
        );
        assert_eq!(
            verify(&t, &secret("k"), 2_000 * 1_000_000_000).unwrap_err(),
            Reason::Expired
        );
        let mut bad = t.clone();
        bad.push('A');
        assert!(verify(&bad, &secret("k"), 0).is_err());
    }

    #[test]
    fn alg_none_and_oversized_are_refused() {
        let none = format!(
            "{}.{}.",
            B64URL.encode(r#"{"alg":"none"}"#),
            B64URL.encode(r#"{"sub":"a"}"#)
        );
        assert_eq!(
            verify(&none, &secret("k"), 0).unwrap_err(),
            Reason::UnknownAlgorithm("none".into())
        );
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify(&huge, &secret("k"), 0).unwrap_err(),
            Reason::TooLarge
        );
    }

    #[test]
    fn nbf_reports_when_it_becomes_valid() {
        let t = hs256(r#"{"alg":"HS256"}"#, r#"{"nbf":5}"#, "k");
        assert_eq!(
            verify(&t, &secret("k"), 1_000_000_000).unwrap_err(),
            Reason::NotYetValid(5_000_000_000)
        );
        assert!(verify(&t, &secret("k"), 5_000_000_000).is_ok());
    }

    /// A verified token bounds the decision by its `exp`; a not-yet-valid one by its `nbf`;
    /// a `time` constraint reads no clock and reports nothing.
    #[test]
    fn decode_verify_reports_how_long_its_answer_holds() {
        let run = |payload: &str, extra: Option<(&str, u64)>| {
            let t = hs256(r#"{"alg":"HS256"}"#, payload, "k");
            let mut c = vec![(Value::from("secret"), Value::from("k"))];
            if let Some((k, v)) = extra {
                c.push((Value::from(k), Value::from(v)));
            }
            let scope = eval_context::Scope::begin_at(1_000_000_000_000);
            let out = decode_verify_builtin(&[
                Value::from(t),
                Value::from(c.into_iter().collect::<std::collections::BTreeMap<_, _>>()),
            ]);
            (out.unwrap()[0].clone(), scope.finish().until_unix_ns)
        };
        assert_eq!(
            run(r#"{"exp":2000}"#, None),
            (Value::from(true), Some(2_000_000_000_000))
        );
        assert_eq!(
            run(r#"{"nbf":3000}"#, None),
            (Value::from(false), Some(3_000_000_000_000))
        );
        assert_eq!(run(r#"{"exp":500}"#, None), (Value::from(false), None));
        assert_eq!(
            run(r#"{"exp":2000}"#, Some(("time", 1_500_000_000_000))),
            (Value::from(true), None)
        );
    }
}
