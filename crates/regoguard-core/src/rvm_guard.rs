//! What a policy revision is, read from its source once at construction: the constructs the
//! RVM of regorus 0.14.1 is known to evaluate differently from OPA (so `evaluator="auto"` runs
//! them on the interpreter), and whether the policy can read the moment (caching rule 8,
//! ARCHITECTURE.md "Caching rules").
//!
//! The scan is conservative and textual: comments and string literals are blanked, then calls
//! and heads are recognised by their tokens. It looks at every file of the revision, so an
//! entrypoint is flagged when any rule of the revision uses the construct (reachability is not
//! computed: a false positive only costs speed or caching, never correctness).
//!
//! Differences the scan does not need to catch because the engine checks every RVM answer at
//! run time ([`contains_undefined`]): an undefined value kept inside a collection (a function
//! with a `default` value inside a comprehension, an undefined rule as an object value).

use regorus::Value;

/// Builtins whose answer can change between two calls with equal arguments, as OPA defines
/// them (plus the time builtins that read the clock). `crate::builtins::all()` entries with
/// `nondeterministic: true` are added to these.
pub const NONDETERMINISTIC: &[&str] = &[
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "http.send",
    "io.jwt.decode_verify",
    "crypto.x509.parse_and_verify_certificates",
    "crypto.x509.parse_and_verify_certificates_with_options",
    "opa.runtime",
    "net.lookup_ip_addr",
];

/// What [`Facts::of`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Why the RVM must not evaluate this revision under `auto` (`None`: it may).
    pub rvm_unsafe: Option<String>,
    /// The first non-deterministic builtin the revision calls (`None`: decisions depend on the
    /// input and data only).
    pub reads_the_moment: Option<String>,
}

impl Facts {
    /// Scans the revision's policy texts.
    pub fn of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut facts = Facts::default();
        for text in texts {
            let code = blank(text);
            if facts.reads_the_moment.is_none() {
                facts.reads_the_moment = nondeterministic_call(&code);
            }
            if facts.rvm_unsafe.is_none() {
                facts.rvm_unsafe = rvm_unsafe(&code);
            }
        }
        facts
    }
}

/// The text with comments and string literals replaced by spaces (lines kept).
fn blank(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                out.push('"');
                while let Some(n) = chars.next() {
                    if n == '\\' {
                        chars.next();
                    } else if n == '"' {
                        break;
                    } else if n == '\n' {
                        out.push('\n');
                    }
                }
                out.push('"');
            }
            '`' => {
                out.push('"');
                for n in chars.by_ref() {
                    if n == '`' {
                        break;
                    } else if n == '\n' {
                        out.push('\n');
                    }
                }
                out.push('"');
            }
            c => out.push(c),
        }
    }
    out
}

/// Positions where `name(` is called as a whole dotted name.
fn calls<'a>(code: &'a str, name: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(name).filter_map(move |(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + name.len()..].trim_start().chars().next();
        let whole = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        (whole && after == Some('(')).then_some(i)
    })
}

fn nondeterministic_call(code: &str) -> Option<String> {
    let ours = crate::builtins::all()
        .filter(|b| b.nondeterministic)
        .map(|b| b.name);
    let mut names: Vec<&str> = NONDETERMINISTIC.iter().copied().chain(ours).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if calls(code, name).next().is_some() {
            return Some(name.to_owned());
        }
    }
    // Every JWT verifier (io.jwt.verify_*, decode_verify) checks exp/nbf against the clock
    // only in decode_verify; the others are deterministic. rand.* are all random.
    code.match_indices("rand.").find_map(|(i, _)| {
        let rest: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        let called = calls(code, &rest).next().is_some();
        called.then_some(rest)
    })
}

