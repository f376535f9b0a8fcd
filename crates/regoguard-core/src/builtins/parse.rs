//! `rego.parse_module(filename, source)`: the module's AST as OPA marshals it to JSON.
//!
//! The source is parsed by regorus's own parser (Rego v1, as OPA v1's `ast.ParseModule`), and
//! regorus's AST is rewritten into the shape of OPA's `ast.Module` JSON: terms are
//! `{"type", "value"}`, operators become calls of their builtin (`x + 1` is
//! `plus(x, 1)`, `x := 1` is `assign(x, 1)`, `x in xs` is `internal.member_2(x, xs)`), a rule
//! without a body gets OPA's generated `true` body, `_` becomes OPA's numbered wildcard
//! (`$0`, `$1`, ... in source order), and comments (which regorus's lexer skips) are read
//! back from the gaps between tokens. OPA leaves locations out of this JSON (except comments'),
//! and does not process `# METADATA` annotations here: they stay comments.
//!
//! A source OPA would also reject makes the call undefined (OPA: a builtin error). What this
//! cannot reproduce exactly is refused with an evaluation error rather than answered with a
//! different AST ([`super::Refused`]); README, "Builtins", lists those forms.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use base64::Engine as _;
use regorus::unstable::{
    ArithOp, AssignOp, BinOp, BoolOp, Expr, Lexer, Literal, LiteralStmt, Module, Parser, Query,
    Rule, RuleAssign, RuleBody, RuleHead, Source, TokenKind,
};
use regorus::Value;

use super::{misc::string, Builtin, Refused};

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[Builtin::pure("rego.parse_module", 2, parse_module)];

/// Sources longer than this are not parsed (a policy is not a megabyte of text).
const MAX_SOURCE_BYTES: usize = 1 << 20;

/// What parsing may cost, in regorus's backtracking steps. regorus's parser tries a
/// comprehension before an array, set or object at every `[`/`{` and starts again when it is
/// not one: about four times the work per level of nesting (16 levels take seconds). The
/// source is the caller's input and a parse cannot be interrupted by the evaluation budget, so
/// a source whose brackets cost more than this (each `4^depth`: ten nested levels once, or
/// thousands of shallow ones) is refused before it is parsed.
const MAX_BRACKET_COST: u64 = 1 << 22;

fn parse_module(args: &[Value]) -> Result<Value> {
    let filename = string("rego.parse_module", 1, &args[0])?;
    let text = string("rego.parse_module", 2, &args[1])?;
    if text.len() > MAX_SOURCE_BYTES {
        return Err(refused("a source over 1 MiB"));
    }
    module_json(filename, text)
}

/// OPA's JSON of the module `text` (file `filename`).
///
/// # Errors
/// A parse error (the call is undefined, as in OPA), or [`Refused`] for a form whose OPA
/// shape this does not reproduce.
pub fn module_json(filename: &str, text: &str) -> Result<Value> {
    let source = Source::from_contents(filename.to_owned(), text.to_owned())?;
    bracket_cost_within_limit(&source)?;
    let mut parser = Parser::new(&source)?;
    parser.enable_rego_v1()?;
    let module = parser
        .parse()
        .map_err(|e| refusal_for(&e, text).unwrap_or(e))?;
    if module.target.is_some() {
        // regorus reads `__target__ := "..."` as a directive and drops the rule OPA keeps.
        return Err(refused("a `__target__` rule"));
    }
    check_like_opa(&module)?;
    experimental_keywords(&source, &module)?;
    let comments = comments(&source)?;
    let mut c = Converter::default();
    c.module(&module, comments)
}

