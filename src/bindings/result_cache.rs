//! `ResultCache`: the Rust half of `@cached_authorization` (`python/regoguard/decorators.py`).
//!
//! Results are Python objects kept in a [`TtlCache`], keyed by a BLAKE3 digest of the canonical
//! form of the function's bound arguments (or of what its `key=` callable returned), seeded with
//! the function's qualified name. Truthy results live `ttl`, falsy ones `deny_ttl`.
//!
//! Sync functions go through [`PyResultCache::call`]: the hit path holds the GIL (a canonical
//! write, a hash and a shard read lock); a miss is the core's `tier::read_through` (single
//! flight, the L2, then the function) with the GIL released, re-attaching only to decode an L2
//! entry or call the function. The L2 key space, its epochs, publisher and invalidation order
//! are the core's `tier::SharedTier`, as for decisions: what stays here is Python's (values,
//! `tags=`, the payload codec, the reentrancy guard, the async half). Async functions use [`PyResultCache::lookup`] and [`PyResultCache::store`]; their
//! single flight lives in Python, since it waits on awaitables rather than threads.
//!
//! Values are only dropped with the GIL released (inserts and invalidations run detached), so
//! a result's `__del__` never runs inside a shard lock; `PyO3` defers those decrefs to the next
//! attach.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::errors::{IntoPyErr, IntoPyResult};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::authorizer::PyDecision;
use super::convert::{to_canonical, to_python, with_canonical};
use super::l2::{flush_warning, resolve, PyRedisConfig};
use regoguard_core::cache::{seconds, Tagged, Ticket, TtlCache};
use regoguard_core::canonical;
use regoguard_core::error::Error;
use regoguard_core::key::{Key, KeySeed};
use regoguard_core::l2::pubsub::Listener;
use regoguard_core::l2::{Found, Observed};
use regoguard_core::metrics;
use regoguard_core::tier::{read_through, CacheListener, ReadThrough, SharedTier, Spaces};

/// Domain of every result-cache key, so no result key can equal a decision key (whose seeds are
/// keyed by a policy revision instead). Changing it changes every key.
const KEY_DOMAIN: &[u8] = b"regoguard/cached_authorization/v1";

/// The "revision" of result entries in the L2: the key domain's version. Changing the key
/// domain or the payload layout changes it.
const L2_REVISION: &str = "r1";

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
    /// The L2 epochs seen when Redis was read for this miss (set by `l2_get`).
    observed: parking_lot::Mutex<Option<Observed>>,
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

/// What the metrics registry reads of a [`PyResultCache`]: the cache and its counters.
/// Registered weakly with [`metrics::register_cache`] for the `cache="<name>"` series.
struct Counters {
    cache: Arc<TtlCache<Cached>>,
    name: String,
    max_entries: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl metrics::CacheSource for Counters {
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
    counters: Arc<Counters>,
    seed: KeySeed,
    name: String,
    /// Where key errors point: `args` (bound arguments) or `key()` (the `key=` callable).
    root: &'static str,
    max_entries: u64,
    ttl: Duration,
    deny_ttl: Duration,
    l2: Option<SharedTier>,
}

impl PyResultCache {
    /// The key of `key_value`, or an `InputError` that says how to fix it.
    #[inline]
    fn key_of(&self, key_value: &Bound<'_, PyAny>) -> PyResult<Key> {
        with_canonical(key_value, self.root, |bytes| Ok(self.seed.key(bytes)))
            .map_err(|e| self.key_error(e))
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
            Error::Input { path, message } => Error::Input {
                path,
                message: format!("{message}{hint}"),
            }
            .into_pyerr(),
            other => other.into_pyerr(),
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
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let args = args.bind(py);
        let kwargs = kwargs.map(|k| k.bind(py));
        let value = func.bind(py).call(args, kwargs)?;
        let ttl = self.ttl_for(&value)?;
        let tags = match tags {
            Some(t) => self.tag_list(&t.bind(py).call(args, kwargs)?)?,
            None => Box::new([]),
        };
        Ok((
            Cached(Arc::new(Stored {
                value: value.unbind(),
                tags,
            })),
            ttl,
        ))
    }

