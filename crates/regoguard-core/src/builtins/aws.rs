//! `providers.aws.sign_req`: AWS Signature Version 4 for a request object, as OPA signs it
//! (checked against OPA and AWS's documented S3 example).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use hmac::{Hmac, Mac};
use regorus::Value;
use sha2::{Digest, Sha256};

use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "providers.aws.sign_req",
    nargs: 3,
    f: sign_req,
    nondeterministic: false,
}];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Result<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| anyhow!("{e}"))?;
    mac.update(data.as_bytes());
    Ok(mac.finalize().into_bytes().to_vec())
}

fn get<'a>(o: &'a Value, k: &str) -> Option<&'a Value> {
    match o {
        Value::Object(m) => m.get(&Value::from(k)),
        _ => None,
    }
}

fn get_str<'a>(o: &'a Value, k: &str) -> Option<&'a str> {
    match get(o, k) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` of Unix seconds (UTC).
fn amz_dates(secs: i64) -> (String, String) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    (date, stamp)
}

fn sign_req(args: &[Value]) -> Result<Value> {
    let name = "providers.aws.sign_req";
    let (req, config) = (&args[0], &args[1]);
    let (Value::Object(req_map), Value::Object(_)) = (req, config) else {
        bail!("{name}: operands 1 and 2 must be objects");
    };
    let ns = match &args[2] {
        Value::Number(_) => args[2]
            .as_i64()
            .map_err(|_| anyhow!("{name}: operand 3 must be an integer"))?,
        _ => bail!("{name}: operand 3 must be a number"),
    };
    let mut missing = Vec::new();
    let mut need = |k: &str| {
        if let Some(v) = get_str(config, k) {
            v.to_owned()
        } else {
            missing.push(k.to_owned());
            String::new()
        }
    };
    let (access, secret, service, region) = (
        need("aws_access_key"),
        need("aws_secret_access_key"),
        need("aws_service"),
        need("aws_region"),
    );
    if !missing.is_empty() {
        bail!("{name}: operand 2 missing required AWS config parameters {missing:?}");
    }
    let token = get_str(config, "aws_session_token");
    let unsigned = matches!(
        get(config, "disable_payload_signing"),
        Some(Value::Bool(true))
    );
    let method = get_str(req, "method")
        .ok_or_else(|| anyhow!("{name}: method is required"))?
        .to_ascii_uppercase();
    let url =
        url::Url::parse(get_str(req, "url").ok_or_else(|| anyhow!("{name}: url is required"))?)?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => bail!("{name}: url has no host"),
    };
    let payload: Vec<u8> = match (get(req, "body"), get_str(req, "raw_body")) {
        (Some(b), _) => serde_json::to_vec(b)?,
        (None, Some(raw)) => raw.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let payload_hash = if unsigned {
        "UNSIGNED-PAYLOAD".to_owned()
    } else {
        hex(&Sha256::digest(&payload))
    };
    let (date, stamp) = amz_dates(ns.div_euclid(1_000_000_000));

    // The headers as given, plus ours; signed: every one, lower-cased, sorted.
    let mut headers: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(Value::Object(h)) = get(req, "headers") {
        for (k, v) in h.iter() {
            let Value::String(k) = k else {
                bail!("{name}: header names must be strings")
            };
            headers.insert(k.to_string(), v.clone());
        }
    }
    headers.insert("host".into(), Value::from(host.as_str()));
    headers.insert("x-amz-date".into(), Value::from(stamp.as_str()));
    if service == "s3" {
        headers.insert(
            "x-amz-content-sha256".into(),
            Value::from(payload_hash.as_str()),
        );
    }
    if let Some(t) = token {
        headers.insert("x-amz-security-token".into(), Value::from(t));
    }
    let mut canonical_headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &headers {
        let v = match v {
            Value::String(s) => s.trim().to_owned(),
            other => serde_json::to_string(other)?,
        };
        canonical_headers.insert(k.to_ascii_lowercase(), v);
    }
    let signed: Vec<&str> = canonical_headers.keys().map(String::as_str).collect();
    let signed = signed.join(";");
    // OPA signs the query as written (its signer does not sort it; checked against OPA).
    let query = url.query().unwrap_or_default();
    let path = if url.path().is_empty() {
        "/"
    } else {
        url.path()
    };
    let mut canonical = format!("{method}\n{path}\n{query}\n");
    for (k, v) in &canonical_headers {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed}\n{payload_hash}"));
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = hmac(format!("AWS4{secret}").as_bytes(), &date)?;
    let key = hmac(&key, &region)?;
    let key = hmac(&key, &service)?;
    let key = hmac(&key, "aws4_request")?;
    let signature = hex(&hmac(&key, &to_sign)?);
    headers.insert(
        "Authorization".into(),
        Value::from(format!(
            "AWS4-HMAC-SHA256 Credential={access}/{scope},SignedHeaders={signed},Signature={signature}"
        )),
    );
    let mut out: BTreeMap<Value, Value> = req_map
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(
        Value::from("headers"),
        Value::from(
            headers
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect::<BTreeMap<_, _>>(),
        ),
    );
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(req: &str) -> String {
        let config = r#"{"aws_access_key": "AK", "aws_secret_access_key": "SK", "aws_service": "execute-api", "aws_region": "eu-west-1"}"#;
        let out = sign_req(&[
            Value::from_json_str(req).expect("req"),
            Value::from_json_str(config).expect("config"),
            Value::from(0u64),
        ])
        .expect("signed");
        out["headers"]["Authorization"]
            .as_string()
            .expect("auth")
            .to_string()
    }

    /// Signatures OPA 1.x gives for the same requests (the oracle, by hand).
    #[test]
    fn signatures_match_opa() {
        let sig = |s: &str| s.rsplit("Signature=").next().unwrap_or_default().to_owned();
        assert_eq!(
            sig(&auth(r#"{"method": "POST", "url": "https://x.com/p"}"#)),
            "8f2f966e6c3c2daf008d9c9f0be5d3e60c27e785e074186f5d144f5bf4229d88"
        );
        assert_eq!(
            sig(&auth(
                r#"{"method": "POST", "url": "https://x.com/p?b=2&a=1"}"#
            )),
            "d1f27fd6daaa8489299f46213bc6bae3371762ad80106fb82fd5cc397f816620"
        );
        assert_eq!(
            sig(&auth(
                r#"{"method": "POST", "url": "https://x.com/p", "body": {"k": 1}}"#
            )),
            "2e5ee8fc350298f50a90617916891c67fa1a40c1be7d03d18a235df0bc672842"
        );
    }
}
