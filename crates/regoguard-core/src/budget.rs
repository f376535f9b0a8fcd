//! Evaluation budgets: every evaluation ends within its time and memory budget (caching rule 9,
//! ARCHITECTURE.md "Caching rules"); exceeding one is an [`Error::Evaluation`] whose message
//! starts with [`EXCEEDED`], counted as `regoguard_eval_budget_exceeded_total`, never cached.
//!
//! - **Time**: regorus's cooperative [`ExecutionTimerConfig`] on the interpreter's engine and on
//!   every RVM; both check the clock every [`CHECK_INTERVAL`] work units.
//! - **Memory**: regorus's `allocator-memory-limits` (mimalloc as the global allocator, counting
//!   bytes). The RVM gets a per-execution [`MemoryBudgetConfig`]; the interpreter only knows a
//!   process-wide ceiling, set to the Rust heap in use when an authorizer is built plus
//!   [`CEILING_FACTOR`] budgets (raised, never lowered, by later authorizers).
//! - **Up-front allocations**: `numbers.range(0, n)` reserves `n` values before any check can
//!   run, and under `ulimit -v` a failed reservation aborts the process. The interpreter gets
//!   replacements ([`install`]) that refuse a range past the budget before reserving it, and
//!   a `units.parse_bytes` that refuses exponents no byte count needs (the original spends
//!   seconds building a ten-million-digit number in one uninterruptible call). The RVM cannot
//!   take replacements, so `auto` evaluates entrypoints that call them on the interpreter
//!   (`rvm_guard`).
//! - **Long builtins**: ours that can run long (`glob.match`'s backtracking) count their steps
//!   with [`crate::builtins::tick`], which reads what is left of the time budget and fails the
//!   evaluation with [`crate::builtins::OutOfTime`] once it is spent.
//! - **Instructions**: the RVM also stops after [`crate::engine::MAX_INSTRUCTIONS`].

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::rvm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, LimitError, MemoryBudgetConfig, Value};

use crate::error::{Error, Result};

/// How every budget failure's message starts (the metric and the tests key on it).
pub const EXCEEDED: &str = "evaluation budget exceeded";

/// Work units (interpreter steps, RVM instructions) between two reads of the clock.
pub const CHECK_INTERVAL: u32 = 32;

/// The interpreter's process-wide ceiling is the heap in use plus this many budgets, so a few
/// concurrent evaluations of ordinary size never trip it.
pub const CEILING_FACTOR: u64 = 4;

/// One authorizer's budgets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Wall-clock time of one evaluation.
    pub timeout: Duration,
    /// Bytes one evaluation may allocate.
    pub memory_bytes: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            memory_bytes: 256 << 20,
        }
    }
}

impl Budget {
    /// Validates user-given values.
    ///
    /// # Errors
    /// `Error::Config` for a timeout that is not a positive finite number of seconds (at most a
    /// day), or a memory budget under 1 MiB.
    pub fn new(timeout_seconds: f64, memory_bytes: u64) -> Result<Self> {
        if !(timeout_seconds.is_finite() && timeout_seconds > 0.0 && timeout_seconds <= 86_400.0) {
            return Err(Error::config(format!(
                "eval_timeout_seconds must be a number > 0 and <= 86400, got {timeout_seconds}"
            )));
        }
        if memory_bytes < (1 << 20) {
            return Err(Error::config(format!(
                "eval_memory_bytes must be at least 1 MiB (1048576), got {memory_bytes}"
            )));
        }
        Ok(Self {
            timeout: Duration::from_secs_f64(timeout_seconds),
            memory_bytes,
        })
    }

