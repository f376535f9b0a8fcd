//! `rego.metadata.rule()` and `rego.metadata.chain()`.
//!
//! Their value depends only on where the call is written (the `# METADATA` blocks of the rule
//! and package around it), so each call is replaced by its value, as a JSON literal, before
//! the policy reaches regorus: both evaluators then see a constant. Lines keep their numbers;
//! only columns after a call on its own line move. Scopes handled: `rule` (the block before a
//! rule) and `package` (the block before `package`); `document` and `subpackages` blocks from
//! other files are not gathered (README, "Builtins").

use std::collections::BTreeMap;

use regorus::unstable::{Module, Rule, RuleHead};
use regorus::utils::get_path_string;
use regorus::{Engine, Value};

/// The names this module rewrites; they count as known builtins.
pub const NAMES: &[&str] = &["rego.metadata.chain", "rego.metadata.rule"];

/// `# METADATA` blocks of `text`, keyed by the 1-based line of the statement each precedes.
fn blocks(text: &str) -> BTreeMap<u32, Value> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "# METADATA" {
            let mut yaml = String::new();
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim_start().starts_with('#') {
                let l = lines[j].trim_start().trim_start_matches('#');
                yaml.push_str(l.strip_prefix(' ').unwrap_or(l));
                yaml.push('\n');
                j += 1;
            }
            while j < lines.len() && lines[j].trim().is_empty() {
                j += 1;
            }
            if let Ok(v @ Value::Object(_)) = Value::from_yaml_str(&yaml) {
                out.insert(u32::try_from(j + 1).unwrap_or(u32::MAX), v);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn with_scope(v: &Value, scope: &str) -> Value {
    let mut m: BTreeMap<Value, Value> = match v {
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    m.entry(Value::from("scope"))
        .or_insert_with(|| Value::from(scope));
    Value::from(m)
}

fn path_value(path: &str) -> Value {
    Value::from(path.split('.').skip(1).map(Value::from).collect::<Vec<_>>())
}

fn entry(path: &str, annotations: Option<Value>) -> Value {
    let mut m = BTreeMap::new();
    m.insert(Value::from("path"), path_value(path));
    if let Some(a) = annotations {
        m.insert(Value::from("annotations"), a);
    }
    Value::from(m)
}

/// `text` with every `rego.metadata.rule()`/`chain()` call replaced by its value; `None` when
/// it has none (or does not parse: the caller reports that).
pub fn rewrite(path: &str, text: &str, rego_v0: bool) -> Option<String> {
    if !text.contains("rego.metadata.") {
        return None;
    }
    let mut engine = Engine::new();
    engine.set_rego_v0(rego_v0);
    engine.add_policy(path.to_owned(), text.to_owned()).ok()?;
    let m = engine.get_modules().first()?.clone();
    Some(rewrite_module(&m, text))
}

fn rewrite_module(m: &Module, text: &str) -> String {
    let blocks = blocks(text);
    let package = get_path_string(&m.package.refr, Some("data")).unwrap_or_default();
    let package_annotations = blocks
        .get(&m.package.span.line)
        .map(|v| with_scope(v, "package"));
    // (start, end, replacement) in byte offsets, applied from the end.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for rule in &m.policy {
        let (line, refr) = match rule.as_ref() {
            Rule::Spec {
                span,
                head:
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. },
                ..
            }
            | Rule::Default { span, refr, .. } => (span.line, refr),
        };
        let rule_path = get_path_string(refr, Some(&package)).unwrap_or_default();
        let rule_annotations = blocks.get(&line).map(|v| with_scope(v, "rule"));
        for call in super::check::calls_in_rule(rule) {
            let value = match call.name.as_str() {
                "rego.metadata.rule" => rule_annotations.clone().unwrap_or_else(Value::new_object),
                "rego.metadata.chain" => {
                    let mut chain = vec![entry(&rule_path, rule_annotations.clone())];
                    if let Some(p) = &package_annotations {
                        chain.push(entry(&package, Some(p.clone())));
                    }
                    Value::from(chain)
                }
                _ => continue,
            };
            // Compact: a literal on one line keeps every line number.
            let Ok(json) = serde_json::to_string(&value) else {
                continue;
            };
            edits.push((call.span.start as usize, call.span.end as usize, json));
        }
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = text.to_owned();
    for (start, end, json) in edits {
        if start <= end
            && end <= out.len()
            && out.is_char_boundary(start)
            && out.is_char_boundary(end)
        {
            out.replace_range(start..end, &json);
        }
    }
    out
}
