//! Loading, compiling and evaluating policies with regorus.
//!
//! A [`Compiled`] is one immutable revision: the parsed policies, the data, and for every
//! registered entrypoint either an RVM [`Program`] or, when the RVM cannot compile it (for
//! example `with`), the interpreter. Evaluation never shares an engine between threads: each
//! thread keeps its own engine clone and VMs ([`Worker`]), rebuilt when the revision changes.

use std::cell::RefCell;
use std::path::Path;
use std::sync::{Arc, Weak};

use regorus::languages::rego::compiler::{Compiler, CompilerError};
use regorus::rvm::{Program, RegoVM};
use regorus::{Engine, Value};

use crate::canonical;
use crate::error::{anyhow_like::ErrorText, issue_from_regorus, Error, PolicyIssue, Result};
use crate::key::FormSeeds;

/// The RVM stops a runaway policy after this many instructions (regorus's default, 25,000, is
/// too small for policies that iterate over real data). The interpreter has no such limit.
pub const MAX_INSTRUCTIONS: usize = 50_000_000;

/// Which evaluator runs an entrypoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Evaluator {
    /// The RVM when the entrypoint compiles to it, the interpreter otherwise.
    #[default]
    Auto,
    /// The RVM only: an entrypoint it cannot compile is a configuration error.
    Rvm,
    /// The tree-walking interpreter only.
    Interpreter,
}

impl Evaluator {
    /// Parses the Python-side name.
    ///
    /// # Errors
    /// `Error::Config` for any other name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(Self::Auto),
            "rvm" => Ok(Self::Rvm),
            "interpreter" => Ok(Self::Interpreter),
            other => Err(Error::config(format!(
                "evaluator must be 'auto', 'rvm' or 'interpreter', got {other:?}"
            ))),
        }
    }
}

/// One policy file as read from disk.
#[derive(Clone, Debug)]
pub struct PolicyFile {
    /// The path as the user wrote it, joined with the path inside a folder.
    pub path: String,
    pub text: String,
}

/// Reads every `.rego` file named by `paths` (files, or folders searched recursively), in a
/// stable order.
///
/// # Errors
/// `Error::Config` for a path that does not exist, a file that is not `.rego`, or no policy at
/// all; `Error::Policy` for a file that cannot be read as UTF-8 text.
pub fn read_policies(paths: &[String]) -> Result<Vec<PolicyFile>> {
    if paths.is_empty() {
        return Err(Error::config(
            "policies is empty: give at least one .rego file or folder",
        ));
    }
    let mut files = Vec::new();
    let mut issues = Vec::new();
    for given in paths {
        let p = Path::new(given);
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, given.trim_end_matches('/'), &mut found)?;
            if found.is_empty() {
                return Err(Error::config(format!("no .rego files under {given}")));
            }
            found.sort();
            for (display, full) in found {
                read_one(&full, display, &mut files, &mut issues);
            }
        } else if p.is_file() {
            if p.extension().and_then(|e| e.to_str()) != Some("rego") {
                return Err(Error::config(format!("{given} is not a .rego file")));
            }
            read_one(p, given.clone(), &mut files, &mut issues);
        } else {
            return Err(Error::config(format!("policy path {given} does not exist")));
        }
    }
    if issues.is_empty() {
        Ok(files)
    } else {
        Err(Error::Policy(issues))
    }
}