    fn timer(&self) -> ExecutionTimerConfig {
        ExecutionTimerConfig {
            limit: self.timeout,
            check_interval: NonZeroU32::new(CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// Puts the time budget on an engine (its clones inherit it) and raises the process-wide
    /// memory ceiling to cover this budget.
    pub fn apply_to_engine(&self, engine: &mut Engine) {
        engine.set_execution_timer_config(self.timer());
        raise_ceiling(self.memory_bytes);
    }

    /// Puts both budgets on a VM (checked per execution).
    pub fn apply_to_vm(&self, vm: &mut RegoVM) {
        vm.set_execution_timer_config(Some(self.timer()));
        vm.set_memory_budget_config(
            NonZeroU64::new(self.memory_bytes).map(|limit| MemoryBudgetConfig { limit }),
        );
    }

    /// Most values `numbers.range` may build under this budget.
    fn max_range_len(&self) -> u64 {
        self.memory_bytes / std::mem::size_of::<Value>() as u64
    }
}

static CEILING: AtomicU64 = AtomicU64::new(0);

fn raise_ceiling(budget: u64) {
    regorus_mimalloc::limits::flush_thread_counters();
    let in_use = regorus_mimalloc::limits::global_allocation_stats_snapshot().allocated;
    let wanted = in_use.saturating_add(budget.saturating_mul(CEILING_FACTOR));
    if CEILING.fetch_max(wanted, Ordering::AcqRel) < wanted {
        regorus::set_global_memory_limit(Some(CEILING.load(Ordering::Acquire)));
    }
}

/// Maps regorus's limit errors (both evaluators) to a budget error; anything else is `None`.
pub fn classify(entrypoint: &str, text: &str) -> Option<Error> {
    let lower = text.to_ascii_lowercase();
    let what = if lower.contains("exceeded time limit") {
        "time"
    } else if lower.contains("exceeded memory limit") || lower.contains("exceeded memory budget") {
        "memory"
    } else if lower.contains("maximum instruction limit") {
        "instructions"
    } else {
        return None;
    };
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("exceeded"))
        .unwrap_or(text)
        .trim();
    Some(Error::evaluation(
        entrypoint,
        format!("{EXCEEDED} ({what}): {line}"),
    ))
}

/// Whether `e` is a budget failure.
pub fn is_exceeded(e: &Error) -> bool {
    matches!(e, Error::Evaluation(f) if f.message.starts_with(EXCEEDED))
}

/// Builtins the interpreter gets replaced (see the module docs); the RVM guard routes their
/// callers to the interpreter.
pub const GUARDED: &[&str] = &["numbers.range", "numbers.range_step", "units.parse_bytes"];

/// Installs the guarded builtins on `engine` (before it compiles anything).
///
/// # Errors
/// `Error::Config` if regorus refuses an extension (a name registered twice).
pub fn install(engine: &mut Engine, budget: Budget) -> Result<()> {
    let max = budget.max_range_len();
    let reg = |e: &mut Engine, name: &str, n: u8, f: Box<dyn regorus::Extension>| {
        e.add_extension(name.to_owned(), n, f)
            .map_err(|e| Error::config(format!("{name}: {e:#}")))
    };
    reg(
        engine,
        "numbers.range",
        2,
        Box::new(move |a: Vec<Value>| range(&a[0], &a[1], None, max)),
    )?;
    reg(
        engine,
        "numbers.range_step",
        3,
        Box::new(move |a: Vec<Value>| range(&a[0], &a[1], Some(&a[2]), max)),
    )?;
    reg(
        engine,
        "units.parse_bytes",
        1,
        Box::new(|a: Vec<Value>| parse_bytes(&a[0])),
    )?;
    Ok(())
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) if n.is_integer() => n.as_i64(),
        _ => None,
    }
}

/// OPA's `numbers.range`/`range_step`, refusing more than `max` values before reserving them.
/// Non-integer operands are undefined (OPA's non-strict mode), as in regorus.
fn range(from: &Value, to: &Value, step: Option<&Value>, max: u64) -> anyhow::Result<Value> {
    let (Some(a), Some(b)) = (int(from), int(to)) else {
        return Ok(Value::Undefined);
    };
    let step = match step {
        None => 1,
        Some(s) => match int(s) {
            Some(s) if s > 0 => s,
            _ => return Ok(Value::Undefined),
        },
    };
    let span = a.abs_diff(b);
    let len = span / step.unsigned_abs() + 1;
    if len > max {
        return Err(anyhow::Error::new(LimitError::MemoryLimitExceeded {
            usage: len.saturating_mul(std::mem::size_of::<Value>() as u64),
            limit: max.saturating_mul(std::mem::size_of::<Value>() as u64),
        }));
    }
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let dir: i64 = if b >= a { 1 } else { -1 };
    let mut v = a;
    for _ in 0..len {
        out.push(Value::from(v));
        v = v.saturating_add(dir * step);
    }
    Ok(Value::from(out))
}

