//! `rego.metadata.rule()` and `rego.metadata.chain()`, and OPA's checks of `# METADATA` blocks.
//!
//! Their value depends only on where the call is written (the `# METADATA` blocks of the rule,
//! its document, its package and the packages above it, in any loaded file), so each call is
//! replaced by its value, as a JSON literal, before the policy reaches regorus: both evaluators
//! then see a constant. Lines keep their numbers; only columns after a call on its own line
//! move. As OPA (`ast/parser.go`, `ast/annotations.go`): a block starts at a comment in column 1
//! whose text begins with `METADATA` and takes the comments in column 1 on the rows below; it
//! annotates the first statement after it; its YAML is read into OPA's typed fields and
//! normalised (authors, related resources, schemas); a block OPA refuses (bad YAML, a field
//! of the wrong type, a scope on the wrong statement, a second `package`/`document`/
//! `subpackages` block for one path) is a `PolicyError` with its file and line.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regorus::unstable::{Expr, Module, Rule, RuleHead};
use regorus::{Engine, Value};
use serde::Deserialize;

use crate::error::PolicyIssue;

/// The names this module rewrites; they count as known builtins.
pub const NAMES: &[&str] = &["rego.metadata.chain", "rego.metadata.rule"];

/// One comment: its 1-based row and column and its text after `#`.
struct Comment {
    row: u32,
    col: u32,
    text: String,
}

/// The comments of a Rego source, skipping `#` inside strings (`"..."` and raw `` `...` ``).
fn comments(text: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let (mut row, mut col) = (1u32, 0u32);
    let mut chars = text.chars().peekable();
    let (mut in_str, mut in_raw) = (false, false);
    while let Some(c) = chars.next() {
        col += 1;
        if c == '\n' {
            row += 1;
            col = 0;
            in_str = false; // a string literal cannot span lines
            continue;
        }
        if in_raw {
            in_raw = c != '`';
        } else if in_str {
            if c == '\\' {
                if chars.peek().is_some_and(|n| *n != '\n') {
                    chars.next();
                    col += 1;
                }
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '`' {
            in_raw = true;
        } else if c == '#' {
            let start = col;
            let mut body = String::new();
            while let Some(n) = chars.peek() {
                if *n == '\n' {
                    break;
                }
                body.push(*n);
                chars.next();
            }
            let body = body.strip_suffix('\r').unwrap_or(&body).to_owned();
            col += u32::try_from(body.chars().count()).unwrap_or(u32::MAX);
            out.push(Comment {
                row,
                col: start,
                text: body,
            });
        }
    }
    out
}

/// A `# METADATA` block: the row of its `METADATA` comment and the YAML comments below it.
struct Block {
    row: u32,
    lines: Vec<Comment>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let mut open = false;
    let mut prev_row = 0;
    for c in comments(text) {
        if open && c.row == prev_row + 1 && c.col == 1 {
            prev_row = c.row;
            if let Some(b) = out.last_mut() {
                b.lines.push(c);
            }
            continue;
        }
        open = false;
        prev_row = c.row;
        // OPA (the version the tests compare with) starts a block only in column 1 too.
        if c.col == 1 && c.text.trim().starts_with("METADATA") {
            open = true;
            out.push(Block {
                row: c.row,
                lines: Vec::new(),
            });
        }
    }
    out
}

/// OPA's `rawAnnotation`: the fields it reads (others are ignored). A string field takes a
/// scalar's text, as Go's yaml.v3 does.
#[derive(Deserialize)]
struct Raw {
    scope: Option<String>,
    title: Option<String>,
    description: Option<String>,
    entrypoint: Option<serde_yaml::Value>,
    organizations: Option<Vec<Option<String>>>,
    related_resources: Option<Vec<serde_yaml::Value>>,
    authors: Option<Vec<serde_yaml::Value>>,
    schemas: Option<Vec<serde_yaml::Mapping>>,
    custom: Option<BTreeMap<String, serde_yaml::Value>>,
}

/// What a block annotates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Package,
    Import,
    /// The index of the rule in its module.
    Rule(usize),
    Nothing,
}

/// A parsed block.
struct Annotation {
    file: usize,
    row: u32,
    scope: String,
    /// OPA's object for it (`toObject`), `scope` included.
    value: Value,
    target: Target,
}

fn issue(file: &str, line: u32, code: &'static str, message: String) -> PolicyIssue {
    PolicyIssue {
        file: file.to_owned(),
        line,
        column: 1,
        code,
        message,
        snippet: String::new(),
    }
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::from(
        pairs
            .into_iter()
            .map(|(k, v)| (s(k), v))
            .collect::<BTreeMap<Value, Value>>(),
    )
}

/// A YAML value as OPA's `InterfaceToValue` sees it; nested maps must have string keys.
fn yaml_value(v: &serde_yaml::Value) -> Result<Value, String> {
    Ok(match v {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::from(*b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                // Go's yaml.v3 reads it as a uint64 and OPA turns that into an int64: it wraps.
                Value::from(i64::from_ne_bytes(u.to_ne_bytes()))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if !f.is_finite() {
                    return Err(format!("json: unsupported value: {f}"));
                }
                Value::from(f)
            }
        }
        serde_yaml::Value::String(t) => s(t),
        serde_yaml::Value::Sequence(items) => Value::from(
            items
                .iter()
                .map(yaml_value)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        serde_yaml::Value::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let serde_yaml::Value::String(k) = k else {
                    return Err("invalid map key type(s)".to_owned());
                };
                out.insert(s(k), yaml_value(v)?);
            }
            Value::from(out)
        }
        serde_yaml::Value::Tagged(t) => yaml_value(&t.value)?,
    })
}

