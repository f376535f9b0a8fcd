//! `strings.render_template`: the part of Go's `text/template` that policies use to build
//! messages: `{{.a.b}}`, `{{.}}`, `{{range .xs}}...{{end}}`, `{{if .x}}...{{else}}...{{end}}`,
//! with Go's printing (`[1 a]`, `map[a:1 k:v]`, `<undefined>` for a missing field, as OPA
//! renders it). Pipelines, functions and variables are refused (the call is undefined).

use anyhow::{bail, Result};
use regorus::Value;

use super::misc::string;
use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[Builtin {
    name: "strings.render_template",
    nargs: 2,
    f: render_template,
    nondeterministic: false,
}];

enum Node {
    Text(String),
    Field(Vec<String>),
    Range(Vec<String>, Vec<Node>),
    If(Vec<String>, Vec<Node>, Vec<Node>),
}

/// A dotted field path (`.`, `.a`, `.a.b`).
fn path(action: &str) -> Result<Vec<String>> {
    let a = action.trim();
    if a == "." {
        return Ok(Vec::new());
    }
    let Some(rest) = a.strip_prefix('.') else {
        bail!("strings.render_template: unsupported action {{{{{a}}}}}")
    };
    if rest.is_empty()
        || !rest
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
    {
        bail!("strings.render_template: unsupported action {{{{{a}}}}}");
    }
    Ok(rest.split('.').map(str::to_owned).collect())
}

/// Parses until `{{end}}` / `{{else}}` (returned as the terminator) or the end of input.
fn parse(src: &mut &str, depth: usize) -> Result<(Vec<Node>, Option<&'static str>)> {
    if depth > 32 {
        bail!("strings.render_template: nested too deeply");
    }
    let mut nodes = Vec::new();
    loop {
        let Some(open) = src.find("{{") else {
            if !src.is_empty() {
                nodes.push(Node::Text((*src).to_owned()));
            }
            *src = "";
            return Ok((nodes, None));
        };
        if open > 0 {
            nodes.push(Node::Text(src[..open].to_owned()));
        }
        let after = &src[open + 2..];
        let Some(close) = after.find("}}") else {
            bail!("strings.render_template: unclosed action")
        };
        let action = after[..close].trim();
        *src = &after[close + 2..];
        if action == "end" {
            return Ok((nodes, Some("end")));
        }
        if action == "else" {
            return Ok((nodes, Some("else")));
        }
        if action.starts_with("/*") && action.ends_with("*/") {
            continue;
        }
        if let Some(p) = action.strip_prefix("range ") {
            let (body, end) = parse(src, depth + 1)?;
            if end != Some("end") {
                bail!("strings.render_template: range without end");
            }
            nodes.push(Node::Range(path(p)?, body));
        } else if let Some(p) = action.strip_prefix("if ") {
            let (then, end) = parse(src, depth + 1)?;
            let otherwise = match end {
                Some("else") => {
                    let (o, end) = parse(src, depth + 1)?;
                    if end != Some("end") {
                        bail!("strings.render_template: if without end");
                    }
                    o
                }
                Some("end") => Vec::new(),
                _ => bail!("strings.render_template: if without end"),
            };
            nodes.push(Node::If(path(p)?, then, otherwise));
        } else {
            nodes.push(Node::Field(path(action)?));
        }
    }
}

fn lookup<'a>(dot: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut v = dot;
    for p in path {
        match v {
            Value::Object(o) => v = o.get(&Value::from(p.as_str()))?,
            _ => return None,
        }
    }
    Some(v)
}

/// Go's `fmt.Print` of a decoded JSON value.
fn print(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null | Value::Undefined => out.push_str("<nil>"),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print(x, out);
            }
            out.push(']');
        }
        Value::Set(s) => {
            out.push('[');
            for (i, x) in s.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            out.push_str("map[");
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print(k, out);
                out.push(':');
                print(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null | Value::Undefined | Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Set(s)) => !s.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(n @ Value::Number(_)) => n.as_f64().is_ok_and(|f| f != 0.0),
        Some(_) => true,
    }
}

fn render(nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
    for n in nodes {
        if out.len() > 1 << 20 {
            bail!("strings.render_template: output over 1 MiB");
        }
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Field(p) => match lookup(dot, p) {
                None | Some(Value::Null) => out.push_str("<undefined>"),
                Some(v) => print(v, out),
            },
            Node::Range(p, body) => match lookup(dot, p) {
                Some(Value::Array(items)) => {
                    for x in items.iter() {
                        render(body, x, out)?;
                    }
                }
                Some(Value::Set(items)) => {
                    for x in items.iter() {
                        render(body, x, out)?;
                    }
                }
                Some(Value::Object(items)) => {
                    for (_, x) in items.iter() {
                        render(body, x, out)?;
                    }
                }
                None | Some(Value::Null) => {}
                Some(_) => bail!("strings.render_template: range over a non-collection"),
            },
            Node::If(p, then, otherwise) => {
                render(
                    if truthy(lookup(dot, p)) {
                        then
                    } else {
                        otherwise
                    },
                    dot,
                    out,
                )?;
            }
        }
    }
    Ok(())
}

fn render_template(args: &[Value]) -> Result<Value> {
    let mut src = string("strings.render_template", 1, &args[0])?;
    if !matches!(args[1], Value::Object(_)) {
        bail!("strings.render_template: operand 2 must be object");
    }
    let (nodes, end) = parse(&mut src, 0)?;
    if end.is_some() {
        bail!("strings.render_template: unexpected {{{{end}}}} or {{{{else}}}}");
    }
    let mut out = String::new();
    render(&nodes, &args[1], &mut out)?;
    Ok(Value::from(out))
}
