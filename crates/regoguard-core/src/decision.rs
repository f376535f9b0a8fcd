//! What an entrypoint's value means: the decision-result contract (README, "The input and the result").

use std::sync::Arc;
use std::time::Duration;

use regorus::Value;

use crate::error::{Error, Result};
pub use crate::id::DecisionId;

/// Where a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The in-process cache.
    L1,
    /// The shared Redis cache.
    L2,
    /// A fresh evaluation.
    Engine,
}

impl Source {
    /// The name used in `Decision.source` and in metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::L1 => "l1",
            Source::L2 => "l2",
            Source::Engine => "engine",
        }
    }
}

/// An interpreted entrypoint value, shared by every cached copy of the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether the request is allowed.
    pub allow: bool,
    /// The raw entrypoint value (`Value::Undefined` when the rule was undefined).
    pub result: Value,
    /// `reason` of an object result; `"undefined"` for an undefined result.
    pub reason: Option<Arc<str>>,
    /// `status` of an object result.
    pub status: Option<u16>,
    /// `headers` of an object result, in key order.
    pub headers: Option<Vec<(Arc<str>, Arc<str>)>>,
    /// `cache_ttl_seconds` of an object result: `Some(ZERO)` forbids caching.
    pub cache_ttl: Option<Duration>,
    /// `tags` of an object result, for `invalidate(tags=...)`.
    pub tags: Box<[Arc<str>]>,
}

impl Outcome {
    /// Interprets the value of `entrypoint`.
    ///
    /// # Errors
    /// `Error::Evaluation` for anything that is neither a boolean, nor an object with a boolean
    /// `allow` and well-typed optional fields, nor undefined: that is a policy bug, and the
    /// middleware fails closed on it.
    pub fn from_value(entrypoint: &str, value: Value) -> Result<Self> {
        let mut out = Outcome {
            allow: false,
            result: Value::Undefined,
            reason: None,
            status: None,
            headers: None,
            cache_ttl: None,
            tags: Box::new([]),
        };
        match &value {
            Value::Bool(b) => out.allow = *b,
            Value::Undefined => out.reason = Some(Arc::from("undefined")),
            Value::Object(fields) => {
                let get = |name: &str| fields.get(&Value::from(name));
                out.allow = match get("allow") {
                    Some(Value::Bool(b)) => *b,
                    Some(other) => return Err(bad(entrypoint, "allow", "a boolean", other)),
                    None => {
                        return Err(Error::evaluation(
                            entrypoint,
                            "the result object has no boolean `allow` field",
                        ))
                    }
                };
                match get("reason") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => out.reason = Some(s.clone()),
                    Some(other) => return Err(bad(entrypoint, "reason", "a string", other)),
                }
                match get("status") {
                    None | Some(Value::Null) => {}
                    Some(Value::Number(n)) => {
                        match n.as_u64().and_then(|s| u16::try_from(s).ok()) {
                            Some(s) if (100..=599).contains(&s) => out.status = Some(s),
                            _ => {
                                return Err(bad(
                                    entrypoint,
                                    "status",
                                    "an HTTP status from 100 to 599",
                                    &Value::Number(n.clone()),
                                ))
                            }
                        }
                    }
                    Some(other) => {
                        return Err(bad(
                            entrypoint,
                            "status",
                            "an HTTP status from 100 to 599",
                            other,
                        ))
                    }
                }
                match get("headers") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(h)) => {
                        let mut headers = Vec::with_capacity(h.len());
                        for (k, v) in h.iter_sorted() {
                            match (k, v) {
                                (Value::String(k), Value::String(v)) => {
                                    headers.push((k.clone(), v.clone()));
                                }
                                _ => {
                                    return Err(bad(
                                        entrypoint,
                                        "headers",
                                        "an object of strings",
                                        &Value::Object(h.clone()),
                                    ))
                                }
                            }
                        }
                        out.headers = Some(headers);
                    }
                    Some(other) => {
                        return Err(bad(entrypoint, "headers", "an object of strings", other))
                    }
                }
                match get("cache_ttl_seconds") {
                    None | Some(Value::Null) => {}
                    Some(Value::Number(n)) => match n.as_f64() {
                        Some(s) if s.is_finite() && s >= 0.0 => {
                            out.cache_ttl =
                                Some(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
                        }
                        _ => {
                            return Err(bad(
                                entrypoint,
                                "cache_ttl_seconds",
                                "a number >= 0",
                                &Value::Number(n.clone()),
                            ))
                        }
                    },
                    Some(other) => {
                        return Err(bad(entrypoint, "cache_ttl_seconds", "a number >= 0", other))
                    }
                }
                match get("tags") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(a)) => {
                        let mut tags = Vec::with_capacity(a.len());
                        for t in a.iter() {
                            match t {
                                Value::String(s) => tags.push(s.clone()),
                                _ => {
                                    return Err(bad(
                                        entrypoint,
                                        "tags",
                                        "a list of strings",
                                        &Value::Array(a.clone()),
                                    ))
                                }
                            }
                        }
                        out.tags = tags.into_boxed_slice();
                    }
                    Some(other) => return Err(bad(entrypoint, "tags", "a list of strings", other)),
                }
            }
            other => {
                return Err(Error::evaluation(
                    entrypoint,
                    format!(
                        "the result must be a boolean or an object with a boolean `allow`, got {}",
                        type_name(other)
                    ),
                ))
            }
        }
        out.result = value;
        Ok(out)
    }
}

#[cold]
fn bad(entrypoint: &str, field: &str, expected: &str, got: &Value) -> Error {
    Error::evaluation(
        entrypoint,
        format!(
            "`{field}` in the result must be {expected}, got {}",
            type_name(got)
        ),
    )
}

/// The Rego type name of a value, as OPA prints it in type errors.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(json: &str) -> Result<Outcome> {
        Outcome::from_value("data.authz.allow", Value::from_json_str(json).unwrap())
    }

    #[test]
    fn booleans_and_undefined() {
        assert!(Outcome::from_value("e", Value::Bool(true)).unwrap().allow);
        let u = Outcome::from_value("e", Value::Undefined).unwrap();
        assert!(!u.allow);
        assert_eq!(u.reason.as_deref(), Some("undefined"));
    }

    #[test]
    fn object_fields() {
        let o = outcome(
            r#"{"allow":false,"reason":"nope","status":401,"headers":{"WWW-Authenticate":"Bearer"},
                "cache_ttl_seconds":0,"tags":["t1","t2"]}"#,
        )
        .unwrap();
        assert!(!o.allow);
        assert_eq!(o.reason.as_deref(), Some("nope"));
        assert_eq!(o.status, Some(401));
        assert_eq!(o.headers.as_ref().map(Vec::len), Some(1));
        assert_eq!(o.cache_ttl, Some(Duration::ZERO));
        assert_eq!(o.tags.len(), 2);
    }

    #[test]
    fn bad_shapes_are_evaluation_errors() {
        for bad in [
            "1",
            "\"yes\"",
            "[true]",
            "{}",
            r#"{"allow":"true"}"#,
            r#"{"allow":true,"status":"403"}"#,
            r#"{"allow":true,"status":42}"#,
            r#"{"allow":true,"headers":{"a":1}}"#,
            r#"{"allow":true,"cache_ttl_seconds":-1}"#,
            r#"{"allow":true,"tags":"t"}"#,
            r#"{"allow":true,"reason":3}"#,
        ] {
            assert!(matches!(outcome(bad), Err(Error::Evaluation(_))), "{bad}");
        }
    }
}
