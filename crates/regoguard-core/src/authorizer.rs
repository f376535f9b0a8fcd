//! The composition: revision state → key → L1 → engine, with metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use regorus::{Engine, Value};

use crate::cache::{CacheConfig, DecisionCache, Lookup};
use crate::canonical;
use crate::clock;
use crate::decision::{DecisionId, Outcome, Source};
use crate::decision_log::{DecisionLog, DecisionLogConfig, Record};
use crate::engine::{self, Compiled, Evaluator, PolicyFile, Revision};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::metrics::Metrics;
pub use crate::request::InputForm;

/// Where the base document comes from.
#[derive(Clone, Debug)]
pub enum DataSource {
    /// Given as a value; `reload()` keeps it (with any `set_data` changes).
    Inline(Value),
    /// A `.json`/`.yaml` file, re-read by `reload()`.
    File(String),
}

/// Everything an [`Authorizer`] is built from.
#[derive(Clone, Debug)]
pub struct AuthorizerConfig {
    pub policies: Vec<String>,
    pub entrypoint: String,
    pub data: DataSource,
    pub cache: Option<CacheConfig>,
    pub rego_v0: bool,
    pub evaluator: Evaluator,
    /// Decision logging; off when `None`.
    pub decision_log: Option<DecisionLogConfig>,
    /// Time and memory budget of each evaluation.
    pub budget: crate::budget::Budget,
    /// OPA bundles (`regoguard.Bundle`), besides any `.tar.gz` or `.manifest` folder among
    /// `policies` (README "Bundles").
    pub bundles: Vec<Arc<crate::bundle::BundleConfig>>,
}

impl AuthorizerConfig {
    /// A configuration with the defaults of the Python constructor.
    pub fn new(policies: Vec<String>) -> Self {
        Self {
            policies,
            entrypoint: "data.authz.allow".to_owned(),
            data: DataSource::Inline(Value::new_object()),
            cache: Some(CacheConfig::default()),
            rego_v0: false,
            evaluator: Evaluator::Auto,
            decision_log: None,
            budget: crate::budget::Budget::default(),
            bundles: Vec::new(),
        }
    }
}

/// What the writers (reload, `set_data`, new entrypoints) share; readers never touch it.
struct Sources {
    files: Vec<PolicyFile>,
    parsed: Engine,
    data: Value,
    entrypoints: Vec<Arc<str>>,
    /// The bundles in force (their modules and data are in `files` and `data` too) and the
    /// plain policy paths and files beside them (ARCHITECTURE.md, "Bundles").
    bundles: crate::bundle::BundleSet,
    plain_paths: Vec<String>,
    plain: Vec<PolicyFile>,
    /// The remote bundles' pollers; dropped with the authorizer, which stops them.
    pollers: Vec<crate::bundle::poll::Handle>,
}

/// A decision made by [`Authorizer::check`].
#[derive(Clone, Debug)]
pub struct Decided {
    pub id: DecisionId,
    pub outcome: Arc<Outcome>,
    pub source: Source,
    pub revision: Arc<str>,
    /// `"rvm"` or `"interpreter"`: the evaluator of this entrypoint in this revision.
    pub evaluator: &'static str,
    /// How long this outcome may be shared at most, beyond the cache's own TTLs (caching rule
    /// 8): `Some(ZERO)` for a decision that read the moment and must not be kept.
    pub ttl_cap: Option<std::time::Duration>,
}

/// Where a check stands after its L1 lookup ([`Authorizer::begin`]).
pub enum Step {
    /// An L1 hit, decided.
    Done(Decided),
    /// A miss, with its key.
    Miss(Key),
}

/// One decision in progress: what it is about and when it started.
#[derive(Clone, Copy)]
pub struct Check<'a> {
    pub compiled: &'a Arc<Compiled>,
    /// The entrypoint's index in `compiled`.
    pub index: usize,
    /// The canonical bytes of the input (the key's source, the engine's input).
    pub canonical: &'a [u8],
    pub form: InputForm,
    /// [`clock::now_ns`] when the decision started: before the input was written, so its
    /// duration covers the key as well as the lookup.
    pub started_ns: u64,
}