fn walk(dir: &Path, display: &str, out: &mut Vec<(String, std::path::PathBuf)>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::config(format!("cannot list {display}: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::config(format!("cannot list {display}: {e}")))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let shown = format!("{display}/{name}");
        // Follows symlinks (metadata, not symlink_metadata), as `opa run` does for bundles.
        if path.is_dir() {
            if !name.starts_with('.') {
                walk(&path, &shown, out)?;
            }
        } else if path.extension().and_then(|e| e.to_str()) == Some("rego") {
            out.push((shown, path));
        }
    }
    Ok(())
}

fn read_one(
    path: &Path,
    display: String,
    files: &mut Vec<PolicyFile>,
    issues: &mut Vec<PolicyIssue>,
) {
    match std::fs::read(path).map(String::from_utf8) {
        Ok(Ok(text)) => files.push(PolicyFile {
            path: display,
            text,
        }),
        Ok(Err(_)) => issues.push(file_issue(display, "the file is not UTF-8 text".into())),
        Err(e) => issues.push(file_issue(display, e.to_string())),
    }
}

#[cold]
fn file_issue(file: String, message: String) -> PolicyIssue {
    PolicyIssue {
        file,
        line: 0,
        column: 0,
        code: "rego_parse_error",
        message,
        snippet: String::new(),
    }
}

/// Reads a `.json`, `.yaml` or `.yml` base document.
///
/// # Errors
/// `Error::Config` for another extension or a missing file; `Error::Data` for text that does
/// not parse or whose root is not an object.
pub fn read_data_file(path: &str) -> Result<Value> {
    let p = Path::new(path);
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "json" | "yaml" | "yml") {
        return Err(Error::config(format!(
            "data file {path} must end in .json, .yaml or .yml"
        )));
    }
    if !p.is_file() {
        return Err(Error::config(format!("data file {path} does not exist")));
    }
    let text = std::fs::read_to_string(p).map_err(|e| Error::data(format!("{path}: {e}")))?;
    let value = if ext == "json" {
        // serde_json reports line and column; regorus's own JSON reader does not.
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::data(format!("{path}:{}:{}: {e}", e.line(), e.column())))?;
        Value::from_json_str(&json.to_string())
            .map_err(|e| Error::data(format!("{path}: {e:#}")))?
    } else {
        Value::from_yaml_str(&text).map_err(|e| Error::data(format!("{path}: {e:#}")))?
    };
    check_data_root(&value, path)?;
    Ok(value)
}

/// The base document must be an object (it is mounted at `data`).
///
/// # Errors
/// `Error::Data` otherwise.
pub fn check_data_root(value: &Value, origin: &str) -> Result<()> {
    if matches!(value, Value::Object(_)) {
        Ok(())
    } else {
        Err(Error::data(format!(
            "{origin}: the base document must be an object, got {}",
            crate::decision::type_name(value)
        )))
    }
}

/// A fresh engine configured for OPA's semantics (ARCHITECTURE.md, "Semantics are OPA's").
fn new_engine(rego_v0: bool) -> Engine {
    let mut engine = Engine::new();
    engine.set_rego_v0(rego_v0);
    // OPA makes an expression whose builtin call fails undefined unless strict mode is on;
    // regorus raises by default.
    engine.set_strict_builtin_errors(false);
    // OPA builtins regorus lacks (src/builtins): names are unique, so this cannot fail.
    if let Err(e) = crate::builtins::register_interpreter(&mut engine) {
        debug_assert!(false, "builtin registration failed: {e:#}");
    }
    engine
}

/// Parses every file, reporting every broken file rather than the first.
///
/// # Errors
/// `Error::Policy` listing a parse issue per broken file.
pub fn parse_policies(files: &[PolicyFile], rego_v0: bool) -> Result<Engine> {
    let mut engine = new_engine(rego_v0);
    let mut issues = Vec::new();
    // rego.metadata.rule()/chain() calls become their values, and `# METADATA` blocks OPA
    // refuses are reported (src/builtins/metadata.rs).
    let named: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    let rewritten = match crate::builtins::metadata::rewrite_all(&named, rego_v0) {
        Ok(texts) => texts,
        Err(found) => {
            issues.extend(found);
            vec![None; files.len()]
        }
    };
    for (f, rewritten) in files.iter().zip(rewritten) {
        let text = rewritten.unwrap_or_else(|| f.text.clone());
        // A failed add_policy leaves the engine as it was, so the next file still parses.
        if let Err(e) = engine.add_policy(f.path.clone(), text) {
            let mut issue = issue_from_regorus(&ErrorText::of(&e), &f.path, "rego_parse_error");
            hint_rego_v0(&mut issue, rego_v0);
            issues.push(issue);
        }
    }
    if issues.is_empty() {
        check_duplicate_defaults(files)?;
        // Every call of an unknown function, on every evaluator (src/builtins/check.rs).
        let mut refused = crate::builtins::check::unknown_calls(&mut engine);
        refused.extend(crate::builtins::check::chained_bodies(&mut engine));
        if !refused.is_empty() {
            return Err(Error::Policy(refused));
        }
        Ok(engine)
    } else {
        Err(Error::Policy(issues))
    }
}

/// A policy revision: a digest of every policy and data byte.
#[derive(Clone, Debug)]
pub struct Revision {
    pub digest: [u8; 32],
    /// The first 16 hex digits of the digest, as shown to users.
    pub display: Arc<str>,
    /// The bundles this revision was built from, with their manifest revisions (empty without
    /// bundles); the digest covers their names and revisions (`bundle::revision_digest`).
    pub bundles: Arc<[crate::bundle::info::BundleInfo]>,
}

