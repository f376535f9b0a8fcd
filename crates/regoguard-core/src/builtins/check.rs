//! Construction check: every function a policy calls exists.
//!
//! OPA refuses a call of an unknown function when it compiles the policies
//! (`rego_type_error: undefined function f`). regorus notices only when it evaluates the call
//! (the interpreter) or compiles an entrypoint that reaches it (the RVM), so a policy that
//! calls an unknown function in an unreached rule, or on an evaluator that only meets it at
//! request time, would build and then fail every request. This walks every expression of every
//! loaded module (rule heads and bodies, `else`, functions, comprehensions, `every`, `some ... in`,
//! `with` values and targets) and resolves each call as regorus does: a rule of the policies
//! (relative to the package, absolute, or through an import alias), one of our builtins
//! ([`super::lookup`]), one of regorus's, or `print`.

use std::collections::{BTreeSet, HashMap};

use regorus::unstable::{
    Expr, Literal, LiteralStmt, Module, Query, Rule, RuleHead, Span, BUILTINS,
};
use regorus::utils::get_path_string;
use regorus::Engine;

use crate::error::PolicyIssue;

/// Whether `name` (as a policy spells it, e.g. `io.jwt.decode`) is a builtin of either origin.
pub fn is_builtin(name: &str) -> bool {
    name == "print"
        || BUILTINS.contains_key(name)
        || super::lookup(name).is_some()
        || super::metadata::NAMES.contains(&name)
}

/// One issue per call of an unknown function (and per `with` that replaces one), in file order.
pub fn unknown_calls(engine: &mut Engine) -> Vec<PolicyIssue> {
    let modules = engine.get_modules().clone();
    let mut rules = BTreeSet::new();
    for m in &modules {
        let Some(package) = package_path(m) else {
            continue;
        };
        for rule in &m.policy {
            let refr = match rule.as_ref() {
                Rule::Spec {
                    head:
                        RuleHead::Compr { refr, .. }
                        | RuleHead::Set { refr, .. }
                        | RuleHead::Func { refr, .. },
                    ..
                }
                | Rule::Default { refr, .. } => refr,
            };
            if let Ok(path) = get_path_string(refr, Some(&package)) {
                rules.insert(path);
            }
        }
    }
    let mut issues = Vec::new();
    for m in &modules {
        let Some(package) = package_path(m) else {
            continue;
        };
        let mut aliases = HashMap::new();
        for import in &m.imports {
            let Ok(path) = get_path_string(&import.refr, None) else {
                continue;
            };
            if !path.starts_with("data.") {
                continue;
            }
            let alias = import.r#as.as_ref().map_or_else(
                || path.rsplit('.').next().unwrap_or_default().to_owned(),
                |span| span.text().to_owned(),
            );
            aliases.insert(alias, path);
        }
        for call in calls(m) {
            if !resolves(&call.name, &package, &aliases, &rules) {
                issues.push(PolicyIssue {
                    file: call.at.source.get_path().clone(),
                    line: call.at.line,
                    column: call.at.col,
                    code: "rego_type_error",
                    message: format!("undefined function {}", call.name),
                    snippet: String::new(),
                });
            }
        }
    }
    issues
}

/// One issue per rule written with chained bodies (`p := x if { ... } { ... }`): OPA takes
/// each further body as another definition with the same head, and regorus answers them
/// differently (the head's value becomes `true`, conflicting values go unreported). They are
/// refused when the policy is loaded, never answered wrongly; `else` chains are not affected.
pub fn chained_bodies(engine: &mut Engine) -> Vec<PolicyIssue> {
    let mut issues = Vec::new();
    for m in engine.get_modules() {
        for rule in &m.policy {
            let Rule::Spec { bodies, .. } = rule.as_ref() else {
                continue;
            };
            if let Some(b) = bodies.iter().skip(1).find(|b| !b.is_else) {
                issues.push(PolicyIssue {
                    file: b.span.source.get_path().clone(),
                    line: b.span.line,
                    column: b.span.col,
                    code: "rego_compile_error",
                    message: "chained rule bodies (`if { ... } { ... }`) are not supported: \
                              regorus answers them differently from OPA; write each body as \
                              its own definition of the rule"
                        .to_owned(),
                    snippet: String::new(),
                });
            }
        }
    }
    issues
}

/// One call of a function (or a `with` target that names one) in a module.
pub struct Call {
    /// The whole call (regorus's span; its line and column are those of the `(`).
    pub span: Span,
    /// Where the function's name starts: the location reported, as OPA reports it.
    pub at: Span,
    pub name: String,
}

/// Every call in `m`, in source order (`with` targets other than `input`/`data` included).
pub fn calls(m: &Module) -> Vec<Call> {
    let mut walker = Walker { calls: Vec::new() };
    for rule in &m.policy {
        walker.rule(rule);
    }
    walker.calls
}

