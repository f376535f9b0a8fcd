//! The only Python ⇄ value conversion: Python objects into canonical bytes (the cache key's
//! source and the engine's input), and regorus values back into Python objects.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use regorus::Value;
use smallvec::SmallVec;

use regoguard_core::canonical::{
    self, check_depth, input_error, prefix_index, prefix_key, CanonicalWriter,
};
use regoguard_core::error::Result;

/// A path as the user wrote it: a `str`, or an `os.PathLike` whose `os.fspath` is one;
/// anything else is `error("{what} must be ...")` (each caller's exception type).
pub fn fs_path(
    obj: &Bound<'_, PyAny>,
    what: &str,
    error: impl Fn(String) -> PyErr,
) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.to_owned());
    }
    let p = obj
        .py()
        .import("os")?
        .call_method1("fspath", (obj,))
        .map_err(|_| error(format!("{what} must be a str or os.PathLike")))?;
    Ok(p.cast::<PyString>()
        .map_err(|_| error(format!("{what} must be a str path")))?
        .to_str()?
        .to_owned())
}

thread_local! {
    /// One reusable buffer per thread: the hit path writes a key without allocating.
    static BUFFER: RefCell<CanonicalWriter> = RefCell::new(CanonicalWriter::new());
}

/// Runs `f` with the canonical bytes of `obj`; the path of an error starts at `root`.
///
/// # Errors
/// `Error::Input` naming the first value with no JSON form.
pub fn with_canonical<R>(
    obj: &Bound<'_, PyAny>,
    root: &str,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    with_written(|w| write_value(w, obj, root), f)
}

/// Runs `f` with what `write` wrote into this thread's reusable buffer.
///
/// # Errors
/// Whatever `write` or `f` return.
pub fn with_written<R>(
    write: impl FnOnce(&mut CanonicalWriter) -> Result<()>,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    BUFFER.with(|cell| {
        // Re-entrancy (a str subclass whose methods call back into regoguard) gets its own buffer.
        let mut fresh;
        let mut guard = cell.try_borrow_mut();
        let w: &mut CanonicalWriter = if let Ok(ref mut g) = guard {
            g
        } else {
            fresh = CanonicalWriter::new();
            &mut fresh
        };
        w.clear();
        write(w)?;
        f(w.as_bytes())
    })
}

/// Writes `obj` canonically; the path of an error starts at `root`.
///
/// # Errors
/// `Error::Input` naming the first value with no JSON form.
pub fn write_value(w: &mut CanonicalWriter, obj: &Bound<'_, PyAny>, root: &str) -> Result<()> {
    write(w, obj, 0).map_err(|e| canonical::prefix_path(e, root))
}

/// The canonical bytes of `obj`, owned.
///
/// # Errors
/// As [`with_canonical`].
pub fn to_canonical(obj: &Bound<'_, PyAny>, root: &str) -> Result<Vec<u8>> {
    with_canonical(obj, root, |b| Ok(b.to_vec()))
}

/// A Python object as a regorus value (data documents).
///
/// # Errors
/// As [`with_canonical`].
pub fn to_value(obj: &Bound<'_, PyAny>, root: &str) -> Result<Value> {
    with_canonical(obj, root, canonical::decode)
}

fn write(w: &mut CanonicalWriter, obj: &Bound<'_, PyAny>, depth: usize) -> Result<()> {
    // Exact types first: they are what request inputs are made of.
    if let Ok(s) = obj.cast_exact::<PyString>() {
        w.str(text(s)?);
    } else if let Ok(d) = obj.cast_exact::<PyDict>() {
        write_dict(w, d, depth)?;
    } else if obj.is_none() {
        w.null();
    } else if let Ok(b) = obj.cast_exact::<PyBool>() {
        w.bool(b.is_true());
    } else if obj.is_exact_instance_of::<PyInt>() {
        write_int(w, obj)?;
    } else if let Ok(x) = obj.cast_exact::<PyFloat>() {
        w.f64(x.value())?;
    } else if let Ok(l) = obj.cast_exact::<PyList>() {
        check_depth(depth)?;
        w.open_array();
        for (i, item) in l.iter().enumerate() {
            if i > 0 {
                w.comma();
            }
            write(w, &item, depth + 1).map_err(|e| prefix_index(e, i))?;
        }
        w.close_array();
    } else if let Ok(t) = obj.cast_exact::<PyTuple>() {
        check_depth(depth)?;
        w.open_array();
        for (i, item) in t.iter().enumerate() {
            if i > 0 {
                w.comma();
            }
            write(w, &item, depth + 1).map_err(|e| prefix_index(e, i))?;
        }
        w.close_array();
    } else {
        write_subclass(w, obj, depth)?;
    }
    Ok(())
}

