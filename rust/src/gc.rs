//! Keeping per-execution objects out of the cyclic garbage collector.
//!
//! Every execution makes a few small Python objects (the Job or its fork, the Context, the
//! Execution handle). They are GC-tracked like any `__slots__` instance, and at 200k executions
//! a second the collector walking them was 40% of the CPU (`perf` on `benches/bench_burst.py`).
//! CPython itself untracks a tuple or a dict that holds only atoms, which can never be part of a
//! reference cycle; `settle` applies the same rule to our objects: an object none of whose
//! referents is tracked (its class, Status members and Sessions aside) is untracked, and one
//! that refers to a tracked object is tracked again. Python settles an object where its fields
//! change: when it is made or performed, when an execution ends, when a value is set.
//!
//! Untracking never frees anything early: an object the collector does not see only makes what
//! it refers to look referenced from outside. The cost of a mistake is a cycle not collected,
//! never a crash; the rule above keeps that to fields changed behind our back after the last
//! settle (documented on Job and Context).

use parking_lot::RwLock;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::os::raw::{c_int, c_void};

/// Types whose instances never make a settled object tracked: long-lived singletons (Status
/// members, a worker's Session) that cannot close a cycle through a per-execution object.
/// Their addresses; each type's reference is kept for good, so an address is never reused.
static EXEMPT: RwLock<Vec<usize>> = RwLock::new(Vec::new());

struct Visit<'a> {
    owner_type: *mut ffi::PyObject,
    exempt: &'a [usize],
    found: bool,
}

/// tp_traverse's visitor: stops at the first referent that keeps the object tracked.
unsafe extern "C" fn visit(obj: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
    let state = &mut *(arg as *mut Visit<'_>);
    if obj.is_null() || obj == state.owner_type || ffi::PyObject_GC_IsTracked(obj) == 0 {
        return 0;
    }
    let kind = ffi::Py_TYPE(obj) as *mut ffi::PyObject;
    if state.exempt.contains(&(kind as usize)) {
        return 0;
    }
    state.found = true;
    1
}

/// `gc.is_tracked(obj)`: whether the collector sees it (false for atoms).
pub(crate) fn is_tracked(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a live object, and we hold the GIL.
    unsafe { ffi::PyObject_GC_IsTracked(obj.as_ptr()) != 0 }
}

/// Untrack each object when nothing it refers to is tracked, track it again otherwise (in the
/// order given: settle what an object refers to before the object). None is skipped; objects of
/// types without GC support are left alone.
#[pyfunction]
#[pyo3(signature = (*objs))]
pub(crate) fn settle(objs: &Bound<'_, PyTuple>) {
    for obj in objs.iter() {
        if !obj.is_none() {
            settle_one(&obj);
        }
    }
}

/// `settle` of one object; returns whether it is tracked now.
pub(crate) fn settle_one(obj: &Bound<'_, PyAny>) -> bool {
    let ptr = obj.as_ptr();
    // SAFETY: `obj` is a live object and we hold the GIL; tp_traverse is called as
    // gc.get_referents calls it, with a visitor that only reads.
    unsafe {
        let kind = ffi::Py_TYPE(ptr);
        if ffi::PyType_IsSubtype(kind, std::ptr::addr_of_mut!(ffi::PyType_Type)) != 0
            || ffi::PyType_GetFlags(kind) & ffi::Py_TPFLAGS_HAVE_GC == 0
        {
            return false;
        }
        let traverse = ffi::PyType_GetSlot(kind, ffi::Py_tp_traverse);
        if traverse.is_null() {
            return ffi::PyObject_GC_IsTracked(ptr) != 0;
        }
        let traverse: ffi::traverseproc = std::mem::transmute(traverse);
        let exempt = EXEMPT.read();
        let mut state = Visit {
            owner_type: kind as *mut ffi::PyObject,
            exempt: &exempt,
            found: false,
        };
        traverse(ptr, visit, &mut state as *mut Visit<'_> as *mut c_void);
        let tracked = ffi::PyObject_GC_IsTracked(ptr) != 0;
        if state.found && !tracked {
            ffi::PyObject_GC_Track(ptr.cast());
        } else if !state.found && tracked {
            ffi::PyObject_GC_UnTrack(ptr.cast());
        }
        state.found
    }
}

/// Register the types `settle` never counts as tracked referents (see EXEMPT).
#[pyfunction]
pub(crate) fn gc_exempt(types: Vec<Bound<'_, pyo3::types::PyType>>) {
    let mut exempt = EXEMPT.write();
    for kind in types {
        let addr = kind.as_ptr() as usize;
        if !exempt.contains(&addr) {
            exempt.push(addr);
            std::mem::forget(kind.unbind()); // kept alive for good: the address stays its own
        }
    }
}