fn rvm_unsafe(code: &str) -> Option<String> {
    for name in crate::budget::GUARDED {
        if calls(code, name).next().is_some() {
            return Some(format!(
                "calls {name}, whose allocation only the interpreter bounds (evaluation budget)"
            ));
        }
    }
    for line in code.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("default ") {
            let head: String = rest
                .trim_start()
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ':' && *c != '=')
                .collect();
            if head.contains('(') {
                return Some(format!(
                    "a function has a default value ({}): the RVM loses it or cannot compile it",
                    head.split('(').next().unwrap_or("")
                ));
            }
        }
    }
    value_function_conflict(code)
        .or_else(|| iterating_else_chain(code))
        .or_else(|| dotted_ref_head(code))
        .or_else(|| comprehension_assignment(code))
}

/// A comprehension whose body assigns (`[k | some k in c; y := f(k)]`): regorus 0.14.1's RVM
/// keeps the element when the assigned value is undefined (a missing key, a failed builtin),
/// where OPA drops it. Such a comprehension can grant (a list of allowed projects that grows),
/// so the interpreter evaluates it. `|` only appears in comprehensions once strings and
/// comments are blanked.
fn comprehension_assignment(code: &str) -> Option<String> {
    let bytes = code.as_bytes();
    for (bar, _) in code.match_indices('|') {
        let mut depth = 0usize;
        let mut close = None;
        for (i, &b) in bytes.iter().enumerate().skip(bar + 1) {
            match b {
                b'[' | b'{' | b'(' => depth += 1,
                b']' | b'}' | b')' if depth == 0 => {
                    close = Some(i);
                    break;
                }
                b']' | b'}' | b')' => depth -= 1,
                _ => {}
            }
        }
        let body = &code[bar + 1..close.unwrap_or(code.len())];
        if body.contains(":=") {
            let line = code[..bar].lines().count().max(1);
            return Some(format!(
                "a comprehension assigns in its body (line {line}): the RVM keeps elements whose assigned value is undefined"
            ));
        }
    }
    None
}

/// A rule whose head is a dotted ref (`r.p.q := 0`): the RVM answers the leaf's value where
/// OPA builds the object `{"p": {"q": 0}}`.
fn dotted_ref_head(code: &str) -> Option<String> {
    statements(code).into_iter().find_map(|st| {
        let head: String = st
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ':' | '=' | '(' | '{'))
            .collect();
        let head = head.strip_prefix("default").unwrap_or(&head);
        let dotted = head.contains('.')
            && !matches!(head, "package" | "import")
            && !st.starts_with("package ")
            && !st.starts_with("import ");
        dotted.then(|| {
            format!("rule {head} has a dotted ref head: the RVM answers the leaf, not the object")
        })
    })
}

/// Top-level statements: a line that starts in column 0 (not with `}`), with the indented or
/// `}`/`else` lines that follow it.
fn statements(code: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in code.lines() {
        let continues = line.starts_with([' ', '\t', '}'])
            || line.trim_start().starts_with("else")
            || line.trim().is_empty();
        match out.last_mut() {
            Some(last) if continues => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.to_owned()),
        }
    }
    out
}

fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
        !part(before) && !part(after)
    })
}

/// An `else` chain where something other than a condition can be undefined: a body that
/// iterates (`some`, `every`, `[_]`; membership `x in c` is fine) over an undefined collection, or a value that is not
/// a constant. The RVM then abandons the chain and answers the default instead of the next
/// `else`.
fn iterating_else_chain(code: &str) -> Option<String> {
    statements(code).into_iter().find_map(|st| {
        if !has_word(&st, "else") {
            return None;
        }
        let head: String = st.chars().take_while(|c| !c.is_whitespace() && *c != ':' && *c != '=').collect();
        let iterates = ["some", "every"].iter().any(|w| has_word(&st, w)) || st.contains("[_]");
        if iterates {
            return Some(format!(
                "the else chain of {head} iterates (`some`, `every`, `[_]`) in a body: the RVM answers the default when the collection is undefined"
            ));
        }
        non_constant_values(&st).then(|| {
            format!("the else chain of {head} has a value that can be undefined: the RVM answers the default instead of the next else")
        })
    })
}

