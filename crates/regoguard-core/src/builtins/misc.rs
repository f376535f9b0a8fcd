//! Small pure builtins of OPA v1 that regorus 0.14 lacks: arrays, strings, regex globs, and
//! the function forms of OPA's infix operators (`plus(1, 2)`, `lt(a, b)`, ...). Also two
//! replacements of regorus builtins whose answer differs from OPA's: `json.is_valid` and
//! `yaml.is_valid` of a non-string are `false` in OPA (regorus: a type error, so undefined).
//! Registered names take precedence over regorus's own on both evaluators.

use anyhow::{bail, Result};
use regorus::unstable::comparison::compare;
use regorus::unstable::BoolOp;
use regorus::Value;

use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] = &[
    Builtin::pure("array.flatten", 1, array_flatten),
    Builtin::pure("strings.split_n", 3, strings_split_n),
    Builtin::pure("regex.globs_match", 2, regex_globs_match),
    Builtin::pure("plus", 2, plus),
    Builtin::pure("minus", 2, minus),
    Builtin::pure("mul", 2, mul),
    Builtin::pure("div", 2, div),
    Builtin::pure("rem", 2, rem),
    Builtin::pure("and", 2, and),
    Builtin::pure("or", 2, or),
    Builtin::pure("equal", 2, |a| cmp(BoolOp::Eq, a)),
    Builtin::pure("neq", 2, |a| cmp(BoolOp::Ne, a)),
    Builtin::pure("lt", 2, |a| cmp(BoolOp::Lt, a)),
    Builtin::pure("lte", 2, |a| cmp(BoolOp::Le, a)),
    Builtin::pure("gt", 2, |a| cmp(BoolOp::Gt, a)),
    Builtin::pure("gte", 2, |a| cmp(BoolOp::Ge, a)),
    Builtin::pure("json.is_valid", 1, |a| {
        Ok(Value::from(
            matches!(&a[0], Value::String(s) if Value::from_json_str(s).is_ok()),
        ))
    }),
    Builtin::pure("yaml.is_valid", 1, |a| {
        Ok(Value::from(
            matches!(&a[0], Value::String(s) if Value::from_yaml_str(s).is_ok()),
        ))
    }),
];

pub(super) fn string<'a>(name: &str, n: usize, v: &'a Value) -> Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => bail!("{name}: operand {n} must be string"),
    }
}

pub(super) fn integer(name: &str, n: usize, v: &Value) -> Result<i64> {
    match v {
        Value::Number(x) if x.is_integer() => v
            .as_i64()
            .map_err(|_| anyhow::anyhow!("{name}: operand {n} is too large")),
        _ => bail!("{name}: operand {n} must be integer number"),
    }
}

/// `array.flatten(arr)`: the array with every element that is itself an array spliced in, one
/// level deep (OPA: `[1, [2, [3]]]` gives `[1, 2, [3]]`; sets and objects stay elements).
fn array_flatten(args: &[Value]) -> Result<Value> {
    let Value::Array(items) = &args[0] else {
        bail!("array.flatten: operand 1 must be array")
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item {
            Value::Array(inner) => out.extend(inner.iter().cloned()),
            other => out.push(other.clone()),
        }
    }
    Ok(Value::from(out))
}

/// `strings.split_n(s, delim, n)`: the first `n` parts of `split(s, delim)`, or the last `-n`
/// when `n` is negative (as OPA answers: `("a,b,c", ",", -1)` gives `["c"]`).
fn strings_split_n(args: &[Value]) -> Result<Value> {
    let name = "strings.split_n";
    let s = string(name, 1, &args[0])?;
    let delim = string(name, 2, &args[1])?;
    let n = integer(name, 3, &args[2])?;
    let parts: Vec<&str> = if delim.is_empty() {
        // Go's strings.Split with "" splits into characters.
        s.char_indices()
            .map(|(i, c)| &s[i..i + c.len_utf8()])
            .collect()
    } else {
        s.split(delim).collect()
    };
    let take = usize::try_from(n.unsigned_abs())
        .unwrap_or(usize::MAX)
        .min(parts.len());
    let chosen = if n >= 0 {
        &parts[..take]
    } else {
        &parts[parts.len() - take..]
    };
    Ok(Value::from(
        chosen.iter().map(|p| Value::from(*p)).collect::<Vec<_>>(),
    ))
}

/// One element of a regex glob: a character class and how often it repeats.
#[derive(Clone, Debug)]
struct GlobItem {
    /// `None` is `.` (any character); otherwise inclusive ranges.
    class: Option<Vec<(char, char)>>,
    /// `*` (zero or more) or `+` (one or more) follows it.
    repeat: Option<char>,
}

