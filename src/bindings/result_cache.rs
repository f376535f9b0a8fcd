//! `ResultCache`: the Rust half of `@cached_authorization` (`python/regoguard/decorators.py`).
//!
//! Results are Python objects kept in a [`TtlCache`], keyed by a BLAKE3 digest of the canonical
//! form of the function's bound arguments (or of what its `key=` callable returned), seeded with
//! the function's qualified name. Truthy results live `ttl`, falsy ones `deny_ttl`.
//!
//! Sync functions go through [`PyResultCache::call`], which does everything here: the hit path
//! holds the GIL (a canonical write, a hash and a shard read lock); a miss waits for a
//! concurrent call of the same key with the GIL released and re-attaches only to call the
//! function. Async functions use [`PyResultCache::lookup`] and [`PyResultCache::store`]; their
//! single flight lives in Python, since it waits on awaitables rather than threads.
//!
//! Values are only dropped with the GIL released (inserts and invalidations run detached), so
//! a result's `__del__` never runs inside a shard lock; `PyO3` defers those decrefs to the next
//! attach.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::authorizer::PyDecision;
use super::convert::with_canonical;
use crate::cache::{seconds, Lookup, Tagged, Ticket, TtlCache};
use crate::error::Error;
use crate::key::{Key, KeySeed};
use crate::metrics;

/// Domain of every result-cache key, so no result key can equal a decision key (whose seeds are
/// keyed by a policy revision instead). Changing it changes every key.
const KEY_DOMAIN: &[u8] = b"regoguard/cached_authorization/v1";

/// One stored result and the tags its `tags=` callable gave it.
struct Stored {
    value: Py<PyAny>,
    tags: Box<[Arc<str>]>,
}

/// The cache's value: a pointer, so an entry stays 16 bytes beside its key and a hit clones an
/// `Arc` rather than touching a reference count under the GIL.
#[derive(Clone)]
struct Cached(Arc<Stored>);

impl Tagged for Cached {
    fn tags(&self) -> &[Arc<str>] {
        &self.0.tags
    }
}

thread_local! {
    /// Keys this thread is computing right now (cache address, key): a sync function that
    /// calls itself with the same arguments would otherwise wait for itself forever.
    static COMPUTING: RefCell<Vec<(usize, Key)>> = const { RefCell::new(Vec::new()) };
}

/// Marks `(cache, key)` as being computed on this thread until dropped.
struct Computing((usize, Key));

impl Computing {
    fn enter(cache: usize, key: Key, name: &str) -> PyResult<Self> {
        COMPUTING.with(|c| {
            let mut c = c.borrow_mut();
            if c.contains(&(cache, key)) {
                return Err(PyRuntimeError::new_err(format!(
                    "{name} called itself with the same arguments while computing them; the call \
                     would wait for itself (single flight), so it is refused"
                )));
            }
            c.push((cache, key));
            Ok(Computing((cache, key)))
        })
    }
}

impl Drop for Computing {
    fn drop(&mut self) {
        COMPUTING.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(i) = c.iter().rposition(|e| *e == self.0) {
                c.swap_remove(i);
            }
        });
    }
}

/// What `ResultCache.lookup` returns on a miss: the key (hashable, for the async in-flight map)
/// and the invalidation epoch seen, which `store` checks.
#[pyclass(name = "CacheMiss", module = "regoguard._regoguard", frozen)]
pub struct PyCacheMiss {
    key: Key,
    ticket: Ticket,
}

#[pymethods]
impl PyCacheMiss {
    fn __hash__(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.key.0[..8]);
        u64::from_le_bytes(first)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Self>().is_ok_and(|o| o.get().key == self.key)
    }

    fn __repr__(&self) -> String {
        let hex: String = self.key.0[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("CacheMiss({hex}…)")
    }
}