    /// The L2 payload of a result: the canonical form of `{"t": tags, "v": value}`, or `None`
    /// (counted) for a value with no JSON form, which stays L1-only.
    fn l2_payload(&self, py: Python<'_>, shared: &SharedTier, cached: &Cached) -> Option<Vec<u8>> {
        let d = PyDict::new(py);
        let tags: Vec<&str> = cached.0.tags.iter().map(|t| &**t).collect();
        let ok = d.set_item("t", tags).is_ok() && d.set_item("v", cached.0.value.bind(py)).is_ok();
        let payload = to_canonical(&d, "result").ok().filter(|_| ok);
        if payload.is_none() {
            shared
                .l2()
                .counters
                .unshareable
                .fetch_add(1, Ordering::Relaxed);
        }
        payload
    }

    /// Writes a result just stored in L1 to the L2 (fire and forget).
    fn write_back(
        &self,
        py: Python<'_>,
        key: &Key,
        cached: &Cached,
        ttl: Duration,
        observed: Option<Observed>,
    ) {
        let Some(shared) = &self.l2 else { return };
        if ttl.is_zero() {
            return;
        }
        if let Some(payload) = self.l2_payload(py, shared, cached) {
            shared.spawn_set(L2_REVISION, key, &payload, ttl, &cached.0.tags, observed);
        }
    }

    /// A result read from the L2, ready for L1 with its lifetime (the entry's remaining TTL,
    /// never more than this cache's TTL for the value); `None` (counted) if it does not decode.
    fn promoted(
        &self,
        py: Python<'_>,
        shared: &SharedTier,
        found: &Found,
    ) -> Option<(Cached, Duration)> {
        let decoded = (|| {
            let value = canonical::decode(&found.payload).ok()?;
            let obj = value.as_object().ok()?;
            let v = obj.get(&regorus::Value::from("v"))?;
            let t = obj.get(&regorus::Value::from("t"))?;
            let tags: Option<Box<[Arc<str>]>> = t
                .as_array()
                .ok()?
                .iter()
                .map(|x| x.as_string().ok().map(|s| Arc::from(&**s)))
                .collect();
            let value = to_python(py, v).ok()?;
            let ttl = self.ttl_for(&value).ok()?.min(found.remaining);
            Some((
                Cached(Arc::new(Stored {
                    value: value.unbind(),
                    tags: tags?,
                })),
                ttl,
            ))
        })();
        if decoded.is_none() {
            shared
                .l2()
                .counters
                .bad_entries
                .fetch_add(1, Ordering::Relaxed);
        }
        decoded
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
        let cache = &*self.counters.cache;
        let shared = self.l2.as_ref();
        let looked = py.detach(|| {
            read_through(
                cache,
                shared,
                L2_REVISION,
                &key,
                |found| shared.and_then(|s| Python::attach(|py| self.promoted(py, s, found))),
                || {
                    Python::attach(|py| {
                        self.compute(py, &func, &args, kwargs.as_ref(), tags.as_ref())
                    })
                },
            )
        });
        if let Some(shared) = shared {
            flush_warning(py, shared.l2());
        }
        let cached = match looked? {
            // Answered without calling the function.
            ReadThrough::Hit(c) | ReadThrough::Shared(c) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                c
            }
            ReadThrough::Computed {
                value,
                ttl,
                share,
                observed,
            } => {
                if share {
                    self.write_back(py, &key, &value, ttl, observed);
                }
                value
            }
        };
        Ok(cached.0.value.clone_ref(py))
    }
}