impl Check<'_> {
    /// The evaluator of this check's entrypoint (no allocation: a static name).
    #[inline]
    fn evaluator(&self) -> &'static str {
        self.compiled
            .entrypoints
            .get(self.index)
            .map_or("interpreter", engine::Entrypoint::evaluator_name)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An embedded Rego authorizer with a decision cache.
///
/// # Concurrency
/// `check` is lock-free apart from the cache's sharded read lock, and may run on any number of
/// threads; writers (`reload`, `set_data`) serialise among themselves and swap the revision
/// atomically, so a check sees either the old or the new revision, never a mix.
pub struct Authorizer {
    id: u64,
    config: AuthorizerConfig,
    current: ArcSwap<Compiled>,
    writer: Mutex<Sources>,
    cache: Option<DecisionCache>,
    log: Option<Arc<DecisionLog>>,
    pub metrics: Metrics,
}

impl Drop for Authorizer {
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.close();
        }
    }
}

impl Authorizer {
    /// Loads, parses and compiles everything.
    ///
    /// # Errors
    /// Any problem with policies, data, entrypoint or configuration.
    pub fn new(config: AuthorizerConfig) -> Result<Self> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (plain_paths, bundle_configs) =
            crate::bundle::split_sources(&config.policies, &config.bundles)?;
        let plain = if plain_paths.is_empty() && !bundle_configs.is_empty() {
            Vec::new()
        } else {
            engine::read_policies(&plain_paths)?
        };
        let bundles = crate::bundle::BundleSet::load(&bundle_configs, config.rego_v0)?;
        let data = match &config.data {
            DataSource::Inline(v) => {
                engine::check_data_root(v, "data")?;
                v.clone()
            }
            DataSource::File(path) => engine::read_data_file(path)?,
        };
        let (files, data) = bundles.compose(&plain, data, None)?;
        let parsed = engine::parse_policies(&files, config.rego_v0)?;
        let entrypoints = vec![Arc::<str>::from(config.entrypoint.as_str())];
        let revision = Revision::of(&files, &data, config.rego_v0)?.with_bundles(bundles.infos());
        let compiled = Compiled::build(
            id,
            &parsed,
            revision,
            data.clone(),
            &entrypoints,
            config.evaluator,
            config.budget,
        )?;
        let log = match &config.decision_log {
            Some(c) => Some(DecisionLog::new(c.clone(), env!("CARGO_PKG_VERSION"))?),
            None => None,
        };
        Ok(Self {
            id,
            log,
            cache: config.cache.map(DecisionCache::new),
            current: ArcSwap::from_pointee(compiled),
            writer: Mutex::new(Sources {
                files,
                parsed,
                data,
                entrypoints,
                bundles,
                plain_paths,
                plain,
                pollers: Vec::new(),
            }),
            config,
            metrics: Metrics::default(),
        })
    }

    /// The current revision. Cheap (no lock).
    #[inline]
    pub fn current(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    /// The current revision without touching its reference count (the hot path).
    #[inline]
    pub fn current_guard(&self) -> arc_swap::Guard<Arc<Compiled>> {
        self.current.load()
    }

    pub fn config(&self) -> &AuthorizerConfig {
        &self.config
    }

    pub fn cache(&self) -> Option<&DecisionCache> {
        self.cache.as_ref()
    }

    /// The index of `name` (the main entrypoint when `None`) in `compiled`, compiling and
    /// registering it on first use.
    ///
    /// # Errors
    /// `Error::Evaluation` for a rule that does not exist, `Error::Config` for a malformed name,
    /// `Error::Policy` if it does not compile.
    pub fn entrypoint(
        &self,
        compiled: Arc<Compiled>,
        name: Option<&str>,
    ) -> Result<(Arc<Compiled>, usize)> {
        let Some(name) = name else {
            return Ok((compiled, 0));
        };
        if let Some(i) = compiled.entrypoint_index(name) {
            return Ok((compiled, i));
        }
        self.register_entrypoint(name)
    }

    /// Compiles and registers `name` (or finds it, if another thread just did).
    ///
    /// # Errors
    /// As [`Authorizer::entrypoint`].
    #[cold]
    pub fn register_entrypoint(&self, name: &str) -> Result<(Arc<Compiled>, usize)> {
        let mut sources = self.writer.lock();
        let current = self.current();
        if let Some(i) = current.entrypoint_index(name) {
            return Ok((current, i));
        }
        let next = Arc::new(current.with_entrypoint(name)?);
        sources.entrypoints.push(Arc::from(name));
        self.current.store(next.clone());
        let i = next.entrypoints.len() - 1;
        Ok((next, i))
    }

    /// The key, the outcome of an L1 hit, and the time of the lookup ([`clock::now_ns`], read
    /// once for the entry's expiry and the decision's duration). Never blocks, never evaluates.
    #[inline]
    pub fn lookup(&self, c: &Check<'_>) -> (Key, Option<Arc<Outcome>>, u64) {
        let seeds = &c.compiled.entrypoints[c.index].seeds;
        let key = match c.form {
            InputForm::Plain => seeds.plain.key(c.canonical),
            InputForm::Request => seeds.request.key(c.canonical),
        };
        let now = clock::now_ns();
        let hit = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get_at(&key, now));
        (key, hit, now)
    }

    /// The L1 step of a check: the decision of a hit, or the key of a miss (to hand to
    /// [`Authorizer::decide_miss`], or to the L2 first: [`crate::pipeline`]). Never blocks,
    /// never evaluates.
    #[inline]
    pub fn begin(&self, c: &Check<'_>) -> Step {
        match self.lookup(c) {
            (_, Some(outcome), now) => Step::Done(self.hit(c, outcome, now)),
            (key, None, _) => Step::Miss(key),
        }
    }

    /// Completes a decision after [`Authorizer::lookup`] missed: waits for a concurrent
    /// evaluation of the same key or evaluates, and caches the outcome when allowed.
    ///
    /// # Errors
    /// `Error::Evaluation` (counted as an error decision); nothing is cached then.
    ///
    /// # Concurrency
    /// May block on another thread's evaluation of the same key: call it without the GIL.
    pub fn decide_miss(&self, c: &Check<'_>, key: &Key) -> Result<Decided> {
        let cap = std::cell::Cell::new(None);
        let evaluated = match &self.cache {
            Some(cache) => {
                self.metrics.miss();
                let run = || {
                    self.evaluate(c.compiled, c.index, c.canonical, c.form)
                        .inspect(|(_, t)| cap.set(*t))
                };
                cache.get_or_evaluate_capped(key, run).map(|l| match l {
                    Lookup::Evaluated(o) => (o, Source::Engine),
                    Lookup::Hit(o) => {
                        self.metrics.coalesced();
                        // Another caller evaluated and cached it; it shares it further itself.
                        cap.set(Some(std::time::Duration::ZERO));
                        (o, Source::L1)
                    }
                })
            }
            None => self
                .evaluate(c.compiled, c.index, c.canonical, c.form)
                .map(|(o, t)| {
                    cap.set(t);
                    (o, Source::Engine)
                }),
        };
        let elapsed = clock::now_ns().saturating_sub(c.started_ns);
        match evaluated {
            Ok((outcome, source)) => Ok(self.finished(c, outcome, source, elapsed, cap.get())),
            Err(e) => {
                let id = DecisionId::next();
                self.metrics.failed();
                if crate::budget::is_exceeded(&e) {
                    self.metrics.budget_exceeded.fetch_add(1, Ordering::Relaxed);
                }
                // An error may quote the input: never a masked value (ARCHITECTURE.md, "Masking").
                let e = self
                    .masker()
                    .redact_error(e.in_decision(id), c.canonical, c.form);
                if let Some(log) = &self.log {
                    self.log(log, c, id, Err(&e), None, elapsed);
                }
                Err(e)
            }
        }
    }

    /// The one way a decision is finished, whatever answered it: counted, logged (if sampled)
    /// and given its id.
    #[inline]
    fn finished(
        &self,
        c: &Check<'_>,
        outcome: Arc<Outcome>,
        source: Source,
        elapsed_ns: u64,
        ttl_cap: Option<std::time::Duration>,
    ) -> Decided {
        self.metrics.decided(outcome.allow, source, elapsed_ns);
        let id = DecisionId::next();
        if let Some(log) = &self.log {
            self.log(log, c, id, Ok(&outcome), Some(source), elapsed_ns);
        }
        Decided {
            id,
            outcome,
            source,
            revision: c.compiled.revision.display.clone(),
            evaluator: c.evaluator(),
            ttl_cap,
        }
    }

    /// Builds the decision of an L1 hit found by [`Authorizer::lookup`] at `now_ns`.
    #[inline]
    pub fn hit(&self, c: &Check<'_>, outcome: Arc<Outcome>, now_ns: u64) -> Decided {
        let elapsed = now_ns.saturating_sub(c.started_ns);
        self.finished(c, outcome, Source::L1, elapsed, None)
    }

    /// Builds the decision of an L1 miss answered by the L2 (already verified and promoted).
    pub fn served_from_l2(&self, c: &Check<'_>, outcome: Arc<Outcome>) -> Decided {
        let elapsed = clock::now_ns().saturating_sub(c.started_ns);
        self.metrics.miss();
        self.metrics.l2_hits.fetch_add(1, Ordering::Relaxed);
        self.finished(c, outcome, Source::L2, elapsed, None)
    }

    /// Samples and queues a decision-log record (never blocks; a full queue drops it).
    #[inline(never)]
    fn log(
        &self,
        log: &DecisionLog,
        c: &Check<'_>,
        id: DecisionId,
        outcome: std::result::Result<&Arc<Outcome>, &Error>,
        source: Option<Source>,
        duration_ns: u64,
    ) {
        if !log.sampled() {
            return;
        }
        let record = Record {
            id,
            entrypoint: c.compiled.entrypoints[c.index].name.clone(),
            input: c.canonical.into(),
            form: c.form,
            outcome: outcome.cloned().map_err(|e| e.to_string().into_boxed_str()),
            source,
            revision: c.compiled.revision.display.clone(),
            bundles: c.compiled.revision.bundles.clone(),
            unix_ns: clock::unix_ns(),
            duration_ns,
        };
        log.offer(record, &self.metrics);
    }

    /// The masks applied to decision-log records and error messages.
    pub fn masker(&self) -> &crate::decision_log::Masker {
        match self.log.as_deref() {
            Some(log) => log.masker(),
            None => crate::decision_log::Masker::default_masks(),
        }
    }

    /// Whether decisions are logged.
    pub fn decision_log(&self) -> Option<&DecisionLogConfig> {
        self.log.as_deref().map(|l| &l.config)
    }

    /// Evaluates once; returns the outcome and how long it may be kept at most (caching rule 8,
    /// [`moment_cap`]).
    fn evaluate(
        &self,
        compiled: &Arc<Compiled>,
        index: usize,
        canonical: &[u8],
        form: InputForm,
    ) -> Result<(Arc<Outcome>, Option<std::time::Duration>)> {
        let mut input = canonical::decode(canonical)?;
        // Begun before `complete`: a request's verified token bounds the outcome by its exp.
        let scope = crate::eval_context::Scope::begin();
        if form == InputForm::Request {
            crate::request::complete(&mut input);
        }
        let ep = &compiled.entrypoints[index];
        self.metrics.evaluated(ep.evaluator_name() == "rvm");
        let value = compiled.evaluate(index, input);
        let validity = scope.finish();
        let outcome = intern(&ep.name, value?)?;
        let cap = moment_cap(
            compiled.facts.reads_the_moment.is_some(),
            validity,
            &outcome,
            clock::unix_ns(),
        );
        Ok((outcome, cap))
    }

    /// A whole check from canonical bytes, L1 and engine only (Rust callers; with an L2, and
    /// for Python, [`crate::pipeline::Pipeline`]).
    ///
    /// # Errors
    /// As [`Authorizer::entrypoint`] and [`Authorizer::decide_miss`].
    pub fn check_canonical(&self, entrypoint: Option<&str>, canonical: &[u8]) -> Result<Decided> {
        let started_ns = clock::now_ns();
        let (compiled, index) = self.entrypoint(self.current(), entrypoint)?;
        let c = Check {
            compiled: &compiled,
            index,
            canonical,
            form: InputForm::Plain,
            started_ns,
        };
        match self.begin(&c) {
            Step::Done(d) => Ok(d),
            Step::Miss(key) => self.decide_miss(&c, &key),
        }
    }

    /// What the Prometheus exposition shows of this authorizer.
    pub fn sample(&self, label: Option<String>) -> crate::metrics::AuthorizerSample {
        let (entries, max_entries) = self
            .cache
            .as_ref()
            .map_or((0, 0), |c| (c.len() as u64, c.config().max_entries));
        crate::metrics::AuthorizerSample {
            label,
            counters: self.metrics.snapshot(),
            entries,
            max_entries,
            revision: self.current_guard().revision.display.to_string(),
            bundles: self.current_guard().revision.bundles.clone(),
        }
    }

    /// A whole check of a regorus value.
    ///
    /// # Errors
    /// `Error::Input` for a value with no canonical form, else as [`Authorizer::check_canonical`].
    pub fn check_value(&self, entrypoint: Option<&str>, input: &Value) -> Result<Decided> {
        let bytes = canonical::to_bytes(input, "input")?;
        self.check_canonical(entrypoint, &bytes)
    }

    /// Re-reads policies (and the data file, if data came from one) and swaps them in
    /// atomically. On any error the current revision keeps serving.
    ///
    /// # Errors
    /// As [`Authorizer::new`].
    pub fn reload(&self) -> Result<Arc<str>> {
        let mut sources = self.writer.lock();
        // Remote bundles poll now; local ones are read again below (ARCHITECTURE.md, "Bundles").
        for p in &sources.pollers {
            p.wake();
        }
        let started = std::time::Instant::now();
        let result = (|| {
            let plain = if sources.plain_paths.is_empty() && !sources.bundles.is_empty() {
                Vec::new()
            } else {
                engine::read_policies(&sources.plain_paths)?
            };
            let bundles = sources.bundles.reloaded(self.config.rego_v0)?;
            let (data, previous) = match &self.config.data {
                DataSource::Inline(_) => (sources.data.clone(), Some(&sources.bundles)),
                DataSource::File(path) => (engine::read_data_file(path)?, None),
            };
            let (files, data) = bundles.compose(&plain, data, previous)?;
            let parsed = engine::parse_policies(&files, self.config.rego_v0)?;
            Ok((files, parsed, data, bundles, plain))
        })();
        let outcome = result.and_then(|(files, parsed, data, bundles, plain)| {
            let revision =
                self.swap_in(&sources, &files, &parsed, data.clone(), bundles.infos())?;
            sources.files = files;
            sources.parsed = parsed;
            sources.data = data;
            sources.bundles = bundles;
            sources.plain = plain;
            Ok(revision)
        });
        sources.bundles.count_local(&outcome, started.elapsed());
        self.metrics.reloaded(outcome.is_ok());
        outcome
    }

    /// Replaces the subtree of data at `path` (object keys from the root; empty: all of it).
    ///
    /// # Errors
    /// `Error::Data` when the path crosses a non-object or the new data conflicts with rules.
    pub fn set_data(&self, path: &[String], value: Value) -> Result<Arc<str>> {
        let mut sources = self.writer.lock();
        if let Some(owner) = sources.bundles.owner_of(path) {
            return Err(Error::data(format!(
                "data.{} is owned by bundle {owner:?}: bundles own their roots",
                path.join(".")
            )));
        }
        let mut data = sources.data.clone();
        set_path(&mut data, path, value)?;
        engine::check_data_root(&data, "data")?;
        let files = sources.files.clone();
        let infos = sources.bundles.infos();
        let revision = self.swap_in(
            &sources,
            &files,
            &sources.parsed.clone(),
            data.clone(),
            infos,
        )?;
        sources.data = data;
        Ok(revision)
    }

    /// Compiles a new revision and makes it current, unless nothing changed.
    fn swap_in(
        &self,
        sources: &Sources,
        files: &[PolicyFile],
        parsed: &Engine,
        data: Value,
        bundles: Arc<[crate::bundle::BundleInfo]>,
    ) -> Result<Arc<str>> {
        let revision = Revision::of(files, &data, self.config.rego_v0)?.with_bundles(bundles);
        let current = self.current();
        if revision == current.revision {
            return Ok(revision.display);
        }
        let display = revision.display.clone();
        let next = Compiled::build(
            self.id,
            parsed,
            revision,
            data,
            &sources.entrypoints,
            self.config.evaluator,
            self.config.budget,
        )?;
        self.current.store(Arc::new(next));
        // Old entries are unreachable already (their keys carry the old revision); this only
        // frees their memory.
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        Ok(display)
    }

    /// Makes `loaded` the active copy of its bundle: one new revision of the plain policies,
    /// the other bundles and this one, swapped in as `reload()` does. On any error (overlapping
    /// roots, a compile error, data conflicts) the current revision keeps serving.
    ///
    /// # Errors
    /// As [`Authorizer::reload`].
    pub fn activate_bundle(&self, loaded: crate::bundle::Loaded) -> Result<Arc<str>> {
        let mut sources = self.writer.lock();
        let outcome = (|| {
            let bundles = sources.bundles.with(loaded)?;
            let (files, data) =
                bundles.compose(&sources.plain, sources.data.clone(), Some(&sources.bundles))?;
            let parsed = engine::parse_policies(&files, self.config.rego_v0)?;
            let revision =
                self.swap_in(&sources, &files, &parsed, data.clone(), bundles.infos())?;
            Ok((revision, files, parsed, data, bundles))
        })();
        outcome.map(|(revision, files, parsed, data, bundles)| {
            sources.files = files;
            sources.parsed = parsed;
            sources.data = data;
            sources.bundles = bundles;
            revision
        })
    }

    /// Starts the pollers of the remote bundles (once; the bindings call it after `new`).
    pub fn start_bundle_polling(self: &Arc<Self>) {
        let mut sources = self.writer.lock();
        if !sources.pollers.is_empty() {
            return;
        }
        let pollers = crate::bundle::poll::spawn_all(self, &sources.bundles);
        sources.pollers = pollers;
    }

    /// Drops every cached decision tagged with any of `tags`.
    pub fn invalidate_tags(&self, tags: &[String]) {
        if let Some(cache) = &self.cache {
            cache.invalidate_tags(tags);
        }
    }

    /// Drops every cached decision.
    pub fn invalidate_all(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    /// The base document currently in force.
    pub fn data(&self) -> Value {
        self.writer.lock().data.clone()
    }
}