/// [`Refused`] when the source's `[`/`{` cost more than [`MAX_BRACKET_COST`] to parse
/// (tokens, so brackets in strings and comments do not count).
fn bracket_cost_within_limit(source: &Source) -> Result<()> {
    let mut lexer = Lexer::new(source);
    let mut depth = 0u32;
    let mut cost = 0u64;
    loop {
        // A lexing error is the parser's to report (or refuse).
        let Ok(tok) = lexer.next_token() else {
            return Ok(());
        };
        match (&tok.0, tok.1.text()) {
            (TokenKind::Eof, _) => return Ok(()),
            (TokenKind::Symbol, "[" | "{") => {
                depth += 1;
                cost = cost.saturating_add(4u64.saturating_pow(depth));
                if cost > MAX_BRACKET_COST {
                    return Err(refused(
                        "a module whose `[`/`{` nest this deep or this often",
                    ));
                }
            }
            (TokenKind::Symbol, "]" | "}") => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

fn refused(what: &str) -> anyhow::Error {
    Refused(format!("rego.parse_module: {what} is not supported")).into()
}

/// The refusal for a regorus parse error where OPA's parser accepts the source (so the AST
/// exists but this cannot build it); `None` when OPA rejects the source too.
fn refusal_for(e: &anyhow::Error, text: &str) -> Option<anyhow::Error> {
    let msg = e.to_string();
    if msg.contains("import shadows") {
        // OPA's parser accepts a repeated import; only its compiler objects.
        return Some(refused("a module that repeats an import"));
    }
    if msg.contains("cannot be shadowed") {
        return Some(refused("a rule named `input` or `data`"));
    }
    if msg.contains("cannot be aliased") && text.contains("import rego.v1 as") {
        return Some(refused("an alias of `import rego.v1`"));
    }
    if text.contains("$\"") || text.contains("$`") {
        // OPA v1's template strings (`$"x{y}"`): regorus's lexer has none.
        return Some(refused("a template string"));
    }
    if msg.contains("nesting too deep")
        || msg.contains("path exceeds maximum")
        || msg.contains("could not parse number")
    {
        // regorus's parser limits: expressions nested 32 deep, refs of 32 parts, numbers it
        // cannot hold (`1e400`); OPA's has none of these.
        return Some(refused("a module beyond regorus's parser limits"));
    }
    if text.contains("__target__") {
        // regorus reads `__target__` as a directive (a string, before any rule); for OPA it
        // is a rule like any other.
        return Some(refused("a `__target__` rule"));
    }
    if msg.contains("unexpected keyword `import`") {
        // OPA's parser takes imports after rules too.
        return Some(refused("an import after a rule"));
    }
    if msg.contains("`_` cannot be used as alias") {
        return Some(refused("`_` as an import alias"));
    }
    None
}

/// What OPA's parser rejects and regorus's accepts.
fn check_like_opa(m: &Module) -> Result<()> {
    for imp in &m.imports {
        let Ok(path) = regorus::utils::get_path_string(&imp.refr, None) else {
            continue;
        };
        let mut parts = path.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("rego"), Some("v1"), None, _)
            | (Some("future"), Some("keywords"), None, _)
            | (
                Some("future"),
                Some("keywords"),
                Some("contains" | "every" | "if" | "in" | "not" | "and" | "or"),
                None,
            ) => {}
            (Some("rego" | "future"), ..) => {
                return Err(imp.span.error(&format!("invalid import `{path}`")));
            }
            _ => {}
        }
    }
    for rule in &m.policy {
        if let Rule::Default { value, .. } = rule.as_ref() {
            if let Some(bad) = not_constant(value) {
                return Err(value.span().error(&format!(
                    "illegal default rule (value cannot contain {bad})"
                )));
            }
        }
    }
    Ok(())
}

/// OPA's experimental keywords `not` (a block form), `and` and `or`, turned on by
/// `import future.keywords` or `future.keywords.not|and|or`, change how OPA parses and
/// marshals the module (`not x` becomes `{"type": "not", "body": ...}`); regorus has none of
/// them, so a module that imports them and spells one is refused.
fn experimental_keywords(source: &Source, m: &Module) -> Result<()> {
    let mut import_lines = Vec::new();
    let mut on = false;
    for imp in &m.imports {
        import_lines.push(imp.span.line);
        if let Ok(path) = regorus::utils::get_path_string(&imp.refr, None) {
            on |= matches!(
                path.as_str(),
                "future.keywords"
                    | "future.keywords.not"
                    | "future.keywords.and"
                    | "future.keywords.or"
            );
        }
    }
    if !on {
        return Ok(());
    }
    let mut lexer = Lexer::new(source);
    loop {
        let tok = lexer.next_token()?;
        match tok.0 {
            TokenKind::Eof => return Ok(()),
            TokenKind::Ident
                if matches!(tok.1.text(), "not" | "and" | "or")
                    && !import_lines.contains(&tok.1.line) =>
            {
                return Err(refused(
                    "`not`, `and` or `or` with OPA's experimental keywords imported",
                ));
            }
            _ => {}
        }
    }
}

/// What makes a default rule's value not a constant (OPA: a var, ref or call outside a
/// comprehension).
fn not_constant(e: &Expr) -> Option<&'static str> {
    match e {
        // Scalars, and comprehensions: OPA does not look inside one.
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. }
        | Expr::ArrayCompr { .. }
        | Expr::SetCompr { .. }
        | Expr::ObjectCompr { .. } => None,
        Expr::Var { .. } => Some("var"),
        Expr::RefDot { .. } | Expr::RefBrack { .. } => Some("ref"),
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().find_map(|i| not_constant(i))
        }
        Expr::Object { fields, .. } => fields
            .iter()
            .find_map(|(_, k, v)| not_constant(k).or_else(|| not_constant(v))),
        _ => Some("call"),
    }
}