#[pymethods]
impl PyResultCache {
    #[new]
    #[pyo3(signature = (name, *, max_entries = 10_000, ttl_seconds = 600.0, deny_ttl_seconds = None,
                        custom_key = false, redis = None, identity = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: String,
        max_entries: i64,
        ttl_seconds: f64,
        deny_ttl_seconds: Option<f64>,
        custom_key: bool,
        redis: Option<&Bound<'_, PyAny>>,
        identity: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let max_entries = u64::try_from(max_entries)
            .ok()
            .filter(|m| (1..=u64::from(u32::MAX)).contains(m))
            .ok_or_else(|| {
                Error::config(format!(
                    "max_entries must be between 1 and {}, got {max_entries}",
                    u32::MAX
                ))
            })
            .py()?;
        let ttl = seconds("ttl_seconds", ttl_seconds).py()?;
        let deny_ttl = match deny_ttl_seconds {
            None => ttl,
            Some(s) => seconds("deny_ttl_seconds", s).py()?,
        };
        let root = if custom_key { "key()" } else { "args" };
        let domain = blake3::hash(KEY_DOMAIN);
        // The function's identity beyond its name (a closure's free variables, its defaults):
        // two closures made by one factory must not share results (ARCHITECTURE.md, "Keys").
        let space_name = match identity {
            Some(v) if !v.is_none() => {
                let bytes = to_canonical(v, "identity").py()?;
                let digest: String = blake3::hash(&bytes)
                    .as_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("{name}\0{root}\0{digest}")
            }
            _ => format!("{name}\0{root}"),
        };
        // The root is part of the seed: keys from bound arguments and from `key=` never meet.
        let seed = KeySeed::new(domain.as_bytes(), &space_name);
        let cache = Arc::new(TtlCache::new(max_entries));
        let l2 = match redis {
            None => None,
            Some(r) if r.is_none() => None,
            Some(r) => {
                let config = r
                    .cast::<PyRedisConfig>()
                    .map_err(|_| Error::config("redis must be a RedisConfig or None"))
                    .py()?;
                let l2 = config.get().l2(py)?;
                let id: String = blake3::hash(space_name.as_bytes()).as_bytes()[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let space = format!("{L2_REVISION}:{id}");
                // Applies other instances' invalidations on the L2 runtime, without the GIL:
                // dropped results are decref'd at the next attach (PyO3's deferred pool).
                let listener: Arc<dyn Listener> = Arc::new(CacheListener::new(&cache));
                // Its bus scope and its epoch space are its key space.
                Some(SharedTier::new(
                    l2,
                    &space,
                    space.clone(),
                    Spaces::Fixed,
                    listener,
                ))
            }
        };
        let counters = Arc::new(Counters {
            cache,
            name: name.clone(),
            max_entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        });
        let source: Arc<dyn metrics::CacheSource> = counters.clone();
        metrics::register_cache(&source);
        Ok(Self {
            counters,
            seed,
            name,
            root,
            max_entries,
            ttl,
            deny_ttl,
            l2,
        })
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
        if let Some(hit) = self.counters.cache.get(&k) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit.0.value.clone_ref(py));
        }
        self.call_miss(py, k, func, args, kwargs, tags)
    }

    /// The cached result for `key` (a hit is counted), or a `CacheMiss` (nothing is counted).
    fn lookup(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let k = self.key_of(key)?;
        if let Some(hit) = self.counters.cache.get(&k) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit.0.value.clone_ref(py));
        }
        let miss = PyCacheMiss {
            key: k,
            ticket: self.counters.cache.ticket(),
            observed: parking_lot::Mutex::new(None),
        };
        Ok(Py::new(py, miss)?.into_any())
    }

    /// Counts a miss: the caller is about to call the function.
    fn begin(&self) {
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
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
        let cached = Cached(Arc::new(Stored {
            value: value.clone().unbind(),
            tags,
        }));
        let stored = py.detach(|| {
            self.counters
                .cache
                .insert(miss.key, cached.clone(), ttl, miss.ticket)
        });
        if stored {
            let observed = *miss.observed.lock();
            self.write_back(py, &miss.key, &cached, ttl, observed);
        }
        Ok(stored)
    }

    /// Async miss path: starts reading `miss` from the L2 and returns `True`; the result reaches
    /// `future` as `(found, value)` through `call_soon_threadsafe`. Returns `False` (nothing
    /// started: a miss) without an L2 or while Redis is known to be down.
    fn l2_get(
        slf: &Bound<'_, Self>,
        miss: &Bound<'_, PyCacheMiss>,
        call_soon_threadsafe: Py<PyAny>,
        future: Py<PyAny>,
    ) -> bool {
        let this = slf.get();
        let Some(shared) = &this.l2 else { return false };
        let (key, ticket) = (miss.get().key, miss.get().ticket);
        let cache: Py<Self> = slf.clone().unbind();
        let miss_ref: Py<PyCacheMiss> = miss.clone().unbind();
        let started = shared.spawn_get(L2_REVISION, &key, move |found, observed| {
            *miss_ref.get().observed.lock() = observed;
            let this = cache.get();
            let Some(shared) = &this.l2 else { return };
            let promoted = found.and_then(|f| Python::attach(|py| this.promoted(py, shared, &f)));
            if let Some((c, ttl)) = &promoted {
                // Not attached: a value replaced here is dropped without the GIL (deferred).
                this.counters.cache.insert(key, c.clone(), *ttl, ticket);
            }
            Python::attach(|py| {
                let (found, value) = match promoted {
                    Some((c, _)) => (true, c.0.value.clone_ref(py)),
                    None => (false, py.None()),
                };
                if found {
                    this.counters.hits.fetch_add(1, Ordering::Relaxed);
                }
                resolve(py, &call_soon_threadsafe, &future, found, value);
                flush_warning(py, shared.l2());
            });
        });
        if !started {
            flush_warning(slf.py(), shared.l2());
        }
        started
    }

    /// Drops the entry of `key`, here and in the L2; returns whether this process held one.
    fn invalidate(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let k = self.key_of(key)?;
        let held = py.detach(|| self.counters.cache.remove(&k));
        if let Some(shared) = &self.l2 {
            py.detach(|| shared.invalidate_key(L2_REVISION, &k));
            flush_warning(py, shared.l2());
        }
        Ok(held)
    }

    fn invalidate_tags(&self, py: Python<'_>, tags: Vec<String>) {
        py.detach(|| self.counters.cache.invalidate_tags(&tags));
        if let Some(shared) = &self.l2 {
            py.detach(|| shared.invalidate_tags(L2_REVISION, &tags));
            flush_warning(py, shared.l2());
        }
    }

    fn invalidate_all(&self, py: Python<'_>) {
        py.detach(|| self.counters.cache.clear());
        if let Some(shared) = &self.l2 {
            py.detach(|| shared.invalidate_all(L2_REVISION));
            flush_warning(py, shared.l2());
        }
    }

    /// Whether results are shared through a Redis L2.
    #[getter]
    fn shared(&self) -> bool {
        self.l2.is_some()
    }

    /// `(hits, misses, entries)`.
    fn info(&self) -> (u64, u64, usize) {
        (
            self.counters.hits.load(Ordering::Relaxed),
            self.counters.misses.load(Ordering::Relaxed),
            self.counters.cache.len(),
        )
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

/// The canonical bytes of `value` (the key form of `@cached_authorization`), so the decorator
/// can tell at decoration time whether a closure's free variable has one.
#[pyfunction]
#[pyo3(name = "_canonical", signature = (value, root = "value"))]
pub fn canonical_bytes<'py>(
    value: &Bound<'py, PyAny>,
    root: &str,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let bytes = to_canonical(value, root).py()?;
    Ok(pyo3::types::PyBytes::new(value.py(), &bytes))
}