/// Two revisions are equal when their digests are (the digest covers the bundle revisions).
impl PartialEq for Revision {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Revision {}

impl Revision {
    /// Hashes the policy texts, the data's canonical bytes and the Rego version. Where and in
    /// which order the files were loaded from does not matter (neither changes a decision), so
    /// every worker and host loading the same policies gets the same revision.
    ///
    /// # Errors
    /// `Error::Data` if the data has no canonical form.
    pub fn of(files: &[PolicyFile], data: &Value, rego_v0: bool) -> Result<Self> {
        let mut texts: Vec<[u8; 32]> = files
            .iter()
            .map(|f| *blake3::hash(f.text.as_bytes()).as_bytes())
            .collect();
        texts.sort_unstable();
        let mut h = blake3::Hasher::new();
        h.update(b"regoguard/revision/v1\0");
        h.update(&[u8::from(rego_v0)]);
        h.update(&(texts.len() as u64).to_le_bytes());
        for t in &texts {
            h.update(t);
        }
        let data_bytes =
            canonical::to_bytes(data, "data").map_err(|e| Error::data(e.to_string()))?;
        h.update(&data_bytes);
        let digest = *h.finalize().as_bytes();
        Ok(Self::from_digest(digest, Arc::from([])))
    }

    fn from_digest(digest: [u8; 32], bundles: Arc<[crate::bundle::info::BundleInfo]>) -> Self {
        let display: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            digest,
            display: Arc::from(display),
            bundles,
        }
    }

    /// This revision as built from `bundles` (unchanged when there are none).
    #[must_use]
    pub fn with_bundles(self, bundles: Arc<[crate::bundle::info::BundleInfo]>) -> Self {
        if bundles.is_empty() {
            return self;
        }
        Self::from_digest(
            crate::bundle::info::revision_digest(&self.digest, &bundles),
            bundles,
        )
    }
}

/// One entrypoint of a revision.
pub struct Entrypoint {
    pub name: Arc<str>,
    /// The rule evaluated: `name`, or `name.allow` when `name` is a package ([`package_allow`]).
    pub rule: Arc<str>,
    /// Keys of this entrypoint under this revision, one domain per input form.
    pub seeds: FormSeeds,
    /// The compiled program, or `None` when the interpreter evaluates it.
    program: Option<Arc<Program>>,
    /// Why the RVM was not used (empty when it is).
    pub fallback_reason: Option<String>,
}

impl Entrypoint {
    /// `"rvm"` or `"interpreter"`.
    pub fn evaluator_name(&self) -> &'static str {
        if self.program.is_some() {
            "rvm"
        } else {
            "interpreter"
        }
    }
}

/// An immutable, fully compiled revision.
pub struct Compiled {
    /// Which authorizer this belongs to: workers are per (thread, owner).
    owner: u64,
    pub revision: Revision,
    /// Prepared engine, cloned by each worker (a cheap, Arc-sharing clone).
    engine: Engine,
    data: Value,
    pub entrypoints: Vec<Entrypoint>,
    evaluator: Evaluator,
    /// Time and memory budget of every evaluation (`budget.rs`).
    pub budget: crate::budget::Budget,
    /// What the source says about the RVM and the moment (`rvm_guard.rs`).
    pub facts: crate::rvm_guard::Facts,
}

impl Compiled {
    /// Compiles `entrypoints` over the parsed `policies` and `data`.
    ///
    /// # Errors
    /// `Error::Policy` for compile errors, `Error::Evaluation` for an entrypoint that names no
    /// rule, `Error::Data` for data that conflicts with rules, `Error::Config` when
    /// `Evaluator::Rvm` is asked for and the RVM cannot compile an entrypoint.
    pub fn build(
        owner: u64,
        policies: &Engine,
        revision: Revision,
        data: Value,
        entrypoints: &[Arc<str>],
        evaluator: Evaluator,
        budget: crate::budget::Budget,
    ) -> Result<Self> {
        let mut engine = policies.clone();
        engine.clear_data();
        engine
            .add_data(data.clone())
            .map_err(|e| Error::data(format!("{e:#}")))?;
        let facts = crate::rvm_guard::Facts::of(
            policies
                .get_policies()
                .map_err(|e| Error::config(format!("{e:#}")))?
                .iter()
                .map(|s| s.get_contents().as_str()),
        );
        crate::budget::install(&mut engine, budget)?;
        budget.apply_to_engine(&mut engine);
        let mut compiled = Compiled {
            owner,
            revision,
            engine,
            data,
            entrypoints: Vec::with_capacity(entrypoints.len()),
            evaluator,
            budget,
            facts,
        };
        for name in entrypoints {
            compiled.add_entrypoint(name)?;
        }
        Ok(compiled)
    }

