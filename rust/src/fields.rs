//! Setting a field of one of our pyclasses from Python.
//!
//! The old value is dropped only after the object's borrow is released: freeing a Python object
//! may run Python code (a `__del__`, a weakref callback, a dict key's `__eq__`) that touches the
//! same object, and would otherwise meet a borrow error.

use pyo3::prelude::*;
use pyo3::PyClass;

/// Put `value` in the field `field` picks, then drop what was there with no borrow held.
pub(crate) fn replace<C, T>(slf: &Bound<'_, C>, field: impl FnOnce(&mut C) -> &mut T, value: T)
where
    C: PyClass<Frozen = pyo3::pyclass::boolean_struct::False>,
{
    let old = std::mem::replace(field(&mut slf.borrow_mut()), value);
    drop(old);
}

/// None as Rust's None; anything else kept.
pub(crate) fn none_to_option(value: Bound<'_, PyAny>) -> Option<Py<PyAny>> {
    (!value.is_none()).then(|| value.unbind())
}

/// A field that may be unset, as Python sees it (None when unset).
pub(crate) fn some_or_none(py: Python<'_>, value: &Option<Py<PyAny>>) -> Py<PyAny> {
    value
        .as_ref()
        .map_or_else(|| py.None(), |value| value.clone_ref(py))
}