/// Builtins that are defined whenever their arguments are (a value built with them is
/// undefined only through its arguments).
const TOTAL: &[&str] = &[
    "sprintf",
    "concat",
    "lower",
    "upper",
    "count",
    "format_int",
    "json.marshal",
    "array.concat",
];

/// Whether a branch value of a chain (after `:=`/`=`, up to its `if`) can be undefined while
/// its body holds: it names something other than literals, [`TOTAL`] builtins, and refs its
/// own body tests as a condition on a line of their own (`project_id` in realistic policy).
fn non_constant_values(st: &str) -> bool {
    let mut branches = Vec::new();
    let mut rest = st;
    while let Some(i) = rest
        .match_indices("else")
        .map(|(i, _)| i)
        .find(|&i| has_word(&rest[i..i + 4], "else"))
    {
        branches.push(&rest[..i]);
        rest = &rest[i + 4..];
    }
    branches.push(rest);
    branches.into_iter().any(|branch| {
        let Some(i) = branch.find(":=").or_else(|| branch.find(" = ")) else {
            return false;
        };
        let after = &branch[i + 2..];
        let end = [after.find(" if"), after.find('\n')]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(after.len());
        let (value, body) = (&after[..end], &after[end..]);
        let guarded: Vec<&str> = body
            .lines()
            .map(|l| {
                l.trim()
                    .trim_start_matches("if")
                    .trim()
                    .trim_matches(['{', '}'])
                    .trim()
            })
            .collect();
        let mut word = String::new();
        let chars: Vec<char> = value.chars().chain(std::iter::once(' ')).collect();
        for (n, &c) in chars.iter().enumerate() {
            if c.is_alphanumeric() || c == '_' || c == '.' {
                word.push(c);
                continue;
            }
            let w = std::mem::take(&mut word);
            if w.is_empty()
                || w.starts_with(|c: char| c.is_ascii_digit())
                || matches!(w.as_str(), "true" | "false" | "null")
            {
                continue;
            }
            let called = chars[n..].iter().find(|c| !c.is_whitespace()) == Some(&'(');
            let safe = if called {
                TOTAL.contains(&w.as_str())
            } else {
                guarded.contains(&w.as_str())
            };
            if !safe {
                return true;
            }
        }
        false
    })
}

/// A function with an explicit value whose definitions can give two values for one call (two
/// value definitions, or one that iterates): OPA raises a conflict, the RVM returns a value.
fn value_function_conflict(code: &str) -> Option<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let lines: Vec<&str> = code.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some(open) = line.find('(') else { continue };
        let name = &line[..open];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        {
            continue;
        }
        let Some(close) = line[open..].find(')') else {
            continue;
        };
        let after = line[open + close + 1..].trim_start();
        if !(after.starts_with(":=") || (after.starts_with('=') && !after.starts_with("=="))) {
            continue;
        }
        let body: String = lines[n..lines.len().min(n + 12)].join("\n");
        let end = body.find("\n\n").unwrap_or(body.len());
        let body = &body[..end];
        let iterates = body.contains("some ") || body.contains("[_]") || body.contains(" in ");
        let count = seen.entry(name.to_owned()).or_insert(0);
        *count += 1;
        if *count > 1 || iterates {
            return Some(format!(
                "function {name} can give two values for one call; OPA raises a conflict, the RVM does not"
            ));
        }
    }
    None
}

