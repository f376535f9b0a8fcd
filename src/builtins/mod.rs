//! OPA builtins that regorus lacks, registered on both evaluators.
//!
//! Each family module (`jwt.rs`, `crypto.rs`, ...) exposes `pub const BUILTINS: &[Builtin]`;
//! [`all`] chains them. A builtin is a plain function of its evaluated arguments, so the same
//! code runs as a regorus extension on the interpreter and as a host builtin on the RVM.
//!
//! Errors follow OPA's non-strict mode: a builtin that fails (bad argument type, malformed
//! token) returns `Err`, and the expression that called it is undefined; it never panics.
//! A builtin whose answer depends on the moment reports it through [`crate::eval_context`]
//! (`valid_until` for a token's `exp`/`nbf`, `volatile` for randomness or the network) and
//! reads the evaluation's clock from [`crate::eval_context::now_unix_ns`].

use regorus::Value;

/// A builtin implemented here: `name` as OPA spells it, its argument count, and the function.
pub struct Builtin {
    /// OPA's name, e.g. `io.jwt.decode_verify`.
    pub name: &'static str,
    /// How many arguments it takes.
    pub nargs: u8,
    /// The implementation: the evaluated arguments in, the result out.
    pub f: fn(&[Value]) -> anyhow::Result<Value>,
    /// Whether its result can change between two calls with equal arguments (the clock,
    /// randomness, the network): decisions that reach it are cached only as
    /// [`crate::eval_context`] allows.
    pub nondeterministic: bool,
}

/// Every builtin this module adds, family by family.
pub fn all() -> impl Iterator<Item = &'static Builtin> {
    let families: &[&[Builtin]] = &[];
    families.iter().flat_map(|f| f.iter())
}