    /// A copy of this revision with one more entrypoint.
    ///
    /// # Errors
    /// As [`Compiled::build`].
    pub fn with_entrypoint(&self, name: &str) -> Result<Self> {
        let mut next = Compiled {
            owner: self.owner,
            revision: self.revision.clone(),
            engine: self.engine.clone(),
            data: self.data.clone(),
            entrypoints: Vec::with_capacity(self.entrypoints.len() + 1),
            evaluator: self.evaluator,
            budget: self.budget,
            facts: self.facts.clone(),
        };
        for ep in &self.entrypoints {
            next.entrypoints.push(Entrypoint {
                name: ep.name.clone(),
                rule: ep.rule.clone(),
                seeds: ep.seeds,
                program: ep.program.clone(),
                fallback_reason: ep.fallback_reason.clone(),
            });
        }
        next.add_entrypoint(name)?;
        Ok(next)
    }

    fn add_entrypoint(&mut self, name: &str) -> Result<()> {
        if !name.starts_with("data.") {
            return Err(Error::config(format!(
                "entrypoint must be a full rule path such as data.authz.allow, got {name:?}"
            )));
        }
        let (rule, policy) = match self
            .engine
            .compile_with_entrypoint(&regorus::Rc::from(name))
        {
            Ok(policy) => (name.to_owned(), policy),
            Err(e) => {
                let Some(rule) = package_allow(&self.engine, name) else {
                    return Err(compile_error(name, &e));
                };
                let policy = self
                    .engine
                    .compile_with_entrypoint(&regorus::Rc::from(rule.as_str()))
                    .map_err(|e| compile_error(&rule, &e))?;
                (rule, policy)
            }
        };
        // compile_with_entrypoint turns print gathering on; prints are not collected here.
        self.engine.set_gather_prints(false);
        let (program, fallback_reason) = if self.evaluator == Evaluator::Interpreter {
            (None, Some("evaluator='interpreter'".to_owned()))
        } else if let (Evaluator::Auto, Some(why)) = (self.evaluator, &self.facts.rvm_unsafe) {
            (
                None,
                Some(format!("the RVM is known to differ from OPA here: {why}")),
            )
        } else {
            match Compiler::compile_from_policy_with_host_await(
                &policy,
                &[rule.as_str()],
                crate::builtins::host_await_table(),
            ) {
                Ok(program) => {
                    // Surfaces rule/data conflicts at construction, not on the first request.
                    let mut vm = RegoVM::new();
                    vm.load_program(program.clone());
                    vm.set_data(self.data.clone())
                        .map_err(|e| Error::data(format!("{e:#}")))?;
                    (Some(program), None)
                }
                // OPA rejects a call of an unknown function at compile time (rego_type_error); the
                // RVM compiler is the only part of regorus that notices before evaluation.
                Err(e) if is_unknown_function(&e.error) => {
                    return Err(Error::Policy(vec![issue_from_regorus(
                        &ErrorText::of(&e),
                        "<policies>",
                        "rego_type_error",
                    )]))
                }
                Err(e) if self.evaluator == Evaluator::Auto => (None, Some(format!("{e:#}"))),
                Err(e) => {
                    return Err(Error::config(format!(
                        "evaluator='rvm' but the RVM cannot compile {name}: {e:#}"
                    )))
                }
            }
        };
        self.entrypoints.push(Entrypoint {
            name: Arc::from(name),
            rule: Arc::from(rule.as_str()),
            seeds: FormSeeds::new(&self.revision.digest, name),
            program,
            fallback_reason,
        });
        Ok(())
    }

    /// The authorizer this revision belongs to.
    pub fn owner(&self) -> u64 {
        self.owner
    }

    /// The evaluator choice this revision was compiled with.
    pub fn evaluator(&self) -> Evaluator {
        self.evaluator
    }

    /// The index of a registered entrypoint.
    #[inline]
    pub fn entrypoint_index(&self, name: &str) -> Option<usize> {
        self.entrypoints.iter().position(|e| &*e.name == name)
    }