/// A scalar's text for messages.
fn shown(v: &serde_yaml::Value) -> String {
    serde_yaml::to_string(v).map_or_else(|_| "?".to_owned(), |t| t.trim().to_owned())
}

fn string_field(m: &serde_yaml::Mapping, key: &str) -> String {
    match m.get(key) {
        Some(serde_yaml::Value::String(t)) => t.trim().to_owned(),
        _ => String::new(),
    }
}

/// Go's `url.Parse(...).String()` for the usual shapes: the scheme is lower-cased, a space in
/// the host is refused and one in the path escaped; a reference starting with `:` has no
/// scheme.
fn url_ref(r: &str) -> Result<String, String> {
    if r.starts_with(':') {
        return Err(format!("parse \"{r}\": missing protocol scheme"));
    }
    let (scheme, rest) = match r.split_once(':') {
        Some((scheme, rest))
            if scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            (format!("{}:", scheme.to_ascii_lowercase()), rest)
        }
        _ => (String::new(), r),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            (format!("//{}", &after[..end]), &after[end..])
        }
        None => (String::new(), rest),
    };
    if authority.contains(' ') {
        return Err(format!(
            "parse \"{r}\": invalid character \" \" in host name"
        ));
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let escaped = path[..end].replace(' ', "%20");
    Ok(format!("{scheme}{authority}{escaped}{}", &path[end..]))
}

fn related_resource(item: &serde_yaml::Value) -> Result<Value, String> {
    match item {
        serde_yaml::Value::String(reference) => {
            if reference.is_empty() {
                return Err(format!(
                    "invalid related-resource definition {reference}: ref URL may not be empty string"
                ));
            }
            let url = url_ref(reference)
                .map_err(|e| format!("invalid related-resource definition {reference}: {e}"))?;
            Ok(obj(vec![("ref", s(&url))]))
        }
        serde_yaml::Value::Mapping(map) => {
            let reference = string_field(map, "ref");
            if reference.is_empty() {
                return Err(format!(
                    "invalid related-resource definition {}: 'ref' value required in object",
                    shown(item)
                ));
            }
            let url = url_ref(&reference)
                .map_err(|e| format!("invalid related-resource definition {reference}: {e}"))?;
            let mut pairs = vec![("ref", s(&url))];
            let desc = string_field(map, "description");
            if !desc.is_empty() {
                pairs.push(("description", s(&desc)));
            }
            Ok(obj(pairs))
        }
        _ => Err(format!(
            "invalid related-resource definition {}: invalid value type, must be string or map",
            shown(item)
        )),
    }
}

fn author_pairs(name: &str, email: &str) -> Value {
    let mut pairs = Vec::new();
    if !name.is_empty() {
        pairs.push(("name", s(name)));
    }
    if !email.is_empty() {
        pairs.push(("email", s(email)));
    }
    obj(pairs)
}