/// Most decisions of a policy share a handful of results (`true`, `{"allow": false, "reason":
/// "not a member"}`): cached entries point at one shared `Outcome` per distinct result, so an
/// entry costs its key and a pointer. Per thread, so interning takes no lock.
const MAX_INTERNED: usize = 512;

thread_local! {
    static INTERNED: std::cell::RefCell<std::collections::BTreeMap<Value, Arc<Outcome>>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

fn intern(entrypoint: &str, value: Value) -> Result<Arc<Outcome>> {
    INTERNED.with(|cell| {
        let Ok(mut table) = cell.try_borrow_mut() else {
            return Outcome::from_value(entrypoint, value).map(Arc::new);
        };
        if let Some(o) = table.get(&value) {
            return Ok(o.clone());
        }
        let outcome = Arc::new(Outcome::from_value(entrypoint, value.clone())?);
        if table.len() >= MAX_INTERNED {
            // Results that vary per request (a user id in a reason) would grow it forever.
            table.clear();
        }
        table.insert(value, outcome.clone());
        Ok(outcome)
    })
}

/// How long a decision may be kept beyond the cache's TTLs (caching rule 8, ARCHITECTURE.md
/// "Caching rules"): a revision that can read the moment (`reads_the_moment`) or an evaluation
/// whose builtins reported a volatile answer is kept only when the policy bounds it with
/// `cache_ttl_seconds`; a reported validity bound (a token's `exp`, a not-yet-valid token's
/// `nbf`) caps it at what is left of it. `None`: no cap.
pub fn moment_cap(
    reads_the_moment: bool,
    validity: crate::eval_context::Validity,
    outcome: &Outcome,
    now_unix_ns: u64,
) -> Option<std::time::Duration> {
    use std::time::Duration;
    let mut cap = (reads_the_moment || validity.volatile).then(|| {
        if outcome.cache_ttl.is_some() {
            Duration::MAX
        } else {
            Duration::ZERO
        }
    });
    if let Some(until) = validity.until_unix_ns {
        let left = Duration::from_nanos(until.saturating_sub(now_unix_ns));
        cap = Some(cap.map_or(left, |c| c.min(left)));
    }
    cap
}

fn set_path(node: &mut Value, path: &[String], value: Value) -> Result<()> {
    let Some((first, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let shown = || format!("data.{}", path.join("."));
    let obj = node.as_object_mut().map_err(|_| {
        Error::data(format!(
            "{} cannot be set: its parent is not an object",
            shown()
        ))
    })?;
    let child = obj.get_or_insert_with(Value::from(first.as_str()), Value::new_object);
    set_path(child, rest, value)
}

/// Bundle pollers hand their downloads to the authorizer through this (bundle/poll.rs).
impl crate::bundle::poll::Activate for Authorizer {
    fn rego_v0(&self) -> bool {
        self.config().rego_v0
    }

    fn activate_bundle(&self, loaded: crate::bundle::Loaded) -> Result<Arc<str>> {
        Authorizer::activate_bundle(self, loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn policy_dir(text: &str) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        let mut f = std::fs::File::create(dir.path.join("authz.rego")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        dir
    }

    /// A tiny self-cleaning temp dir (no extra dependency).
    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("regoguard-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).unwrap();
                Dir { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    const POLICY: &str = r#"package authz
default allow := false
allow if input.user.role == "admin"
allow if data.open[input.path]
"#;

    fn authorizer(dir: &tempdir::Dir) -> Authorizer {
        Authorizer::new(AuthorizerConfig::new(vec![dir
            .path
            .to_string_lossy()
            .into_owned()]))
        .unwrap()
    }

    fn input(json: &str) -> Value {
        Value::from_json_str(json).unwrap()
    }

    #[test]
    fn hit_after_miss() {
        let dir = policy_dir(POLICY);
        let a = authorizer(&dir);
        let i = input(r#"{"user":{"role":"admin"}}"#);
        let d1 = a.check_value(None, &i).unwrap();
        assert!(d1.outcome.allow);
        assert_eq!(d1.source, Source::Engine);
        let d2 = a.check_value(None, &i).unwrap();
        assert_eq!(d2.source, Source::L1);
        let s = a.metrics.snapshot();
        assert_eq!((s.l1_hits, s.l1_misses, s.evaluations), (1, 1, 1));
    }

    #[test]
    fn set_data_changes_revision_and_decisions() {
        let dir = policy_dir(POLICY);
        let a = authorizer(&dir);
        let i = input(r#"{"path":"/x","user":{"role":"user"}}"#);
        let r0 = a.current().revision.display.clone();
        assert!(!a.check_value(None, &i).unwrap().outcome.allow);
        let r1 = a
            .set_data(&["open".into(), "/x".into()], Value::Bool(true))
            .unwrap();
        assert_ne!(r0, r1);
        let d = a.check_value(None, &i).unwrap();
        assert!(
            d.outcome.allow,
            "the cached deny of the old revision must be unreachable"
        );
        assert_eq!(d.source, Source::Engine);
        assert_eq!(d.revision, r1);
    }

    #[test]
    fn failed_reload_keeps_serving() {
        let dir = policy_dir(POLICY);
        let a = authorizer(&dir);
        let r0 = a.current().revision.display.clone();
        std::fs::write(dir.path.join("authz.rego"), "package authz\nallow if {").unwrap();
        assert!(matches!(a.reload(), Err(Error::Policy(_))));
        assert_eq!(a.current().revision.display, r0);
        assert!(
            a.check_value(None, &input(r#"{"user":{"role":"admin"}}"#))
                .unwrap()
                .outcome
                .allow
        );
        std::fs::write(dir.path.join("authz.rego"), POLICY.replace("admin", "root")).unwrap();
        let r1 = a.reload().unwrap();
        assert_ne!(r0, r1);
        assert!(
            !a.check_value(None, &input(r#"{"user":{"role":"admin"}}"#))
                .unwrap()
                .outcome
                .allow
        );
    }

    #[test]
    fn unknown_entrypoint_is_an_evaluation_error() {
        let dir = policy_dir(POLICY);
        let mut cfg = AuthorizerConfig::new(vec![dir.path.to_string_lossy().into_owned()]);
        cfg.entrypoint = "data.authz.nope".into();
        match Authorizer::new(cfg) {
            Err(Error::Evaluation(f)) => assert_eq!(f.entrypoint, "data.authz.nope"),
            Err(e) => panic!("expected an evaluation error, got {e}"),
            Ok(_) => panic!("expected an evaluation error"),
        }
    }

    #[test]
    fn extra_entrypoints_register_on_first_use() {
        let dir = policy_dir(&format!("{POLICY}\nreason := \"r\"\n"));
        let a = authorizer(&dir);
        let i = input("{}");
        // A string result is not a decision.
        assert!(matches!(
            a.check_value(Some("data.authz.reason"), &i),
            Err(Error::Evaluation(_))
        ));
        assert!(a.current().entrypoint_index("data.authz.reason").is_some());
    }

    #[test]
    fn moment_cap_follows_caching_rule_8() {
        use crate::eval_context::Validity;
        use std::time::Duration;
        let plain = Outcome::from_value("e", Value::Bool(true)).unwrap();
        let bounded =
            Outcome::from_value("e", input(r#"{"allow":true,"cache_ttl_seconds":5}"#)).unwrap();
        // A revision that never reads the moment: no cap.
        assert_eq!(moment_cap(false, Validity::STABLE, &plain, 0), None);
        // It does: not cached unless the policy bounds it.
        assert_eq!(
            moment_cap(true, Validity::STABLE, &plain, 0),
            Some(Duration::ZERO)
        );
        assert_eq!(
            moment_cap(true, Validity::STABLE, &bounded, 0),
            Some(Duration::MAX)
        );
        let volatile = Validity {
            volatile: true,
            until_unix_ns: None,
        };
        assert_eq!(moment_cap(false, volatile, &plain, 0), Some(Duration::ZERO));
        // A token's exp caps the entry at what is left of it, and a past exp forbids it.
        let exp = Validity {
            volatile: false,
            until_unix_ns: Some(3_000_000_000),
        };
        assert_eq!(
            moment_cap(false, exp, &plain, 1_000_000_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            moment_cap(true, exp, &bounded, 1_000_000_000),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            moment_cap(false, exp, &plain, 4_000_000_000),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_clock_reading_policy_is_not_cached_and_hostile_ranges_fail_within_budget() {
        let dir = policy_dir("package authz\ndefault allow := false\nallow if time.now_ns() > input.t\nallow if count(numbers.range(0, input.n)) > 1\n");
        let a = authorizer(&dir);
        assert!(a.current().facts.reads_the_moment.is_some());
        let i = input(r#"{"t":0}"#);
        assert!(a.check_value(None, &i).unwrap().outcome.allow);
        assert_eq!(a.check_value(None, &i).unwrap().source, Source::Engine);
        match a.check_value(None, &input(r#"{"t":1e30,"n":300000000}"#)) {
            Err(e) => assert!(crate::budget::is_exceeded(&e), "{e}"),
            Ok(d) => panic!("expected a budget error, got {:?}", d.outcome),
        }
        assert_eq!(a.metrics.snapshot().budget_exceeded, 1);
    }

    #[test]
    fn with_falls_back_to_the_interpreter() {
        let dir = policy_dir(
            r#"package authz
default allow := false
is_admin if input.role == "admin"
allow if is_admin with input.role as "admin"
"#,
        );
        let a = authorizer(&dir);
        assert_eq!(a.current().entrypoints[0].evaluator_name(), "interpreter");
        assert!(a.check_value(None, &input("{}")).unwrap().outcome.allow);
    }
}