/// Every call in one rule, in source order.
pub fn calls_in_rule(rule: &Rule) -> Vec<Call> {
    let mut walker = Walker { calls: Vec::new() };
    walker.rule(rule);
    walker.calls
}

/// Every call in one rule with the index of the body it is in: a call in the head counts as in
/// body 0 (OPA gives later bodies and `else` a copy of the head, but this one is the first).
pub fn calls_by_body(rule: &Rule) -> Vec<(usize, Call)> {
    let mut walker = Walker { calls: Vec::new() };
    let mut out = Vec::new();
    match rule {
        Rule::Spec { head, bodies, .. } => {
            walker.head(head);
            for (i, body) in bodies.iter().enumerate() {
                if let Some(a) = &body.assign {
                    walker.expr(&a.value);
                }
                walker.query(&body.query);
                // Head calls (drained with body 0) and this body's.
                out.extend(walker.calls.drain(..).map(|c| (i, c)));
            }
            out.extend(walker.calls.drain(..).map(|c| (0, c)));
        }
        Rule::Default { .. } => {
            walker.rule(rule);
            out.extend(walker.calls.drain(..).map(|c| (0, c)));
        }
    }
    out
}

/// Whether a call of `name` reaches something: a rule (relative, absolute, or through an
/// import alias) or a builtin.
fn resolves(
    name: &str,
    package: &str,
    aliases: &HashMap<String, String>,
    rules: &BTreeSet<String>,
) -> bool {
    if name.starts_with("data.") {
        return rules.contains(name);
    }
    let (first, rest) = name.split_once('.').map_or((name, ""), |(a, b)| (a, b));
    if let Some(target) = aliases.get(first) {
        let full = if rest.is_empty() {
            target.clone()
        } else {
            format!("{target}.{rest}")
        };
        if rules.contains(&full) {
            return true;
        }
    }
    rules.contains(&format!("{package}.{name}")) || is_builtin(name)
}

fn package_path(m: &Module) -> Option<String> {
    get_path_string(&m.package.refr, Some("data")).ok()
}

struct Walker {
    calls: Vec<Call>,
}

impl Walker {
    fn rule(&mut self, rule: &Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                self.head(head);
                for body in bodies {
                    if let Some(a) = &body.assign {
                        self.expr(&a.value);
                    }
                    self.query(&body.query);
                }
            }
            Rule::Default { args, value, .. } => {
                for a in args {
                    self.expr(a);
                }
                self.expr(value);
            }
        }
    }

    fn head(&mut self, head: &RuleHead) {
        match head {
            RuleHead::Compr { refr, assign, .. } => {
                self.expr(refr);
                if let Some(a) = assign {
                    self.expr(&a.value);
                }
            }
            RuleHead::Set { refr, key, .. } => {
                self.expr(refr);
                if let Some(k) = key {
                    self.expr(k);
                }
            }
            RuleHead::Func { args, assign, .. } => {
                for a in args {
                    self.expr(a);
                }
                if let Some(a) = assign {
                    self.expr(&a.value);
                }
            }
        }
    }

    fn query(&mut self, q: &Query) {
        for stmt in &q.stmts {
            self.stmt(stmt);
        }
    }

    fn stmt(&mut self, stmt: &LiteralStmt) {
        match &stmt.literal {
            Literal::SomeVars { .. } => {}
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k);
                }
                self.expr(value);
                self.expr(collection);
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.expr(expr),
            Literal::Every { domain, query, .. } => {
                self.expr(domain);
                self.query(query);
            }
        }
        for w in &stmt.with_mods {
            // `with input.x as v` / `with data.x as v` replace documents; any other target
            // names a function, which must exist (OPA: rego_type_error).
            if let Ok(target) = get_path_string(&w.refr, None) {
                if !(target == "input"
                    || target.starts_with("input.")
                    || target == "data"
                    || target.starts_with("data."))
                {
                    self.calls.push(Call {
                        span: w.refr.span().clone(),
                        at: w.refr.span().clone(),
                        name: target,
                    });
                }
            }
            self.expr(&w.r#as);
        }
    }

    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. }
            | Expr::Var { .. } => {}
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.expr(i);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.expr(k);
                    self.expr(v);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::Call {
                span, fcn, params, ..
            } => {
                if let Ok(name) = get_path_string(fcn, None) {
                    self.calls.push(Call {
                        span: span.clone(),
                        at: fcn.span().clone(),
                        name,
                    });
                }
                for p in params {
                    self.expr(p);
                }
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::RefDot { refr, .. } => self.expr(refr),
            Expr::RefBrack { refr, index, .. } => {
                self.expr(refr);
                self.expr(index);
            }
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k);
                }
                self.expr(value);
                self.expr(collection);
            }
        }
    }
}