/// `Name <email>`: a last word in angle brackets is the email, the other words the name.
fn author(v: &serde_yaml::Value) -> Result<Value, String> {
    match v {
        serde_yaml::Value::String(t) => {
            let mut words: Vec<&str> = t.split_whitespace().collect();
            let Some(last) = words.last().copied() else {
                return Err(format!(
                    "invalid author definition {t}: author is an empty string"
                ));
            };
            let mut email = "";
            if last.len() >= 2 && last.starts_with('<') && last.ends_with('>') {
                email = &last[1..last.len() - 1];
                words.pop();
            }
            Ok(author_pairs(&words.join(" "), email))
        }
        serde_yaml::Value::Mapping(m) => {
            let (name, email) = (string_field(m, "name"), string_field(m, "email"));
            if name.is_empty() && email.is_empty() {
                return Err(format!(
                    "invalid author definition {}: 'name' and/or 'email' values required in object",
                    shown(v)
                ));
            }
            Ok(author_pairs(&name, &email))
        }
        _ => Err(format!(
            "invalid author definition {}: invalid value type, must be string or map",
            shown(v)
        )),
    }
}

/// The parts of a Rego ref as OPA's `Ref.toArray` gives them (`data.x[1]` is
/// `["data", "x", "1"]`), or `None` when `text` is not a ref.
fn parse_ref(text: &str) -> Option<Vec<Value>> {
    let t = text.trim();
    let b = t.as_bytes();
    let ident = |i: usize| -> usize {
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        j
    };
    if b.is_empty() || !(b[0].is_ascii_alphabetic() || b[0] == b'_') {
        return None;
    }
    let mut i = ident(0);
    let mut parts = vec![s(&t[..i])];
    while i < b.len() {
        match b[i] {
            b'.' => {
                let j = ident(i + 1);
                if j == i + 1 {
                    return None;
                }
                parts.push(s(&t[i + 1..j]));
                i = j;
            }
            b'[' => {
                let close = t[i..].find(']')? + i;
                let inner = t[i + 1..close].trim();
                if inner.len() >= 2 && inner.starts_with('"') && inner.ends_with('"') {
                    let v: String = serde_json::from_str(inner).ok()?;
                    parts.push(s(&v));
                } else if !inner.is_empty()
                    && (inner
                        .bytes()
                        .all(|c| c.is_ascii_digit() || c == b'.' || c == b'-')
                        || (inner.as_bytes()[0].is_ascii_alphabetic() || inner.starts_with('_'))
                            && inner
                                .bytes()
                                .all(|c| c.is_ascii_alphanumeric() || c == b'_'))
                {
                    parts.push(s(inner));
                } else {
                    return None;
                }
                i = close + 1;
            }
            _ => return None,
        }
    }
    Some(parts)
}

fn schema(pair: &serde_yaml::Mapping) -> Result<Value, String> {
    let Some((k, v)) = pair.iter().next() else {
        return Err("invalid document reference".to_owned());
    };
    let key = match k {
        serde_yaml::Value::String(k) => k.clone(),
        other => shown(other),
    };
    let path = parse_ref(&key).ok_or_else(|| "invalid document reference".to_owned())?;
    let mut pairs = vec![("path", Value::from(path))];
    match v {
        serde_yaml::Value::String(r) => {
            let parts = parse_ref(r)
                .filter(|p| p.first() == Some(&s("schema")))
                .ok_or_else(|| "invalid schema reference".to_owned())?;
            pairs.push(("schema", Value::from(parts)));
        }
        serde_yaml::Value::Mapping(_) => {
            let def = yaml_value(v).map_err(|e| format!("invalid schema definition: {e}: "))?;
            pairs.push(("definition", def));
        }
        _ => return Err(format!("invalid schema declaration for path \"{key}\"")),
    }
    Ok(obj(pairs))
}

/// YAML 1.1 booleans, which yaml.v3 still accepts for a `bool` field.
fn entrypoint(v: Option<&serde_yaml::Value>) -> Result<bool, String> {
    match v {
        None | Some(serde_yaml::Value::Null) => Ok(false),
        Some(serde_yaml::Value::Bool(b)) => Ok(*b),
        Some(serde_yaml::Value::String(t)) => match t.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Ok(true),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Ok(false),
            _ => Err(format!("cannot unmarshal !!str `{t}` into bool")),
        },
        Some(other) => Err(format!("cannot unmarshal {} into bool", shown(other))),
    }
}