/// `text` from its first character that is neither whitespace nor in a comment.
fn skip_blank(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        match text.strip_prefix('#') {
            Some(rest) => text = rest.split_once('\n').map_or("", |(_, after)| after),
            None => return text,
        }
    }
}

/// `{"type": kind, "value": value}`.
fn term(kind: &str, value: Value) -> Value {
    obj([("type", Value::from(kind)), ("value", value)])
}

fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    let m: BTreeMap<Value, Value> = fields
        .into_iter()
        .map(|(k, v)| (Value::from(k), v))
        .collect();
    Value::from(m)
}

fn var(name: &str) -> Value {
    term("var", Value::from(name))
}

fn string_term(s: &str) -> Value {
    term("string", Value::from(s))
}

fn bool_true() -> Value {
    term("boolean", Value::Bool(true))
}

/// A ref to a builtin operator: `plus` is `[var plus]`, `internal.member_2` is
/// `[var internal, string member_2]`.
fn op_ref(name: &str) -> Value {
    let mut parts = name.split('.');
    let mut items = vec![var(parts.next().unwrap_or_default())];
    items.extend(parts.map(string_term));
    term("ref", Value::from(items))
}

fn arith_name(op: &ArithOp) -> &'static str {
    match op {
        ArithOp::Add => "plus",
        ArithOp::Sub => "minus",
        ArithOp::Mul => "mul",
        ArithOp::Div => "div",
        ArithOp::Mod => "rem",
    }
}

fn bool_name(op: &BoolOp) -> &'static str {
    match op {
        BoolOp::Lt => "lt",
        BoolOp::Le => "lte",
        BoolOp::Eq => "equal",
        BoolOp::Ge => "gte",
        BoolOp::Gt => "gt",
        BoolOp::Ne => "neq",
    }
}

fn bin_name(op: &BinOp) -> &'static str {
    match op {
        BinOp::Intersection => "and",
        BinOp::Union => "or",
    }
}

fn assign_name(op: &AssignOp) -> &'static str {
    match op {
        AssignOp::Eq => "eq",
        AssignOp::ColEq => "assign",
    }
}

/// Every comment of `source`: `(line, column, text after '#')`, read from the gaps between
/// tokens (which hold only whitespace and comments).
fn comments(source: &Source) -> Result<Vec<(u32, u32, String)>> {
    let text = source.contents();
    let mut lexer = Lexer::new(source);
    let mut out = Vec::new();
    let mut prev_end = 0usize;
    loop {
        let tok = lexer.next_token()?;
        let start = usize::try_from(tok.1.start).unwrap_or(usize::MAX);
        let gap = text
            .get(prev_end..start.min(text.len()))
            .unwrap_or_default();
        let mut offset = prev_end;
        for line in gap.split_inclusive('\n') {
            if let Some(hash) = line.find('#') {
                let at = offset + hash;
                let body = line[hash + 1..].trim_end_matches(['\n', '\r']);
                let (row, col) = line_col(text, at);
                out.push((row, col, body.to_owned()));
            }
            offset += line.len();
        }
        if tok.0 == TokenKind::Eof {
            break;
        }
        prev_end = usize::try_from(tok.1.end).unwrap_or(usize::MAX);
        // A string token's span leaves out its quotes: step past the closing one.
        if matches!(tok.0, TokenKind::String | TokenKind::RawString) {
            prev_end = prev_end.saturating_add(1);
        }
    }
    Ok(out)
}

