//! `crypto.*` digests and HMACs of OPA v1: hex-encoded lowercase, as OPA returns them.
//! `crypto.hmac.equal` compares in constant time.

use anyhow::{bail, Result};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use regorus::Value;
use sha2::Digest;
use subtle::ConstantTimeEq;

use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[
    Builtin::pure("crypto.md5", 1, |a| digest::<md5::Md5>("crypto.md5", a)),
    Builtin::pure("crypto.sha1", 1, |a| digest::<sha1::Sha1>("crypto.sha1", a)),
    Builtin::pure("crypto.sha256", 1, |a| {
        digest::<sha2::Sha256>("crypto.sha256", a)
    }),
    Builtin::pure("crypto.hmac.md5", 2, |a| {
        hmac::<Hmac<md5::Md5>>("crypto.hmac.md5", a)
    }),
    Builtin::pure("crypto.hmac.sha1", 2, |a| {
        hmac::<Hmac<sha1::Sha1>>("crypto.hmac.sha1", a)
    }),
    Builtin::pure("crypto.hmac.sha256", 2, |a| {
        hmac::<Hmac<sha2::Sha256>>("crypto.hmac.sha256", a)
    }),
    Builtin::pure("crypto.hmac.sha512", 2, |a| {
        hmac::<Hmac<sha2::Sha512>>("crypto.hmac.sha512", a)
    }),
    Builtin::pure("crypto.hmac.equal", 2, hmac_equal),
];

fn string<'a>(name: &str, n: usize, v: &'a Value) -> Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => bail!("{name}: operand {n} must be string"),
    }
}

fn hex(bytes: &[u8]) -> Value {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    Value::from(s)
}

fn digest<D: Digest>(name: &str, args: &[Value]) -> Result<Value> {
    Ok(hex(&D::digest(string(name, 1, &args[0])?.as_bytes())))
}

fn hmac<M: Mac + KeyInit>(name: &str, args: &[Value]) -> Result<Value> {
    let x = string(name, 1, &args[0])?;
    let key = string(name, 2, &args[1])?;
    let mut mac = <M as KeyInit>::new_from_slice(key.as_bytes())?;
    mac.update(x.as_bytes());
    Ok(hex(&mac.finalize().into_bytes()))
}

/// `crypto.hmac.equal(mac1, mac2)`: equality without a timing side channel on the contents.
fn hmac_equal(args: &[Value]) -> Result<Value> {
    let a = string("crypto.hmac.equal", 1, &args[0])?;
    let b = string("crypto.hmac.equal", 2, &args[1])?;
    Ok(Value::from(bool::from(a.as_bytes().ct_eq(b.as_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    // OPA: crypto.sha256("abc"), crypto.hmac.sha256("abc", "key") (well-known vectors).
    #[test]
    fn vectors() {
        let s = |x: &str| Value::from(x);
        assert_eq!(
            digest::<sha2::Sha256>("t", &[s("abc")]).unwrap(),
            s("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(
            digest::<md5::Md5>("t", &[s("")]).unwrap(),
            s("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(hmac_equal(&[s("ab"), s("ab")]).unwrap(), Value::from(true));
        assert_eq!(
            hmac_equal(&[s("ab"), s("abc")]).unwrap(),
            Value::from(false)
        );
        assert!(hmac_equal(&[s("ab"), Value::from(1u64)]).is_err());
    }
}