/// What the metrics registry shares with a [`PyResultCache`]: the cache and its counters.
struct Shared {
    cache: TtlCache<Cached>,
    name: String,
    max_entries: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl metrics::CacheSource for Shared {
    fn sample(&self) -> metrics::CacheSample {
        metrics::CacheSample {
            name: self.name.clone(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.len() as u64,
            max_entries: self.max_entries,
        }
    }
}

/// The result cache of one decorated function. See `_regoguard.pyi` for the user reference.
#[pyclass(name = "ResultCache", module = "regoguard._regoguard", frozen)]
pub struct PyResultCache {
    /// Registered with [`metrics::register_cache`] (weakly) for the `cache="<name>"` series.
    shared: Arc<Shared>,
    seed: KeySeed,
    name: String,
    /// Where key errors point: `args` (bound arguments) or `key()` (the `key=` callable).
    root: &'static str,
    max_entries: u64,
    ttl: Duration,
    deny_ttl: Duration,
}

impl PyResultCache {
    /// The key of `key_value`, or an `InputError` that says how to fix it.
    #[inline]
    fn key_of(&self, key_value: &Bound<'_, PyAny>) -> PyResult<Key> {
        with_canonical(key_value, self.root, |bytes| Ok(self.seed.key(bytes))).map_err(|e| self.key_error(e))
    }

    #[cold]
    fn key_error(&self, e: Error) -> PyErr {
        let hint = if self.root == "args" {
            "; or pass key= to @cached_authorization to choose what to key on (a callable taking \
             the same arguments and returning a JSON-shaped value)"
        } else {
            "; key= must return a JSON-shaped value"
        };
        match e {
            Error::Input { path, message } => Error::Input { path, message: format!("{message}{hint}") }.into(),
            other => other.into(),
        }
    }

    /// How long `value` is kept: `ttl` when it is truthy (a `Decision`: when it allows), else
    /// `deny_ttl`.
    fn ttl_for(&self, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
        let allow = if let Ok(d) = value.cast::<PyDecision>() {
            // A Decision refuses truth testing on purpose; its meaning is `.allow`.
            d.getattr("allow")?.is_truthy()?
        } else {
            if value.get_type().hasattr("__await__")? {
                return Err(PyTypeError::new_err(format!(
                    "{} returned an awaitable ({}), which cannot be cached: decorate an `async def` \
                     so the result is awaited",
                    self.name,
                    value.get_type().name()?
                )));
            }
            value.is_truthy()?
        };
        Ok(if allow { self.ttl } else { self.deny_ttl })
    }

    /// Checks what a `tags=` callable returned: a list (or tuple) of str.
    fn tag_list(&self, tags: &Bound<'_, PyAny>) -> PyResult<Box<[Arc<str>]>> {
        let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = tags.cast::<PyList>() {
            l.iter().collect()
        } else if let Ok(t) = tags.cast::<PyTuple>() {
            t.iter().collect()
        } else {
            return Err(PyTypeError::new_err(format!(
                "tags= of {} must return a list of str, got '{}'",
                self.name,
                tags.get_type().name()?
            )));
        };
        items
            .iter()
            .map(|t| match t.cast::<PyString>() {
                Ok(s) => Ok(Arc::from(s.to_str()?)),
                Err(_) => Err(PyTypeError::new_err(format!(
                    "tags= of {} must return a list of str, got an item of type '{}'",
                    self.name,
                    t.get_type().name()?
                ))),
            })
            .collect()
    }

    /// Calls the function (and `tags`) and prepares the entry; runs attached, inside the guard.
    fn compute(
        &self,
        py: Python<'_>,
        func: &Py<PyAny>,
        args: &Py<PyTuple>,
        kwargs: Option<&Py<PyDict>>,
        tags: Option<&Py<PyAny>>,
    ) -> PyResult<(Cached, Duration)> {
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
        let args = args.bind(py);
        let kwargs = kwargs.map(|k| k.bind(py));
        let value = func.bind(py).call(args, kwargs)?;
        let ttl = self.ttl_for(&value)?;
        let tags = match tags {
            Some(t) => self.tag_list(&t.bind(py).call(args, kwargs)?)?,
            None => Box::new([]),
        };
        Ok((Cached(Arc::new(Stored { value: value.unbind(), tags })), ttl))
    }

    /// The miss half of `call`: single flight with the GIL released while waiting.
    #[inline(never)]
    fn call_miss(
        &self,
        py: Python<'_>,
        key: Key,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        tags: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let _computing = Computing::enter(std::ptr::from_ref(self) as usize, key, &self.name)?;
        let (func, args) = (func.clone().unbind(), args.clone().unbind());
        let kwargs = kwargs.map(|k| k.clone().unbind());
        let tags = tags.map(|t| t.clone().unbind());
        let looked = py.detach(|| {
            self.shared.cache.get_or_insert_with(&key, || {
                Python::attach(|py| self.compute(py, &func, &args, kwargs.as_ref(), tags.as_ref()))
            })
        })?;
        let cached = match looked {
            Lookup::Hit(c) => {
                self.shared.hits.fetch_add(1, Ordering::Relaxed);
                c
            }
            Lookup::Evaluated(c) => c,
        };
        Ok(cached.0.value.clone_ref(py))
    }
}

#[pymethods]
impl PyResultCache {
    #[new]
    #[pyo3(signature = (name, *, max_entries = 10_000, ttl_seconds = 600.0, deny_ttl_seconds = None,
                        custom_key = false))]
    fn new(
        name: String,
        max_entries: i64,
        ttl_seconds: f64,
        deny_ttl_seconds: Option<f64>,
        custom_key: bool,
    ) -> PyResult<Self> {
        let max_entries = u64::try_from(max_entries)
            .ok()
            .filter(|m| (1..=u64::from(u32::MAX)).contains(m))
            .ok_or_else(|| {
                Error::config(format!("max_entries must be between 1 and {}, got {max_entries}", u32::MAX))
            })?;
        let ttl = seconds("ttl_seconds", ttl_seconds)?;
        let deny_ttl = match deny_ttl_seconds {
            None => ttl,
            Some(s) => seconds("deny_ttl_seconds", s)?,
        };
        let root = if custom_key { "key()" } else { "args" };
        let domain = blake3::hash(KEY_DOMAIN);
        // The root is part of the seed: keys from bound arguments and from `key=` never meet.
        let seed = KeySeed::new(domain.as_bytes(), &format!("{name}\0{root}"));
        let shared = Arc::new(Shared {
            cache: TtlCache::new(max_entries),
            name: name.clone(),
            max_entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let source: Arc<dyn metrics::CacheSource> = shared.clone();
        metrics::register_cache(&source);
        Ok(Self { shared, seed, name, root, max_entries, ttl, deny_ttl })
    }

    /// The whole sync path: the cached result for `key`, or `func(*args, **kwargs)` computed once
    /// per key at a time.
    #[pyo3(signature = (key, func, args, kwargs = None, tags = None))]
    fn call(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        func: &Bound<'_, PyAny>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
        tags: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let k = self.key_of(key)?;
        if let Some(hit) = self.shared.cache.get(&k) {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit.0.value.clone_ref(py));
        }
        self.call_miss(py, k, func, args, kwargs, tags)
    }

    /// The cached result for `key` (a hit is counted), or a `CacheMiss` (nothing is counted).
    fn lookup(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let k = self.key_of(key)?;
        if let Some(hit) = self.shared.cache.get(&k) {
            self.shared.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit.0.value.clone_ref(py));
        }
        Ok(Py::new(py, PyCacheMiss { key: k, ticket: self.shared.cache.ticket() })?.into_any())
    }

    /// Counts a miss: the caller is about to call the function.
    fn begin(&self) {
        self.shared.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores the result computed for `miss`, with the tags a `tags=` callable returned (`()`
    /// without one: `None` is a wrong return value, not "no tags").
    fn store(
        &self,
        py: Python<'_>,
        miss: &Bound<'_, PyCacheMiss>,
        value: &Bound<'_, PyAny>,
        tags: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let ttl = self.ttl_for(value)?;
        let tags = self.tag_list(tags)?;
        let miss = miss.get();
        let cached = Cached(Arc::new(Stored { value: value.clone().unbind(), tags }));
        Ok(py.detach(|| self.shared.cache.insert(miss.key, cached, ttl, miss.ticket)))
    }

    /// Drops the entry of `key`; returns whether there was one.
    fn invalidate(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = self.key_of(key)?;
        Ok(py.detach(|| self.shared.cache.remove(&k)))
    }

    fn invalidate_tags(&self, py: Python<'_>, tags: Vec<String>) {
        py.detach(|| self.shared.cache.invalidate_tags(&tags));
    }

    fn invalidate_all(&self, py: Python<'_>) {
        py.detach(|| self.shared.cache.clear());
    }

    /// `(hits, misses, entries)`.
    fn info(&self) -> (u64, u64, usize) {
        (self.shared.hits.load(Ordering::Relaxed), self.shared.misses.load(Ordering::Relaxed), self.shared.cache.len())
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    #[getter]
    fn max_entries(&self) -> u64 {
        self.max_entries
    }

    #[getter]
    fn ttl_seconds(&self) -> f64 {
        self.ttl.as_secs_f64()
    }

    #[getter]
    fn deny_ttl_seconds(&self) -> f64 {
        self.deny_ttl.as_secs_f64()
    }

    fn __repr__(&self) -> String {
        format!(
            "ResultCache(name={:?}, max_entries={}, ttl_seconds={:?}, deny_ttl_seconds={:?})",
            self.name,
            self.max_entries,
            self.ttl.as_secs_f64(),
            self.deny_ttl.as_secs_f64()
        )
    }
}