/// A block's fields, normalised as OPA's `toObject` (without `scope`), and its scope as
/// written (empty when not given), its `entrypoint`. Errors carry their 1-based row.
fn parse_block(b: &Block) -> Result<(String, bool, Vec<(&'static str, Value)>), (u32, String)> {
    let yaml: String = b
        .lines
        .iter()
        .map(|c| format!("{}\n", c.text.strip_prefix(' ').unwrap_or(&c.text)))
        .collect();
    if yaml.trim().is_empty() {
        return Err((
            b.row,
            "expected METADATA block, found whitespace".to_owned(),
        ));
    }
    let last = b.lines.last().map_or(b.row, |c| c.row);
    let raw: Raw = serde_yaml::from_str(&yaml).map_err(|e| {
        // OPA reports the comment after the YAML line named, or the last one.
        let row = e.location().map_or_else(
            || b.lines.first().map_or(b.row, |c| c.row),
            |l| (b.row + u32::try_from(l.line()).unwrap_or(0) + 1).min(last),
        );
        (row, format!("yaml: {e}"))
    })?;
    let at = |e: String| (b.row, e);
    let mut pairs = Vec::new();
    let entry =
        entrypoint(raw.entrypoint.as_ref()).map_err(|e| (b.row + 1, format!("yaml: {e}")))?;
    if let Some(t) = raw.title.filter(|t| !t.is_empty()) {
        pairs.push(("title", s(&t)));
    }
    if entry {
        pairs.push(("entrypoint", Value::from(true)));
    }
    if let Some(d) = raw.description.filter(|d| !d.is_empty()) {
        pairs.push(("description", s(&d)));
    }
    // yaml.v3 leaves a null element out.
    let orgs: Vec<Value> = raw
        .organizations
        .iter()
        .flatten()
        .flatten()
        .map(|x| s(x))
        .collect();
    if !orgs.is_empty() {
        pairs.push(("organizations", Value::from(orgs)));
    }
    if let Some(r) = raw.related_resources.filter(|r| !r.is_empty()) {
        let r = r
            .iter()
            .map(related_resource)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        pairs.push(("related_resources", Value::from(r)));
    }
    if let Some(a) = raw.authors.filter(|a| !a.is_empty()) {
        let a = a
            .iter()
            .map(author)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        pairs.push(("authors", Value::from(a)));
    }
    if let Some(sc) = raw.schemas.filter(|x| !x.is_empty()) {
        let sc = sc
            .iter()
            .map(schema)
            .collect::<Result<Vec<_>, _>>()
            .map_err(at)?;
        pairs.push(("schemas", Value::from(sc)));
    }
    if let Some(c) = raw.custom.filter(|c| !c.is_empty()) {
        let mut m = BTreeMap::new();
        for (k, v) in &c {
            m.insert(s(k), yaml_value(v).map_err(|e| at(format!("{e}: ")))?);
        }
        pairs.push(("custom", Value::from(m)));
    }
    Ok((raw.scope.unwrap_or_default(), entry, pairs))
}

/// A ref's leading parts up to its first non-constant index (OPA's `GroundPrefix`), with the
/// `data` root left out; numbers as their text, as OPA's chain shows them.
fn ground_prefix(e: &Expr, out: &mut Vec<Value>) -> bool {
    match e {
        Expr::Var { value, .. } => {
            out.push(value.clone());
            true
        }
        Expr::RefDot { refr, field, .. } => {
            ground_prefix(refr, out) && {
                out.push(field.1.clone());
                true
            }
        }
        Expr::RefBrack { refr, index, .. } => {
            if !ground_prefix(refr, out) {
                return false;
            }
            match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    out.push(value.clone());
                    true
                }
                Expr::Number { value, .. } => {
                    out.push(s(&serde_json::to_string(value).unwrap_or_default()));
                    true
                }
                _ => false,
            }
        }
        _ => false,
    }
}

fn ref_path(e: &Expr) -> Vec<Value> {
    let mut out = Vec::new();
    ground_prefix(e, &mut out);
    out
}

fn rule_ref(rule: &Rule) -> &Expr {
    match rule {
        Rule::Spec {
            head:
                RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } | RuleHead::Func { refr, .. },
            ..
        }
        | Rule::Default { refr, .. } => refr,
    }
}