    /// Evaluates entrypoint `index` for `input` on this thread's worker.
    ///
    /// # Errors
    /// `Error::Evaluation` for any runtime failure of the policy.
    ///
    /// # Concurrency
    /// Lock-free: each thread evaluates on its own engine clone and VMs.
    pub fn evaluate(self: &Arc<Self>, index: usize, input: Value) -> Result<Value> {
        let ep = self
            .entrypoints
            .get(index)
            .ok_or_else(|| Error::evaluation("?", format!("no entrypoint number {index}")))?;
        // Which authorizer's allow_net http.send consults, and its time budget (http.send's
        // timeout is clamped to what is left of it); a thread-local swap, no allocation.
        let _net = crate::builtins::http::Current::enter(self.owner, self.budget.timeout);
        WORKERS.with(|cell| {
            // A re-entrant call (never expected: evaluation calls no Python) gets a one-off worker.
            let Ok(mut workers) = cell.try_borrow_mut() else {
                return Worker::new(self).run(ep, index, input);
            };
            let worker = if let Some(i) = workers.iter().position(|w| w.owner == self.owner) {
                if !std::ptr::eq(workers[i].compiled.as_ptr(), Arc::as_ptr(self)) {
                    workers[i] = Worker::new(self);
                }
                &mut workers[i]
            } else {
                // Drop workers of authorizers that are gone before adding one.
                workers.retain(|w| w.compiled.strong_count() > 0);
                workers.push(Worker::new(self));
                let last = workers.len() - 1;
                &mut workers[last]
            };
            worker.run(ep, index, input)
        })
    }
}

fn is_unknown_function(e: &CompilerError) -> bool {
    matches!(
        e,
        CompilerError::UnknownFunction { .. }
            | CompilerError::UnknownBuiltinFunction { .. }
            | CompilerError::NotBuiltinFunction { .. }
    )
}

/// OPA rejects two `default` definitions of one rule (`rego_type_error`); regorus keeps one.
/// `default` can only start a statement, so a line scan per package finds them.
///
/// # Errors
/// `Error::Policy` with one issue per repeated default.
pub fn check_duplicate_defaults(files: &[PolicyFile]) -> Result<()> {
    let mut seen: std::collections::HashMap<String, (String, usize)> =
        std::collections::HashMap::new();
    let mut issues = Vec::new();
    for f in files {
        let mut package = String::new();
        for (n, line) in f.text.lines().enumerate() {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("package ") {
                package = rest.split_whitespace().next().unwrap_or("").to_owned();
                continue;
            }
            let Some(rest) = trimmed.strip_prefix("default ") else {
                continue;
            };
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '[' | ']' | '"'))
                .collect();
            if name.is_empty() {
                continue;
            }
            let rule = format!("data.{package}.{name}");
            let column = line.len() - trimmed.len() + 1;
            if let Some((first_file, first_line)) = seen.get(&rule) {
                issues.push(PolicyIssue {
                    file: f.path.clone(),
                    line: u32::try_from(n + 1).unwrap_or(u32::MAX),
                    column: u32::try_from(column).unwrap_or(u32::MAX),
                    code: "rego_type_error",
                    message: format!(
                        "multiple default rules {rule} found (first at {first_file}:{first_line})"
                    ),
                    snippet: String::new(),
                });
            } else {
                seen.insert(rule, (f.path.clone(), n + 1));
            }
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Error::Policy(issues))
    }
}

#[cold]
fn compile_error(entrypoint: &str, e: &anyhow::Error) -> Error {
    let text = ErrorText::of(e);
    // regorus reports an unknown rule path with this unlocated message; the test
    // `unknown_entrypoint_is_an_evaluation_error` pins it so an upgrade that changes it fails.
    if text.0.contains("not a valid rule path") {
        return Error::evaluation(
            entrypoint,
            format!("no rule at {entrypoint} (unknown entrypoint)"),
        );
    }
    let issue = issue_from_regorus(&text, "<policies>", "rego_compile_error");
    Error::Policy(vec![issue])
}

thread_local! {
    static WORKERS: RefCell<Vec<Worker>> = const { RefCell::new(Vec::new()) };
}

/// One thread's evaluation state for one authorizer's current revision.
struct Worker {
    owner: u64,
    /// Weak so a dropped revision is freed; also identifies the revision (pointer equality).
    compiled: Weak<Compiled>,
    engine: Option<Engine>,
    vms: Vec<Option<RegoVM>>,
}