/// Parses the glob dialect of OPA's `regex.globs_match` (the glob-intersection library): `.`,
/// `[...]` classes of characters and `a-z` ranges, `*` and `+`; everything else, `\`, `?`, `|`,
/// `(`, `{` included, is a literal character (checked against OPA).
fn parse_glob(pattern: &str) -> Result<Vec<GlobItem>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut items: Vec<GlobItem> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' | '+' => {
                let Some(last) = items.last_mut() else {
                    bail!("regex.globs_match: {c} without a preceding element")
                };
                if last.repeat.is_some() {
                    bail!("regex.globs_match: repeated quantifier");
                }
                last.repeat = Some(c);
            }
            '.' => items.push(GlobItem {
                class: None,
                repeat: None,
            }),
            '[' => {
                let mut ranges = Vec::new();
                i += 1;
                while i < chars.len() && chars[i] != ']' {
                    let lo = chars[i];
                    if i + 2 < chars.len() && chars[i + 1] == '-' && chars[i + 2] != ']' {
                        let hi = chars[i + 2];
                        if hi < lo {
                            bail!("regex.globs_match: bad range {lo}-{hi}");
                        }
                        ranges.push((lo, hi));
                        i += 3;
                    } else {
                        ranges.push((lo, lo));
                        i += 1;
                    }
                }
                if i >= chars.len() {
                    bail!("regex.globs_match: unterminated [");
                }
                items.push(GlobItem {
                    class: Some(ranges),
                    repeat: None,
                });
            }
            _ => items.push(GlobItem {
                class: Some(vec![(c, c)]),
                repeat: None,
            }),
        }
        i += 1;
    }
    Ok(items)
}

fn classes_meet(a: Option<&[(char, char)]>, b: Option<&[(char, char)]>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a
            .iter()
            .any(|&(l1, h1)| b.iter().any(|&(l2, h2)| l1 <= h2 && l2 <= h1)),
    }
}

/// `regex.globs_match(g1, g2)`: whether some string matches both globs. A search over pairs
/// of positions: each glob is a small NFA (an item with `*`/`+` loops on itself).
/// Checked against OPA: `("a*", "")`, `(".*", "")` and `("a*", "b*")` do not meet.
fn regex_globs_match(args: &[Value]) -> Result<Value> {
    let a = parse_glob(string("regex.globs_match", 1, &args[0])?)?;
    let b = parse_glob(string("regex.globs_match", 2, &args[1])?)?;
    // A state (i, j, ui, uj): at item i of a and j of b; ui/uj = item already used once (so a
    // `+` item may now be skipped or repeated).
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(0usize, 0usize, false, false)];
    while let Some(state) = stack.pop() {
        if !seen.insert(state) {
            continue;
        }
        let (i, j, ui, uj) = state;
        // Epsilon moves: skip an optional item.
        // As OPA's library has it, a trailing `*` must match at least once ("xa*" and "x" do
        // not meet; "a*b" and "b" do), i.e. it is a `+`.
        let skippable = |items: &[GlobItem], k: usize, used: bool| {
            items.get(k).is_some_and(|it| match it.repeat {
                Some('*') => used || k + 1 < items.len(),
                Some('+') => used,
                _ => false,
            })
        };
        if i == a.len() && j == b.len() {
            return Ok(Value::Bool(true));
        }
        if skippable(&a, i, ui) {
            stack.push((i + 1, j, false, uj));
        }
        if skippable(&b, j, uj) {
            stack.push((i, j + 1, ui, false));
        }
        // Consume one character with both.
        if let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
            if classes_meet(x.class.as_deref(), y.class.as_deref()) {
                let (ni, nui) = if x.repeat.is_some() {
                    (i, true)
                } else {
                    (i + 1, false)
                };
                let (nj, nuj) = if y.repeat.is_some() {
                    (j, true)
                } else {
                    (j + 1, false)
                };
                stack.push((ni, nj, nui, nuj));
            }
        }
    }
    Ok(Value::Bool(false))
}

fn plus(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Number(a), Value::Number(b)) => Ok(Value::from(a.add(b)?)),
        _ => bail!("plus: operands must be numbers"),
    }
}

fn minus(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Number(a), Value::Number(b)) => Ok(Value::from(a.sub(b)?)),
        (Value::Set(a), Value::Set(b)) => Ok(Value::from(
            a.iter()
                .filter(|x| !b.contains(x))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
        )),
        (Value::Number(_) | Value::Set(_), _) => {
            bail!("minus: operand 2 must be the type of operand 1")
        }
        _ => bail!("minus: operand 1 must be number or set"),
    }
}

fn mul(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Number(a), Value::Number(b)) => Ok(Value::from(a.mul(b)?)),
        _ => bail!("mul: operands must be numbers"),
    }
}

fn div(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Number(a), Value::Number(b)) => {
            if b.as_f64() == Some(0.0) {
                bail!("div: divide by zero");
            }
            Ok(Value::from(a.clone().divide(b)?))
        }
        _ => bail!("div: operands must be numbers"),
    }
}

fn rem(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Number(a), Value::Number(b)) => {
            if !a.is_integer() || !b.is_integer() {
                bail!("rem: modulo on floating-point number");
            }
            if b.as_f64() == Some(0.0) {
                bail!("rem: modulo by zero");
            }
            Ok(Value::from(a.clone().modulo(b)?))
        }
        _ => bail!("rem: operands must be numbers"),
    }
}

fn and(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Set(a), Value::Set(b)) => Ok(Value::from(
            a.iter()
                .filter(|x| b.contains(x))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
        )),
        _ => bail!("and: operands must be sets"),
    }
}

fn or(args: &[Value]) -> Result<Value> {
    match (&args[0], &args[1]) {
        (Value::Set(a), Value::Set(b)) => Ok(Value::from(
            a.iter()
                .chain(b.iter())
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
        )),
        _ => bail!("or: operands must be sets"),
    }
}

fn cmp(op: BoolOp, args: &[Value]) -> Result<Value> {
    compare(&op, &args[0], &args[1])
}