/// One loaded module and its blocks.
struct Parsed {
    module: regorus::unstable::Ref<Module>,
    /// The package path without `data`.
    package: Vec<Value>,
}

/// The paths of a file's rules, in module order, each with its package path in front.
fn rule_path(p: &Parsed, rule: &Rule) -> Vec<Value> {
    let mut path = p.package.clone();
    path.extend(ref_path(rule_ref(rule)));
    path
}

/// Every file's text with its `rego.metadata.*` calls replaced (`None`: unchanged), or the
/// issues OPA's parser and compiler report for its `# METADATA` blocks. A file that does not
/// parse is left as it is (the caller reports it).
///
/// # Errors
/// A `PolicyIssue` per refused block.
#[allow(clippy::too_many_lines)]
pub fn rewrite_all(
    files: &[(&str, &str)],
    rego_v0: bool,
) -> Result<Vec<Option<String>>, Vec<PolicyIssue>> {
    let mut out: Vec<Option<String>> = vec![None; files.len()];
    let parse = |f: &(&str, &str)| -> Option<Parsed> {
        let mut engine = Engine::new();
        engine.set_rego_v0(rego_v0);
        engine.add_policy(f.0.to_owned(), f.1.to_owned()).ok()?;
        let module = engine.get_modules().first().cloned()?;
        let package = ref_path(&module.package.refr);
        Some(Parsed { module, package })
    };
    let mut parsed: Vec<Option<Parsed>> = files
        .iter()
        .map(|f| f.1.contains("rego.metadata.").then(|| parse(f)).flatten())
        .collect();
    // OPA's compiler reads the blocks of every module only when one calls rego.metadata.*
    // (a string or a comment naming it does not count).
    let called = parsed.iter().flatten().any(|p| {
        p.module.policy.iter().any(|r| {
            super::check::calls_by_body(r)
                .iter()
                .any(|(_, c)| NAMES.contains(&c.name.as_str()))
        })
    });
    if !called {
        return Ok(out);
    }
    for (f, p) in files.iter().zip(parsed.iter_mut()) {
        if p.is_none() && f.1.contains("METADATA") {
            *p = parse(f);
        }
    }
    // Blocks, file by file in name order (OPA compiles modules sorted by name).
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|a, b| files[*a].0.cmp(files[*b].0));
    let mut issues = Vec::new();
    let mut annotations: Vec<Annotation> = Vec::new();
    for &fi in &order {
        let Some(p) = &parsed[fi] else { continue };
        let path = files[fi].0;
        if !files[fi].1.contains("METADATA") {
            continue;
        }
        let mut stmts: Vec<(u32, Target)> = vec![(p.module.package.span.line, Target::Package)];
        stmts.extend(
            p.module
                .imports
                .iter()
                .map(|i| (i.span.line, Target::Import)),
        );
        stmts.extend(
            p.module
                .policy
                .iter()
                .enumerate()
                .map(|(i, r)| (r.span().line, Target::Rule(i))),
        );
        stmts.sort_by_key(|s| s.0);
        for b in blocks(files[fi].1) {
            let (scope, entry, pairs) = match parse_block(&b) {
                Ok(x) => x,
                Err((line, msg)) => {
                    issues.push(issue(path, line, "rego_parse_error", msg));
                    continue;
                }
            };
            let target = stmts
                .iter()
                .find(|s| s.0 > b.row)
                .map_or(Target::Nothing, |s| s.1);
            let scope = if scope.is_empty() {
                match target {
                    Target::Rule(_) if entry => "document".to_owned(),
                    Target::Rule(_) => "rule".to_owned(),
                    Target::Package => "package".to_owned(),
                    Target::Import => "import".to_owned(),
                    Target::Nothing => String::new(),
                }
            } else {
                scope
            };
            let have = match target {
                Target::Rule(_) => " (have rule)",
                Target::Package => " (have package)",
                Target::Import => " (have import)",
                Target::Nothing => "",
            };
            let attach = match scope.as_str() {
                "rule" | "document" if !matches!(target, Target::Rule(_)) => Some(format!(
                    "annotation scope '{scope}' must be applied to rule{have}"
                )),
                "package" | "subpackages" if target != Target::Package => Some(format!(
                    "annotation scope '{scope}' must be applied to package{have}"
                )),
                "rule" | "document" | "package" | "subpackages" => None,
                _ => Some(format!(
                    "invalid annotation scope '{scope}'. Use one of 'rule', 'document', \
                     'package', or 'subpackages'"
                )),
            };
            let mut bad = false;
            if let Some(m) = attach {
                issues.push(issue(path, b.row, "rego_parse_error", m));
                bad = true;
            }
            if entry && scope != "document" && scope != "package" {
                issues.push(issue(
                    path,
                    b.row,
                    "rego_parse_error",
                    format!(
                        "annotation entrypoint applied to non-document or package scope '{scope}'"
                    ),
                ));
                bad = true;
            }
            if bad {
                continue;
            }
            let mut m: BTreeMap<Value, Value> = pairs.into_iter().map(|(k, v)| (s(k), v)).collect();
            m.insert(s("scope"), s(&scope));
            annotations.push(Annotation {
                file: fi,
                row: b.row,
                scope,
                value: Value::from(m),
                target,
            });
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    // OPA's AnnotationSet: rule blocks by rule, package blocks by package, and one tree of
    // paths shared by `document` (the rule's path) and `subpackages` (the package's).
    let target_path = |a: &Annotation| -> Vec<Value> {
        let Some(p) = &parsed[a.file] else {
            return Vec::new();
        };
        match a.target {
            Target::Rule(i) => p
                .module
                .policy
                .get(i)
                .map(|r| rule_path(p, r))
                .unwrap_or_default(),
            _ => p.package.clone(),
        }
    };
    let loc = |a: &Annotation| format!("{}:{}", files[a.file].0, a.row);
    let mut by_rule: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    let mut by_package: BTreeMap<Vec<Value>, usize> = BTreeMap::new();
    let mut tree: BTreeMap<Vec<Value>, usize> = BTreeMap::new();
    let mut nodes: BTreeSet<Vec<Value>> = BTreeSet::new();
    for (i, a) in annotations.iter().enumerate() {
        let path = target_path(a);
        let redeclared = |other: &Annotation| {
            issue(
                files[a.file].0,
                a.row,
                "rego_type_error",
                format!("{} annotation redeclared: {}", a.scope, loc(other)),
            )
        };
        match (a.scope.as_str(), a.target) {
            ("rule", Target::Rule(r)) => by_rule.entry((a.file, r)).or_default().push(i),
            ("package", _) => {
                if let Some(&o) = by_package.get(&path) {
                    issues.push(redeclared(&annotations[o]));
                } else {
                    by_package.insert(path, i);
                }
            }
            (scope @ ("document" | "subpackages"), _) => {
                let taken = if scope == "document" {
                    // OPA refuses any node there, even one only on the way to a deeper block.
                    nodes.contains(&path)
                } else {
                    tree.contains_key(&path)
                };
                if taken {
                    let other = tree.get(&path).copied().or_else(|| {
                        tree.iter()
                            .find(|(k, _)| k.starts_with(&path))
                            .map(|(_, v)| *v)
                    });
                    issues.push(other.map_or_else(
                        || {
                            issue(
                                files[a.file].0,
                                a.row,
                                "rego_type_error",
                                format!("{scope} annotation redeclared"),
                            )
                        },
                        |o| redeclared(&annotations[o]),
                    ));
                } else {
                    for n in 1..=path.len() {
                        nodes.insert(path[..n].to_vec());
                    }
                    tree.insert(path, i);
                }
            }
            _ => {}
        }
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    let entry = |a: &Annotation| {
        obj(vec![
            ("path", Value::from(target_path(a))),
            ("annotations", a.value.clone()),
        ])
    };
    for (fi, f) in files.iter().enumerate() {
        let Some(p) = &parsed[fi] else { continue };
        if !f.1.contains("rego.metadata.") {
            continue;
        }
        // (start, end, replacement) in byte offsets, applied from the end.
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        for (ri, rule) in p.module.policy.iter().enumerate() {
            let path = rule_path(p, rule);
            let own: &[usize] = by_rule.get(&(fi, ri)).map_or(&[], Vec::as_slice);
            for (body, call) in super::check::calls_by_body(rule) {
                // Later bodies and `else` are rules of their own in OPA, without blocks.
                let own = if body == 0 { own } else { &[] };
                let value = match call.name.as_str() {
                    "rego.metadata.rule" => own
                        .first()
                        .map_or_else(Value::new_object, |&a| annotations[a].value.clone()),
                    "rego.metadata.chain" => {
                        let mut chain: Vec<Value> = Vec::new();
                        let mut closest: Vec<usize> = own.to_vec();
                        closest.sort_by_key(|&a| std::cmp::Reverse(annotations[a].row));
                        chain.extend(closest.iter().map(|&a| entry(&annotations[a])));
                        if chain.is_empty() {
                            chain.push(obj(vec![("path", Value::from(path.clone()))]));
                        }
                        if let Some(&d) = tree.get(&path) {
                            chain.push(entry(&annotations[d]));
                        }
                        if let Some(&pk) = by_package.get(&p.package) {
                            chain.push(entry(&annotations[pk]));
                        }
                        for n in (1..=p.package.len()).rev() {
                            if let Some(&sp) = tree.get(&p.package[..n]) {
                                chain.push(entry(&annotations[sp]));
                            }
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
        if edits.is_empty() {
            continue;
        }
        edits.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut text = f.1.to_owned();
        for (start, end, json) in edits {
            if start <= end
                && end <= text.len()
                && text.is_char_boundary(start)
                && text.is_char_boundary(end)
            {
                text.replace_range(start..end, &json);
            }
        }
        out[fi] = Some(text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file<'a>(path: &'a str, text: &'a str) -> (&'a str, &'a str) {
        (path, text)
    }

    #[test]
    fn comments_skip_strings_and_raw_strings() {
        let c = comments("s := \"# no\" # yes\nr := `#\n# no` #x\n# METADATA\n");
        let texts: Vec<(u32, u32, &str)> =
            c.iter().map(|c| (c.row, c.col, c.text.as_str())).collect();
        assert_eq!(
            texts,
            vec![(1, 13, " yes"), (3, 7, "x"), (4, 1, " METADATA")]
        );
    }

    #[test]
    fn a_block_takes_the_column_one_comments_right_below() {
        let b = blocks("# METADATA\n# title: t\n # not\n# METADATA\n\n# not either\n");
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].lines.len(), 1);
        assert!(b[1].lines.is_empty());
    }

    #[test]
    fn refs_split_as_opa_does() {
        assert_eq!(
            parse_ref("data.x[\"y z\"][1]"),
            Some(vec![s("data"), s("x"), s("y z"), s("1")])
        );
        assert_eq!(parse_ref("schema"), Some(vec![s("schema")]));
        assert_eq!(parse_ref("1x"), None);
        assert_eq!(parse_ref("a..b"), None);
    }

    #[test]
    fn urls_keep_their_shape_but_the_scheme_case() {
        assert_eq!(
            url_ref("HTTPS://Ex.com/a b?q=1 2").as_deref(),
            Ok("https://Ex.com/a%20b?q=1 2")
        );
        assert!(url_ref("http://a b").is_err());
        assert!(url_ref("::").is_err());
        assert_eq!(url_ref("relative/path").as_deref(), Ok("relative/path"));
    }

    #[test]
    fn calls_become_the_chain_of_every_file() {
        let files = [
            file(
                "a.rego",
                "# METADATA\n# scope: subpackages\n# title: root\npackage a\n",
            ),
            file(
                "b.rego",
                "package a.b\n\n# METADATA\n# title: r\nr := rego.metadata.chain()\n",
            ),
        ];
        let out = rewrite_all(&files, false).unwrap_or_default();
        assert!(out[0].is_none());
        let text = out[1].clone().unwrap_or_default();
        assert!(
            text.contains(r#"r := [{"annotations":{"scope":"rule","title":"r"},"path":["a","b","r"]},{"annotations":{"scope":"subpackages","title":"root"},"path":["a"]}]"#),
            "{text}"
        );
    }

    #[test]
    fn a_bad_block_is_an_issue_only_when_a_call_reads_blocks() {
        let bad = file("t.rego", "package t\n\n# METADATA\n# title: [a]\nr := 1\n");
        assert!(matches!(rewrite_all(std::slice::from_ref(&bad), false), Ok(v) if v[0].is_none()));
        let call = file("c.rego", "package c\n\nx := rego.metadata.rule()\n");
        let Err(issues) = rewrite_all(&[bad, call], false) else {
            panic!("a bad block was accepted");
        };
        assert_eq!((issues[0].file.as_str(), issues[0].line), ("t.rego", 4));
    }
}