/// Largest decimal exponent `units.parse_bytes` accepts in its number (10^400 bytes already
/// exceeds every unit; OPA's own float64 parse of larger literals overflows).
const MAX_EXPONENT: i64 = 400;

thread_local! {
    static PLAIN: std::cell::RefCell<Option<Engine>> = const { std::cell::RefCell::new(None) };
}

/// `units.parse_bytes` with numbers of absurd magnitude refused; others go to regorus's own.
fn parse_bytes(s: &Value) -> anyhow::Result<Value> {
    let Value::String(text) = s else {
        return Ok(Value::Undefined);
    };
    if exponent_too_large(text) || text.len() > 4096 {
        // No input in the message (inputs may be masked fields).
        anyhow::bail!("units.parse_bytes: its number exceeded memory limit of one evaluation (exponent > {MAX_EXPONENT})");
    }
    PLAIN.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| anyhow::anyhow!("units.parse_bytes re-entered"))?;
        if slot.is_none() {
            let mut e = Engine::new();
            e.set_strict_builtin_errors(false);
            e.add_policy(
                "parse_bytes.rego".into(),
                "package g\nr := units.parse_bytes(input)\n".into(),
            )?;
            *slot = Some(e);
        }
        let engine = slot.as_mut().ok_or_else(|| anyhow::anyhow!("no engine"))?;
        engine.set_input(s.clone());
        engine.eval_rule("data.g.r".into())
    })
}

fn exponent_too_large(text: &str) -> bool {
    let Some(pos) = text.find(['e', 'E']) else {
        return false;
    };
    let digits: String = text[pos + 1..]
        .trim_start_matches(['+', '-'])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.len() > 6 || digits.parse::<i64>().is_ok_and(|e| e > MAX_EXPONENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_matches_opa_and_refuses_past_the_budget() {
        let n = |v: i64| Value::from(v);
        let r = range(&n(0), &n(3), None, 100).unwrap();
        assert_eq!(r, Value::from_json_str("[0,1,2,3]").unwrap());
        assert_eq!(
            range(&n(3), &n(0), None, 100).unwrap(),
            Value::from_json_str("[3,2,1,0]").unwrap()
        );
        assert_eq!(
            range(&n(0), &n(10), Some(&n(4)), 100).unwrap(),
            Value::from_json_str("[0,4,8]").unwrap()
        );
        assert_eq!(
            range(&n(0), &n(1), Some(&n(0)), 100).unwrap(),
            Value::Undefined
        );
        assert_eq!(
            range(&Value::from(0.5), &n(1), None, 100).unwrap(),
            Value::Undefined
        );
        let e = range(&n(0), &n(300_000_000), None, 1_000).unwrap_err();
        assert!(e.downcast_ref::<LimitError>().is_some());
    }

    #[test]
    fn parse_bytes_refuses_huge_exponents_and_delegates_the_rest() {
        assert!(exponent_too_large("10e10000000EiB"));
        assert!(!exponent_too_large("1.5e3KiB"));
        assert!(!exponent_too_large("10GiB"));
        assert_eq!(
            parse_bytes(&Value::from("1KiB")).unwrap(),
            Value::from(1024_u64)
        );
        assert!(parse_bytes(&Value::from("10e10000000EiB")).is_err());
    }

    #[test]
    fn limit_errors_are_classified() {
        let e = classify(
            "data.a.b",
            "x.rego:1:1: error: execution exceeded time limit (elapsed=1ns, limit=1ns)",
        )
        .unwrap();
        assert!(is_exceeded(&e));
        assert!(classify("data.a.b", "conflict").is_none());
    }
}