/// 1-based line and column (in characters) of byte `at`.
fn line_col(text: &str, at: usize) -> (u32, u32) {
    let before = text.get(..at).unwrap_or_default();
    let row = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (
        u32::try_from(row).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

#[derive(Default)]
struct Converter {
    /// The next wildcard number (`_` is `$N`, numbered in parse order, as OPA's parser does).
    wildcards: u32,
    filename: String,
}

impl Converter {
    fn module(&mut self, m: &Module, comments: Vec<(u32, u32, String)>) -> Result<Value> {
        self.filename = m.package.span.source.get_path().clone();
        let mut out = BTreeMap::new();
        let mut path = vec![var("data")];
        for part in self.ref_parts(&m.package.refr)? {
            // Package paths are strings after `data` (`package a.b` is data.a.b).
            path.push(match as_var_name(&part) {
                Some(name) => string_term(&name),
                None => part,
            });
        }
        out.insert(Value::from("package"), obj([("path", Value::from(path))]));
        if !m.imports.is_empty() {
            let mut imports = Vec::new();
            for imp in &m.imports {
                let path = self.term(&imp.refr)?;
                let mut fields = BTreeMap::new();
                fields.insert(Value::from("path"), path);
                if let Some(alias) = &imp.r#as {
                    fields.insert(Value::from("alias"), Value::from(alias.text()));
                }
                imports.push(Value::from(fields));
            }
            out.insert(Value::from("imports"), Value::from(imports));
        }
        let mut rules = Vec::new();
        for rule in &m.policy {
            self.rule(rule, &mut rules)?;
        }
        if !rules.is_empty() {
            out.insert(Value::from("rules"), Value::from(rules));
        }
        if !comments.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD;
            let list = comments
                .into_iter()
                .map(|(row, col, text)| {
                    obj([
                        (
                            "Location",
                            obj([
                                ("file", Value::from(self.filename.as_str())),
                                ("row", Value::from(row)),
                                ("col", Value::from(col)),
                            ]),
                        ),
                        ("Text", Value::from(b64.encode(text.as_bytes()))),
                    ])
                })
                .collect::<Vec<_>>();
            out.insert(Value::from("comments"), Value::from(list));
        }
        Ok(Value::from(out))
    }

    fn next_wildcard(&mut self) -> Value {
        let v = var(&format!("${}", self.wildcards));
        self.wildcards += 1;
        v
    }

    fn rule(&mut self, rule: &Rule, out: &mut Vec<Value>) -> Result<()> {
        match rule {
            Rule::Default {
                refr,
                args,
                op,
                value,
                ..
            } => {
                let mut head = self.head_ref(refr)?;
                if !args.is_empty() {
                    let args = args
                        .iter()
                        .map(|a| self.term(a))
                        .collect::<Result<Vec<_>>>()?;
                    head.insert(Value::from("args"), Value::from(args));
                }
                head.insert(Value::from("value"), self.term(value)?);
                if *op == AssignOp::ColEq {
                    head.insert(Value::from("assign"), Value::Bool(true));
                }
                out.push(obj([
                    ("default", Value::Bool(true)),
                    ("head", Value::from(head)),
                    ("body", generated_body()),
                ]));
            }
            Rule::Spec { head, bodies, .. } => {
                let (mut h, default_value) = self.head(head, !bodies.is_empty())?;
                // The first body belongs to the rule; `else` bodies chain after it; further
                // plain bodies are rules of their own with the same head.
                let mut main: Option<Value> = None;
                let mut elses: Vec<(BTreeMap<Value, Value>, Value)> = Vec::new();
                let mut extra: Vec<Value> = Vec::new();
                if bodies.is_empty() {
                    main = Some(generated_body());
                }
                for body in bodies {
                    if body.is_else {
                        let mut eh = h.clone();
                        // `else := v` / `else = v` sets its own `assign`; a bare `else` keeps
                        // the head's.
                        let value = match &body.assign {
                            Some(a) => {
                                if a.op == AssignOp::ColEq {
                                    eh.insert(Value::from("assign"), Value::Bool(true));
                                } else {
                                    eh.remove(&Value::from("assign"));
                                }
                                self.term(&a.value)?
                            }
                            None => bool_true(),
                        };
                        eh.insert(Value::from("value"), value);
                        let b = self.rule_body(body)?;
                        elses.push((eh, b));
                    } else if main.is_none() {
                        main = Some(self.rule_body(body)?);
                    } else {
                        extra.push(self.rule_body(body)?);
                    }
                }
                if let Some(v) = default_value {
                    h.entry(Value::from("value")).or_insert(v);
                }
                if !elses.is_empty() && h.contains_key(&Value::from("key")) {
                    // OPA: "else keyword cannot be used on multi-value rules".
                    return Err(anyhow!(
                        "rego.parse_module: else keyword cannot be used on rules with a key"
                    ));
                }
                let mut chained: Option<Value> = None;
                for (eh, b) in elses.into_iter().rev() {
                    let mut r = BTreeMap::new();
                    r.insert(Value::from("head"), Value::from(eh));
                    r.insert(Value::from("body"), b);
                    if let Some(next) = chained.take() {
                        r.insert(Value::from("else"), next);
                    }
                    chained = Some(Value::from(r));
                }
                let head_value = Value::from(h);
                let mut r = BTreeMap::new();
                r.insert(Value::from("head"), head_value.clone());
                r.insert(Value::from("body"), main.unwrap_or_else(generated_body));
                if let Some(e) = chained {
                    r.insert(Value::from("else"), e);
                }
                out.push(Value::from(r));
                // `p if { a } { b }`: OPA makes each further body a rule with the same head.
                for b in extra {
                    out.push(obj([("head", head_value.clone()), ("body", b)]));
                }
            }
        }
        Ok(())
    }

    /// `name` (a one-part ref) and `ref` of a rule head.
    fn head_ref(&mut self, refr: &Expr) -> Result<BTreeMap<Value, Value>> {
        let parts = self.ref_parts(refr)?;
        let mut head = BTreeMap::new();
        if parts.len() == 1 {
            if let Some(name) = as_var_name(&parts[0]) {
                head.insert(Value::from("name"), Value::from(name));
            }
        }
        head.insert(Value::from("ref"), Value::from(parts));
        Ok(head)
    }

    /// `name` and `key` of a head whose ref has two parts (`p.q`, `p[k]`), as OPA's parser
    /// sets them: a rule written without a body is read as the expression `p.q := v` and
    /// becomes a v0 partial-object rule (key `q`, name `p`); with a body, the key is kept
    /// only when it is not ground (`p[k]`), and the name only when there is a value.
    fn two_part_head(head: &mut BTreeMap<Value, Value>, has_body: bool, has_value: bool) {
        let Some(Value::Array(parts)) = head.get(&Value::from("ref")) else {
            return;
        };
        let [first, second] = parts.as_slice() else {
            return;
        };
        let Some(name) = as_var_name(first) else {
            return;
        };
        let second = second.clone();
        let (with_key, with_name) = if has_body {
            (!ground(&second), has_value)
        } else {
            (has_value, has_value)
        };
        if with_key {
            head.insert(Value::from("key"), second);
        }
        if with_name {
            head.insert(Value::from("name"), Value::from(name));
        }
    }

    /// A head's `value` (and `assign` for `:=`), or the `true` OPA gives a head without one.
    fn head_value(
        &mut self,
        mut h: BTreeMap<Value, Value>,
        assign: Option<&RuleAssign>,
    ) -> Result<(BTreeMap<Value, Value>, Option<Value>)> {
        let Some(a) = assign else {
            return Ok((h, Some(bool_true())));
        };
        h.insert(Value::from("value"), self.term(&a.value)?);
        if a.op == AssignOp::ColEq {
            h.insert(Value::from("assign"), Value::Bool(true));
        }
        Ok((h, None))
    }

    /// The head's fields, and the value OPA gives a head without one (`true`), if it has none.
    fn head(
        &mut self,
        head: &RuleHead,
        has_body: bool,
    ) -> Result<(BTreeMap<Value, Value>, Option<Value>)> {
        match head {
            RuleHead::Compr { refr, assign, .. } => {
                let mut h = self.head_ref(refr)?;
                Self::two_part_head(&mut h, has_body, assign.is_some());
                self.head_value(h, assign.as_ref())
            }
            RuleHead::Set { refr, key, .. } => {
                let mut h = self.head_ref(refr)?;
                match key {
                    Some(k) => {
                        h.insert(Value::from("key"), self.term(k)?);
                        Ok((h, None))
                    }
                    None => Ok((h, Some(bool_true()))),
                }
            }
            RuleHead::Func {
                refr, args, assign, ..
            } => {
                let mut h = self.head_ref(refr)?;
                if has_body {
                    // `a.b(x) ... if ...`: OPA's parser names it `a`.
                    Self::two_part_head(&mut h, true, true);
                    h.remove(&Value::from("key"));
                }
                let args = args
                    .iter()
                    .map(|a| self.term(a))
                    .collect::<Result<Vec<_>>>()?;
                // `f()` has no `args` field in OPA's JSON (an empty list is left out).
                if !args.is_empty() {
                    h.insert(Value::from("args"), Value::from(args));
                }
                self.head_value(h, assign.as_ref())
            }
        }
    }

    fn rule_body(&mut self, body: &RuleBody) -> Result<Value> {
        if body.query.stmts.is_empty() {
            return Ok(generated_body());
        }
        self.body(&body.query)
    }

    fn body(&mut self, q: &Query) -> Result<Value> {
        let mut exprs = Vec::with_capacity(q.stmts.len());
        for (i, stmt) in q.stmts.iter().enumerate() {
            exprs.push(self.stmt(stmt, i)?);
        }
        Ok(Value::from(exprs))
    }

    fn stmt(&mut self, stmt: &LiteralStmt, index: usize) -> Result<Value> {
        let mut out = BTreeMap::new();
        out.insert(Value::from("index"), Value::from(index));
        let terms = match &stmt.literal {
            Literal::SomeVars { vars, .. } => {
                let symbols = vars
                    .iter()
                    .map(|v| {
                        if v.text() == "_" {
                            self.next_wildcard()
                        } else {
                            var(v.text())
                        }
                    })
                    .collect::<Vec<_>>();
                obj([("symbols", Value::from(symbols))])
            }
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                let call = Value::from(self.membership(key.as_deref(), value, collection)?);
                obj([("symbols", Value::from(vec![term("call", call)]))])
            }
            Literal::Expr { expr, .. } => self.expr_terms(expr)?,
            Literal::NotExpr { expr, .. } => {
                out.insert(Value::from("negated"), Value::Bool(true));
                self.expr_terms(expr)?
            }
            Literal::Every {
                key,
                value,
                domain,
                query,
                ..
            } => {
                let key = match key {
                    Some(k) if k.text() == "_" => self.next_wildcard(),
                    Some(k) => var(k.text()),
                    None => Value::Null,
                };
                let value = if value.text() == "_" {
                    self.next_wildcard()
                } else {
                    var(value.text())
                };
                let domain = self.term(domain)?;
                let body = self.body(query)?;
                obj([
                    ("key", key),
                    ("value", value),
                    ("domain", domain),
                    ("body", body),
                ])
            }
        };
        out.insert(Value::from("terms"), terms);
        if !stmt.with_mods.is_empty() {
            let mut withs = Vec::new();
            for w in &stmt.with_mods {
                let target = self.term(&w.refr)?;
                let value = self.term(&w.r#as)?;
                withs.push(obj([("target", target), ("value", value)]));
            }
            out.insert(Value::from("with"), Value::from(withs));
        }
        Ok(Value::from(out))
    }

    /// An expression statement's `terms`: the operator and operands of a call, or one term.
    fn expr_terms(&mut self, e: &Expr) -> Result<Value> {
        match self.call_parts(e)? {
            Some(parts) => Ok(Value::from(parts)),
            None => self.term(e),
        }
    }

    /// `[operator, operands...]` when `e` is a call (an operator or a function call).
    fn call_parts(&mut self, e: &Expr) -> Result<Option<Vec<Value>>> {
        let (name, lhs, rhs) = match e {
            Expr::Call { fcn, params, .. } => {
                let mut parts = vec![self.term(fcn)?];
                // `f` alone is a var: OPA's operator is always a ref.
                if let Some(name) = as_var_name(&parts[0]) {
                    parts[0] = term("ref", Value::from(vec![var(&name)]));
                }
                for p in params {
                    parts.push(self.term(p)?);
                }
                return Ok(Some(parts));
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                return self.membership(key.as_deref(), value, collection).map(Some);
            }
            Expr::ArithExpr { op, lhs, rhs, .. } => (arith_name(op), lhs, rhs),
            Expr::BoolExpr { op, lhs, rhs, .. } => (bool_name(op), lhs, rhs),
            Expr::BinExpr { op, lhs, rhs, .. } => (bin_name(op), lhs, rhs),
            Expr::AssignExpr { op, lhs, rhs, .. } => (assign_name(op), lhs, rhs),
            _ => return Ok(None),
        };
        let l = self.term(lhs)?;
        let r = self.term(rhs)?;
        Ok(Some(vec![op_ref(name), l, r]))
    }

    fn membership(
        &mut self,
        key: Option<&Expr>,
        value: &Expr,
        collection: &Expr,
    ) -> Result<Vec<Value>> {
        let mut parts = Vec::with_capacity(4);
        match key {
            Some(k) => {
                parts.push(op_ref("internal.member_3"));
                parts.push(self.term(k)?);
            }
            None => parts.push(op_ref("internal.member_2")),
        }
        parts.push(self.term(value)?);
        parts.push(self.term(collection)?);
        Ok(parts)
    }

    /// The parts of a ref (`input.x[0]` is `[var input, string x, number 0]`); anything else
    /// is one part.
    fn ref_parts(&mut self, e: &Expr) -> Result<Vec<Value>> {
        match e {
            Expr::RefDot { refr, field, .. } => {
                let mut parts = self.ref_parts(refr)?;
                parts.push(string_term(field.1.as_string()?.as_ref()));
                Ok(parts)
            }
            Expr::RefBrack { refr, index, .. } => {
                let mut parts = self.ref_parts(refr)?;
                parts.push(self.term(index)?);
                Ok(parts)
            }
            Expr::Var { span, value, .. } if span.text() != "_" => {
                Ok(vec![term("var", value.clone())])
            }
            _ => Ok(vec![self.term(e)?]),
        }
    }

    fn term(&mut self, e: &Expr) -> Result<Value> {
        Ok(match e {
            Expr::String { value, .. } | Expr::RawString { value, .. } => {
                term("string", value.clone())
            }
            Expr::Number { value, .. } => term("number", value.clone()),
            Expr::Bool { value, .. } => term("boolean", value.clone()),
            // OPA marshals its `Null` (an empty struct) as `{}`.
            Expr::Null { .. } => term("null", Value::new_object()),
            Expr::Var { value, span, .. } => {
                if span.text() == "_" {
                    self.next_wildcard()
                } else if matches!(span.text(), "input" | "data") {
                    // OPA's parser turns the root documents into refs of one part.
                    term("ref", Value::from(vec![term("var", value.clone())]))
                } else {
                    term("var", value.clone())
                }
            }
            Expr::Array { items, .. } => {
                let items = items
                    .iter()
                    .map(|i| self.term(i))
                    .collect::<Result<Vec<_>>>()?;
                term("array", Value::from(items))
            }
            Expr::Set { items, .. } => {
                let items = items
                    .iter()
                    .map(|i| self.term(i))
                    .collect::<Result<Vec<_>>>()?;
                // OPA's sets are sorted, without duplicates.
                let mut items = items;
                items.sort_by(order::compare);
                items.dedup_by(|a, b| order::compare(a, b).is_eq());
                term("set", Value::from(items))
            }
            Expr::Object { fields, .. } => {
                let mut pairs = Vec::with_capacity(fields.len());
                for (_, k, v) in fields {
                    let k = self.term(k)?;
                    let v = self.term(v)?;
                    pairs.push((k, v));
                }
                // OPA's objects iterate in key order (a stable sort: repeated keys stay).
                pairs.sort_by(|a, b| order::compare(&a.0, &b.0));
                let pairs = pairs
                    .into_iter()
                    .map(|(k, v)| Value::from(vec![k, v]))
                    .collect::<Vec<_>>();
                term("object", Value::from(pairs))
            }
            Expr::ArrayCompr { term: t, query, .. } => {
                let t = self.term(t)?;
                let body = self.body(query)?;
                term("arraycomprehension", obj([("term", t), ("body", body)]))
            }
            Expr::SetCompr { term: t, query, .. } => {
                let t = self.term(t)?;
                let body = self.body(query)?;
                term("setcomprehension", obj([("term", t), ("body", body)]))
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                let k = self.term(key)?;
                let v = self.term(value)?;
                let body = self.body(query)?;
                term(
                    "objectcomprehension",
                    obj([("key", k), ("value", v), ("body", body)]),
                )
            }
            Expr::UnaryExpr { expr, span, .. } => match expr.as_ref() {
                // OPA's parser negates only a number, a var, a ref or a call (`-(x)` and
                // `-[1]` are syntax errors there); regorus's AST keeps no parentheses, so
                // look at the text after the `-`.
                _ if !span
                    .source
                    .contents()
                    .get(usize::try_from(span.start).unwrap_or(usize::MAX)..)
                    .and_then(|t| t.strip_prefix('-'))
                    .and_then(|t| skip_blank(t).chars().next())
                    .is_some_and(|c| c.is_alphanumeric() || c == '_') =>
                {
                    return Err(span.error("unexpected token after `-`: expected number"));
                }
                // `- 1` is the number -1; `-x` is `minus(0, x)`, as OPA parses them.
                Expr::Number { span, .. } => term(
                    "number",
                    Value::from_json_str(&format!("-{}", span.text()))?,
                ),
                other => {
                    let operand = self.term(other)?;
                    term(
                        "call",
                        Value::from(vec![
                            op_ref("minus"),
                            term("number", Value::from(0u32)),
                            operand,
                        ]),
                    )
                }
            },
            Expr::RefDot { .. } | Expr::RefBrack { .. } => {
                term("ref", Value::from(self.ref_parts(e)?))
            }
            Expr::Call { .. }
            | Expr::Membership { .. }
            | Expr::ArithExpr { .. }
            | Expr::BoolExpr { .. }
            | Expr::BinExpr { .. }
            | Expr::AssignExpr { .. } => {
                let parts = self
                    .call_parts(e)?
                    .ok_or_else(|| anyhow!("rego.parse_module: not a call"))?;
                term("call", Value::from(parts))
            }
        })
    }
}