impl Worker {
    fn new(compiled: &Arc<Compiled>) -> Self {
        Worker {
            owner: compiled.owner,
            compiled: Arc::downgrade(compiled),
            engine: None,
            vms: Vec::new(),
        }
    }

    fn run(&mut self, ep: &Entrypoint, index: usize, input: Value) -> Result<Value> {
        let Some(compiled) = self.compiled.upgrade() else {
            return Err(Error::evaluation(&ep.name, "the authorizer was dropped"));
        };
        let Some(program) = &ep.program else {
            return self.interpret(&compiled, ep, input);
        };
        if self.vms.len() <= index {
            self.vms.resize_with(index + 1, || None);
        }
        let slot = &mut self.vms[index];
        if slot.is_none() {
            let mut vm = RegoVM::new();
            vm.load_program(program.clone());
            crate::builtins::prepare_vm(&mut vm);
            vm.set_max_instructions(MAX_INSTRUCTIONS);
            compiled.budget.apply_to_vm(&mut vm);
            vm.set_data(compiled.data.clone())
                .map_err(|e| eval_error(&ep.name, &e))?;
            *slot = Some(vm);
        }
        let Some(vm) = slot.as_mut() else {
            return Err(Error::evaluation(&ep.name, "no VM"));
        };
        vm.set_input(input.clone());
        match crate::builtins::execute_rvm(vm) {
            // regorus 0.14's RVM answers undefined where the interpreter (and OPA) raise a
            // conflict error (tests/cases/opa_semantics.yaml). Undefined is rare for a decision
            // rule, so the interpreter confirms every undefined answer; both paths then agree.
            Ok(Value::Undefined) => self.interpret(&compiled, ep, input),
            // It also keeps undefined values inside collections (README, known
            // differences): the interpreter answers those too.
            Ok(v) if crate::rvm_guard::contains_undefined(&v) => {
                self.interpret(&compiled, ep, input)
            }
            Ok(v) => Ok(v),
            Err(e) => Err(eval_error(&ep.name, &e)),
        }
    }

    fn interpret(&mut self, compiled: &Compiled, ep: &Entrypoint, input: Value) -> Result<Value> {
        let engine = self.engine.get_or_insert_with(|| {
            let mut e = compiled.engine.clone();
            e.set_gather_prints(false);
            e
        });
        engine.set_input(input);
        engine
            .eval_rule(ep.rule.to_string())
            .map_err(|e| eval_error(&ep.name, &e))
    }
}

/// An evaluation error whose first line is `file:line:col: message` when regorus located it.
#[cold]
fn eval_error(entrypoint: &str, e: &dyn std::fmt::Display) -> Error {
    let text = ErrorText::of(&e);
    if let Some(exceeded) = crate::budget::classify(entrypoint, &text.0) {
        return exceeded;
    }
    if text.0.contains("--> ") {
        let issue = issue_from_regorus(&text, "", "eval_error");
        let mut message = format!(
            "{}:{}:{}: {}",
            issue.file, issue.line, issue.column, issue.message
        );
        if !issue.snippet.is_empty() {
            message.push('\n');
            message.push_str(&issue.snippet);
        }
        Error::evaluation(entrypoint, message)
    } else {
        Error::evaluation(entrypoint, text.0.trim())
    }
}

/// The rule an entrypoint naming a *package* evaluates: `<package>.allow`, as fastapi-opa and
/// OPA's HTTP API clients read `result.allow` from the package document. `None` when `name`
/// is no package with an `allow` rule (the caller reports its original error).
pub fn package_allow(engine: &Engine, name: &str) -> Option<String> {
    let packages = engine.get_packages().ok()?;
    let wanted = name.strip_prefix("data.")?;
    if !packages
        .iter()
        .any(|p| p.strip_prefix("data.").unwrap_or(p) == wanted)
    {
        return None;
    }
    Some(format!("{name}.allow"))
}

/// Appends the hint a Rego v0 policy needs to a parse error that only v1 raises.
pub fn hint_rego_v0(issue: &mut PolicyIssue, rego_v0: bool) {
    if !rego_v0
        && (issue.message.contains("`if` keyword is required")
            || issue.message.contains("`contains` keyword is required"))
    {
        // On a line of its own after the snippet: the first line stays OPA's message.
        if !issue.snippet.is_empty() {
            issue.snippet.push('\n');
        }
        issue.snippet.push_str(
            "hint: this looks like a Rego v0 policy: pass rego_v0=True to parse it as v0, or add `if`/`contains` for v1",
        );
    }
}