/// Whether an RVM answer holds an undefined value inside a collection (regorus 0.14.1 keeps
/// one where OPA drops the element or makes the whole value undefined).
pub fn contains_undefined(v: &Value) -> bool {
    match v {
        Value::Undefined => true,
        Value::Array(a) => a.iter().any(contains_undefined),
        Value::Set(s) => s.iter().any(contains_undefined),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| contains_undefined(k) || contains_undefined(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_moment_outside_comments_and_strings() {
        assert_eq!(
            Facts::of(["allow if time.now_ns() < input.exp"])
                .reads_the_moment
                .as_deref(),
            Some("time.now_ns")
        );
        assert_eq!(
            Facts::of(["# time.now_ns()\nx := \"time.now_ns()\""]).reads_the_moment,
            None
        );
        assert_eq!(
            Facts::of(["x := rand.intn(\"a\", 3)"])
                .reads_the_moment
                .as_deref(),
            Some("rand.intn")
        );
        assert_eq!(Facts::of(["x := mytime.now_ns(1)"]).reads_the_moment, None);
        assert_eq!(Facts::of(["allow if input.a == 1"]), Facts::default());
    }

    #[test]
    fn flags_the_constructs_the_rvm_gets_wrong() {
        assert!(Facts::of(["default f(_) := 1000\nf(x) := x if x > 1"])
            .rvm_unsafe
            .is_some());
        assert!(Facts::of(["f(x) := 1 if true\nf(x) := 2 if true"])
            .rvm_unsafe
            .is_some());
        assert!(Facts::of(["f(x) := y if {\n\tsome y in [1, 2]\n}"])
            .rvm_unsafe
            .is_some());
        assert!(Facts::of(["r := numbers.range(0, input.n)"])
            .rvm_unsafe
            .is_some());
        assert!(
            Facts::of(["f(x) := x + 1\ndefault allow := false\nallow if f(1) == 2"])
                .rvm_unsafe
                .is_none()
        );
        assert!(Facts::of(["f(x) if x == 1\nf(x) if x == 2"])
            .rvm_unsafe
            .is_none());
        let chain = "default r := 0\nr := 2 if {\n\tsome x in input.b\n\tx == 0\n} else := 1\n";
        assert!(Facts::of([chain]).rvm_unsafe.is_some());
        let plain = "default r := 0\nr := 2 if {\n\tinput.x == 1\n} else := 1\nq if {\n\tsome x in input.b\n}\n";
        assert!(Facts::of([plain]).rvm_unsafe.is_none());
        let objects = "default r := {\"a\": 0}\nr := {\"a\": 1, \"s\": 401} if {\n\tinput.x == 1\n} else := {\"a\": 2}\n";
        assert!(Facts::of([objects]).rvm_unsafe.is_none());
        let valued = "default r := 0\nr := input.a if {\n\tnot na\n} else := 1\n";
        assert!(Facts::of([valued]).rvm_unsafe.is_some());
        let guarded = "r := {\"a\": 1} if {\n\tinput.x == 1\n} else := {\"r\": sprintf(\"%s\", [p])} if {\n\tp\n}\n";
        assert!(Facts::of([guarded]).rvm_unsafe.is_none());
        let unguarded = "r := {\"a\": 1} if {\n\tinput.x == 1\n} else := {\"r\": sprintf(\"%s\", [q])} if {\n\tp\n}\n";
        assert!(Facts::of([unguarded]).rvm_unsafe.is_some());
        assert!(
            Facts::of(["package a.b\nimport data.x.y\nr[k] := 1 if some k in input.b"])
                .rvm_unsafe
                .is_none()
        );
        assert!(Facts::of(["package a\nr.p.q := 0 if true"])
            .rvm_unsafe
            .is_some());
        assert!(
            Facts::of(["r := [k | some k in [1, 2]; y := input.nope[k]]"])
                .rvm_unsafe
                .is_some()
        );
        assert!(
            Facts::of(["r := {k: v | some k in [1]; v := {\"a\": [x | x := 1]}}"])
                .rvm_unsafe
                .is_some()
        );
        assert!(
            Facts::of(["r := [k | some k in input.b; k > 1]\ns := {k | some k in [1]}"])
                .rvm_unsafe
                .is_none()
        );
    }

    #[test]
    fn undefined_inside_is_found() {
        let v = Value::from(vec![Value::from(1), Value::Undefined]);
        assert!(contains_undefined(&v));
        assert!(!contains_undefined(&Value::from(vec![Value::from(1)])));
    }
}
