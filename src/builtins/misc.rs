//! Small pure builtins of OPA v1 that regorus 0.14 lacks: arrays, strings, regex, net.

use anyhow::{bail, Result};
use regorus::Value;

use super::Builtin;

/// This family's builtins.
pub const BUILTINS: &[Builtin] =
    &[Builtin { name: "array.flatten", nargs: 1, f: array_flatten, nondeterministic: false }];

/// `array.flatten(arr)`: the array with every element that is itself an array spliced in, one
/// level deep (OPA: `[1, [2, [3]]]` gives `[1, 2, [3]]`; sets and objects stay elements).
fn array_flatten(args: &[Value]) -> Result<Value> {
    let Value::Array(items) = &args[0] else { bail!("array.flatten: operand 1 must be array") };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item {
            Value::Array(inner) => out.extend(inner.iter().cloned()),
            other => out.push(other.clone()),
        }
    }
    Ok(Value::from(out))
}
