//! `json.verify_schema` and `json.match_schema` in OPA's result shapes.
//!
//! regorus has both behind its `jsonschema` feature, but answers `[false, "<one string>"]`
//! where OPA answers `[false, [{"error", "type", "field", "desc"}, ...]]`; ours take
//! precedence over regorus's (extensions and host builtins are looked up first). `required`
//! and `type` errors, the common ones, have OPA's (gojsonschema's) wording; other kinds carry
//! the Rust validator's message and keyword (README, "Builtins": known differences).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use regorus::Value;

use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "json.verify_schema",
        nargs: 1,
        f: verify_schema,
        nondeterministic: false,
    },
    Builtin {
        name: "json.match_schema",
        nargs: 2,
        f: match_schema,
        nondeterministic: false,
    },
];

/// A document or a schema: an object (or any JSON value), or a string holding its JSON text.
fn json_of(v: &Value) -> std::result::Result<serde_json::Value, String> {
    match v {
        Value::String(s) => serde_json::from_str(s).map_err(|_| "invalid JSON string".to_owned()),
        other => {
            let text = other.to_json_str().map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| e.to_string())
        }
    }
}

fn compile(schema: &Value) -> std::result::Result<jsonschema::Validator, String> {
    let json = json_of(schema)?;
    if !matches!(
        json,
        serde_json::Value::Object(_) | serde_json::Value::Bool(_)
    ) {
        return Err("schema must be an object".into());
    }
    jsonschema::validator_for(&json).map_err(|e| e.to_string())
}

#[allow(clippy::unnecessary_wraps)] // the shape of every Builtin::f; this one never fails
fn verify_schema(args: &[Value]) -> Result<Value> {
    if !matches!(args[0], Value::String(_) | Value::Object(_)) {
        return Ok(Value::from(vec![
            Value::Bool(false),
            Value::from("jsonschema: wrong type, expected string or object"),
        ]));
    }
    Ok(Value::from(match compile(&args[0]) {
        Ok(_) => vec![Value::Bool(true), Value::Null],
        Err(e) => vec![Value::Bool(false), Value::from(format!("jsonschema: {e}"))],
    }))
}

fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn match_schema(args: &[Value]) -> Result<Value> {
    let document = match json_of(&args[0]) {
        Ok(d) => d,
        Err(e) => bail!("json.match_schema: document: {e}"),
    };
    let validator = match compile(&args[1]) {
        Ok(v) => v,
        Err(e) => bail!("json.match_schema: invalid schema: {e}"),
    };
    let mut errors: Vec<(String, String, String)> = Vec::new();
    for e in validator.iter_errors(&document) {
        let pointer = e.instance_path().to_string();
        let field = if pointer.is_empty() {
            "(Root)".to_owned()
        } else {
            pointer
                .trim_start_matches('/')
                .split('/')
                .collect::<Vec<_>>()
                .join(".")
        };
        let (kind, desc) = match e.kind() {
            ValidationErrorKind::Required { property } => (
                "required".to_owned(),
                format!("{} is required", property.as_str().unwrap_or_default()),
            ),
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(ts) => ts
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join("/"),
                };
                let given = type_name(e.instance());
                (
                    "invalid_type".to_owned(),
                    format!("Invalid type. Expected: {expected}, given: {given}"),
                )
            }
            other => (other.keyword().to_owned(), e.to_string()),
        };
        errors.push((field, kind, desc));
    }
    errors.sort();
    errors.dedup();
    let list: Vec<Value> = errors
        .into_iter()
        .map(|(field, kind, desc)| {
            let mut o = BTreeMap::new();
            o.insert(
                Value::from("error"),
                Value::from(format!("{field}: {desc}")),
            );
            o.insert(Value::from("type"), Value::from(kind));
            o.insert(Value::from("field"), Value::from(field));
            o.insert(Value::from("desc"), Value::from(desc));
            Value::from(o)
        })
        .collect();
    Ok(Value::from(vec![
        Value::Bool(list.is_empty()),
        Value::from(list),
    ]))
}