/// Whether a term holds no var, a call's function name aside (what OPA's parser asks of a
/// `p[k]` head's key: `p[concat("", ["a"])]` has none, `p[input.x]` and `p[f(x)]` do).
fn ground(t: &Value) -> bool {
    let Value::Object(o) = t else { return true };
    let kind = o.get(&Value::from("type")).and_then(|k| k.as_string().ok());
    let items = || {
        o.get(&Value::from("value"))
            .and_then(|v| v.as_array().ok())
            .map(|a| a.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    match kind.map(AsRef::as_ref) {
        Some("var") => false,
        Some("ref" | "array" | "set") => items().iter().all(ground),
        Some("call") => items().iter().skip(1).all(ground),
        Some("object") => items()
            .iter()
            .all(|p| p.as_array().is_ok_and(|kv| kv.iter().all(ground))),
        Some(_) | None => true,
    }
}

/// The name of a `{"type": "var"}` term.
fn as_var_name(t: &Value) -> Option<String> {
    let Value::Object(o) = t else { return None };
    if o.get(&Value::from("type")) != Some(&Value::from("var")) {
        return None;
    }
    o.get(&Value::from("value"))
        .and_then(|v| v.as_string().ok())
        .map(|s| s.as_ref().to_owned())
}

/// The body OPA's parser gives a rule written without one: `true`.
fn generated_body() -> Value {
    Value::from(vec![obj([
        ("index", Value::from(0u32)),
        ("terms", bool_true()),
    ])])
}

#[cfg(test)]
mod tests;

/// OPA's order of terms (`ast.Compare`), on their JSON form: first by kind, then by value.
mod order {
    use std::cmp::Ordering;

    use regorus::Value;

    fn kind_rank(kind: &str) -> u8 {
        match kind {
            "null" => 0,
            "boolean" => 1,
            "number" => 2,
            "string" => 3,
            "var" => 4,
            "ref" => 5,
            "array" => 6,
            "object" => 7,
            "set" => 8,
            "arraycomprehension" => 9,
            "objectcomprehension" => 10,
            "setcomprehension" => 11,
            _ => 12, // call
        }
    }

    fn field<'a>(t: &'a Value, name: &str) -> &'a Value {
        match t {
            Value::Object(o) => o.get(&Value::from(name)).unwrap_or(&Value::Undefined),
            _ => &Value::Undefined,
        }
    }

    fn slice(a: &Value, b: &Value, each: fn(&Value, &Value) -> Ordering) -> Ordering {
        let (Ok(a), Ok(b)) = (a.as_array(), b.as_array()) else {
            return a.cmp(b);
        };
        for (x, y) in a.iter().zip(b.iter()) {
            let c = each(x, y);
            if c.is_ne() {
                return c;
            }
        }
        a.len().cmp(&b.len())
    }

    fn pair(a: &Value, b: &Value) -> Ordering {
        slice(a, b, compare)
    }

    /// How two terms (`{"type", "value"}`) compare in OPA.
    pub fn compare(a: &Value, b: &Value) -> Ordering {
        let (ka, kb) = (field(a, "type"), field(b, "type"));
        let (Ok(ka), Ok(kb)) = (ka.as_string(), kb.as_string()) else {
            return a.cmp(b);
        };
        let rank = kind_rank(ka).cmp(&kind_rank(kb));
        if rank.is_ne() {
            return rank;
        }
        let (va, vb) = (field(a, "value"), field(b, "value"));
        match ka.as_ref() {
            "ref" | "array" | "call" | "set" => slice(va, vb, compare),
            // Objects are kept sorted by key: compare their pairs in order.
            "object" => slice(va, vb, pair),
            // Scalars compare as values (numbers numerically, strings bytewise).
            _ => va.cmp(vb),
        }
    }
}