/// Subclasses of the JSON types (str and int enums, dict and list subclasses), by their base
/// value; everything else is refused.
#[cold]
fn write_subclass(w: &mut CanonicalWriter, obj: &Bound<'_, PyAny>, depth: usize) -> Result<()> {
    if let Ok(s) = obj.cast::<PyString>() {
        w.str(text(s)?);
    } else if obj.is_instance_of::<PyBool>() {
        w.bool(obj.is_truthy().map_err(|e| input_error(e.to_string()))?);
    } else if obj.is_instance_of::<PyInt>() {
        write_int(w, obj)?;
    } else if let Ok(x) = obj.cast::<PyFloat>() {
        w.f64(x.value())?;
    } else if let Ok(d) = obj.cast::<PyDict>() {
        write_dict(w, d, depth)?;
    } else if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        check_depth(depth)?;
        w.open_array();
        let iter = obj.try_iter().map_err(|e| input_error(e.to_string()))?;
        for (i, item) in iter.enumerate() {
            let item = item.map_err(|e| input_error(e.to_string()))?;
            if i > 0 {
                w.comma();
            }
            write(w, &item, depth + 1).map_err(|e| prefix_index(e, i))?;
        }
        w.close_array();
    } else {
        let name = obj
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        let hint = match name.as_str() {
            "set" | "frozenset" => "; pass a sorted list instead",
            "bytes" | "bytearray" | "memoryview" => "; decode it to str first",
            _ => "; convert it to dict, list, str, int, float, bool or None",
        };
        return Err(input_error(format!(
            "unsupported type '{name}' has no JSON form{hint}"
        )));
    }
    Ok(())
}

#[inline]
pub fn text<'a>(s: &'a Bound<'_, PyString>) -> Result<&'a str> {
    s.to_str()
        .map_err(|_| input_error("the string is not valid Unicode (lone surrogate)".to_owned()))
}

fn write_int(w: &mut CanonicalWriter, obj: &Bound<'_, PyAny>) -> Result<()> {
    if let Ok(n) = obj.extract::<i64>() {
        w.i64(n);
    } else if let Ok(n) = obj.extract::<u64>() {
        w.u64(n);
    } else {
        let digits = obj.str().map_err(|e| input_error(e.to_string()))?;
        // `int.__str__` of an int subclass could be anything: big_int checks the digits.
        w.big_int(text(&digits)?)?;
    }
    Ok(())
}

fn write_dict(w: &mut CanonicalWriter, d: &Bound<'_, PyDict>, depth: usize) -> Result<()> {
    check_depth(depth)?;
    let mut items: SmallVec<[(Bound<'_, PyString>, Bound<'_, PyAny>); 16]> =
        SmallVec::with_capacity(d.len());
    for (k, v) in d.iter() {
        match k.cast_into::<PyString>() {
            Ok(k) => items.push((k, v)),
            Err(e) => {
                let k = e.into_inner();
                let name = k
                    .get_type()
                    .name()
                    .map_or_else(|_| "?".to_owned(), |n| n.to_string());
                let shown = k.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string());
                return Err(input_error(format!(
                    "dict key {shown} ({name}) is not a string"
                )));
            }
        }
    }
    let mut order: SmallVec<[(&str, usize); 16]> = SmallVec::with_capacity(items.len());
    for (i, (k, _)) in items.iter().enumerate() {
        let key = text(k).map_err(|e| prefix_key(e, &k.to_string_lossy()))?;
        order.push((key, i));
    }
    canonical::sort_entries(&mut order);
    w.open_object();
    for (n, (key, i)) in order.iter().enumerate() {
        if n > 0 {
            w.comma();
        }
        w.key(key);
        write(w, &items[*i].1, depth + 1).map_err(|e| prefix_key(e, key))?;
    }
    w.close_object();
    Ok(())
}

/// A regorus value as a fresh Python object (lists for arrays and sets, None for undefined).
pub fn to_python<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null | Value::Undefined => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else if n.is_integer() {
                py.get_type::<PyInt>().call1((n.format_decimal(),))?
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items.iter() {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Set(items) => {
            let list = PyList::empty(py);
            for item in items.iter() {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(fields) => {
            let dict = PyDict::new(py);
            for (k, item) in fields.iter_sorted() {
                let key = match k {
                    Value::String(s) => PyString::new(py, s).into_any(),
                    // Non-string keys (possible in Rego) become their compact JSON text, as
                    // OPA renders them (`[1,2]`, not regorus's pretty-printed form).
                    other => PyString::new(py, &serde_json::to_string(other).unwrap_or_default())
                        .into_any(),
                };
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
    })
}
