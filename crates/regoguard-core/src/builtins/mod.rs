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
//!
//! How they reach the evaluators (ARCHITECTURE.md, "Builtins"):
//! - interpreter: [`register_interpreter`] adds each one with `Engine::add_extension`; regorus
//!   looks extensions up after the policy's own functions and before its builtins.
//! - RVM: the entrypoint is compiled with [`host_await_table`], so every call of one of these
//!   names becomes a `HostAwait` instruction; [`execute_rvm`] runs such a program in the VM's
//!   suspendable mode and answers each suspension by calling the function. A program without
//!   any of our calls keeps the run-to-completion fast path.

use std::collections::HashMap;
use std::sync::OnceLock;

use regorus::rvm::vm::{ExecutionMode, SuspendReason};
use regorus::rvm::RegoVM;
use regorus::{Engine, Value};

pub mod aws;
pub mod check;
pub mod crypto;
pub mod glob;
pub mod http;
pub mod jwt;
pub mod metadata;
pub mod misc;
pub mod net;
pub mod parse;
pub mod schema;
pub mod template;
pub mod uri;
pub mod x509;
mod x509_constraints;

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

impl Builtin {
    /// A deterministic builtin (the common case).
    pub const fn pure(
        name: &'static str,
        nargs: u8,
        f: fn(&[Value]) -> anyhow::Result<Value>,
    ) -> Self {
        Builtin {
            name,
            nargs,
            f,
            nondeterministic: false,
        }
    }
}

/// Every builtin this module adds, family by family. Adding a family is one line here.
pub fn all() -> impl Iterator<Item = &'static Builtin> {
    let families: &[&[Builtin]] = &[
        misc::BUILTINS,
        glob::BUILTINS,
        net::BUILTINS,
        http::BUILTINS,
        schema::BUILTINS,
        aws::BUILTINS,
        template::BUILTINS,
        jwt::BUILTINS,
        crypto::BUILTINS,
        x509::BUILTINS,
        uri::BUILTINS,
        parse::BUILTINS,
    ];
    families.iter().flat_map(|f| f.iter())
}

/// Every builtin a policy can call, regorus's own and ours, sorted (`regoguard.builtins()`).
pub fn supported() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = regorus::unstable::BUILTINS
        .keys()
        .copied()
        .chain(all().map(|b| b.name))
        .collect();
    names.push("print");
    names.extend_from_slice(metadata::NAMES);
    names.sort_unstable();
    names.dedup();
    names
}

/// Our builtin called `name`, if any.
pub fn lookup(name: &str) -> Option<&'static Builtin> {
    static BY_NAME: OnceLock<HashMap<&'static str, &'static Builtin>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| all().map(|b| (b.name, b)).collect())
        .get(name)
        .copied()
}

/// A builtin's refusal to answer: the call's arguments are valid for OPA, but regoguard
/// cannot give OPA's exact answer (README, "Builtins"). Unlike any other failure it is an
/// evaluation error, not undefined, so a decision that reaches it fails instead of going on
/// with a value OPA would not have given.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Calls `b` with OPA's non-strict error rule: a failure is undefined, never an error, except
/// [`OutOfTime`], which fails the evaluation (an undefined answer could grant under `not`),
/// and a [`Refused`] answer.
///
/// # Errors
/// [`OutOfTime`] and [`Refused`] only.
#[inline]
pub fn call(b: &Builtin, args: &[Value]) -> anyhow::Result<Value> {
    if args.len() != usize::from(b.nargs) || args.contains(&Value::Undefined) {
        return Ok(Value::Undefined);
    }
    match (b.f)(args) {
        Ok(v) => Ok(v),
        Err(e) if e.is::<OutOfTime>() || e.is::<Refused>() => Err(e),
        Err(_) => Ok(Value::Undefined),
    }
}

/// A builtin spent the evaluation's whole time budget (ARCHITECTURE.md, "Caching rules" 9):
/// the evaluation ends with a budget error. Its text is the one `budget::classify` reads.
#[derive(Debug)]
pub struct OutOfTime(pub &'static str);

impl std::fmt::Display for OutOfTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: exceeded time limit", self.0)
    }
}

impl std::error::Error for OutOfTime {}

thread_local! {
    static TICKS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// One unit of a long builtin computation (a glob match's backtracking): every 1024 units the
/// evaluation's remaining time budget is read, and when it is spent the builtin stops with
/// [`OutOfTime`].
///
/// # Errors
/// [`OutOfTime`] when the budget is spent.
#[inline]
pub fn tick(name: &'static str) -> anyhow::Result<()> {
    let n = TICKS.with(|t| {
        let n = t.get().wrapping_add(1);
        t.set(n);
        n
    });
    if n % 1024 == 0 && http::remaining_budget().is_zero() {
        return Err(OutOfTime(name).into());
    }
    Ok(())
}

/// Registers every builtin of [`all`] on `engine` as a regorus extension.
///
/// # Errors
/// When regorus refuses a registration (a name registered twice).
pub fn register_interpreter(engine: &mut Engine) -> anyhow::Result<()> {
    for b in all() {
        engine.add_extension(
            b.name.to_owned(),
            b.nargs,
            Box::new(move |args: Vec<Value>| call(b, &args)),
        )?;
    }
    Ok(())
}

/// `(name, argument count)` of every builtin, as the RVM compiler's host-await registration
/// (`Compiler::compile_from_policy_with_host_await`) takes them.
pub fn host_await_table() -> &'static [(&'static str, usize)] {
    static TABLE: OnceLock<Vec<(&'static str, usize)>> = OnceLock::new();
    TABLE.get_or_init(|| all().map(|b| (b.name, usize::from(b.nargs))).collect())
}

/// Prepares a fresh VM for its program: suspendable when the program calls one of our
/// builtins (each call suspends the VM), run-to-completion otherwise (the fast path).
pub fn prepare_vm(vm: &mut RegoVM) {
    let mode = if vm.get_program().has_host_await() {
        ExecutionMode::Suspendable
    } else {
        ExecutionMode::RunToCompletion
    };
    vm.set_execution_mode(mode);
}

/// Runs the VM's program to its result, answering every `HostAwait` suspension with the
/// builtin it names.
///
/// # Errors
/// The VM's own errors, and a suspension that names no builtin of ours (a policy calling
/// `__builtin_host_await` directly).
pub fn execute_rvm(vm: &mut RegoVM) -> anyhow::Result<Value> {
    let mut value = vm.execute()?;
    loop {
        let answer = match vm.suspend_reason() {
            None => return Ok(value),
            Some(SuspendReason::HostAwait {
                identifier,
                argument,
                ..
            }) => {
                let Some(b) = identifier.as_string().ok().and_then(|name| lookup(name)) else {
                    anyhow::bail!("the policy awaited an unknown host function {identifier}");
                };
                // The compiler packs the call's arguments into one array.
                match argument {
                    Value::Array(args) => call(b, &args.to_vec())?,
                    _ => Value::Undefined,
                }
            }
            Some(other) => anyhow::bail!("the RVM stopped unexpectedly: {other:?}"),
        };
        value = vm.resume(Some(answer))?;
    }
}

#[cfg(test)]
mod tests;
