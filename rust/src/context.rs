//! `Context`: the per-execution state a handler sees as `job.ctx` (key/values, the Status, the
//! error raised, deadline and cancellation), a Rust object so that the run path (dispatch/run.rs)
//! makes and reads it without running Python: one is made for every execution.
//!
//! Its values are stored lazily (an execution that sets none allocates no dict), and like every
//! per-execution object it leaves the cyclic GC when it holds nothing that can close a cycle
//! (gc.rs). Status handling stays Python: `ctx.status = code` goes through
//! `workhorse.status.as_status`, and the members are the Python `Status` enum's.

use crate::fields;
use crate::runtime::{now_ns, ns_to_secs};
use crate::waiting::{end_of, Waiters};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};
use std::time::Duration;

/// What a Context needs from the Python layer, looked up on first use (after `workhorse.job`
/// has been imported, which imports this module).
struct Statics {
    status_type: Py<PyType>,
    unknown: Py<PyAny>,
    as_status: Py<PyAny>,
    default_session: Py<PyAny>,
    check_timeout: Py<PyAny>,
}

static STATICS: PyOnceLock<Statics> = PyOnceLock::new();

fn statics(py: Python<'_>) -> PyResult<&Statics> {
    STATICS.get_or_try_init(py, || {
        let status = py.import(intern!(py, "workhorse.status"))?;
        let status_type = status.getattr(intern!(py, "Status"))?;
        let job = py.import(intern!(py, "workhorse.job"))?;
        let checks = py.import(intern!(py, "workhorse._checks"))?;
        Ok(Statics {
            unknown: status_type.getattr(intern!(py, "UNKNOWN"))?.unbind(),
            status_type: status_type.cast_into::<PyType>()?.unbind(),
            as_status: status.getattr(intern!(py, "as_status"))?.unbind(),
            default_session: job.getattr(intern!(py, "_DEFAULT_SESSION"))?.unbind(),
            check_timeout: checks.getattr(intern!(py, "timeout"))?.unbind(),
        })
    })
}

/// One condition for every `wait_cancelled()` (waiting.rs): cancelling is rare.
static CANCELS: Waiters = Waiters::new();

/// Per-execution state: key/values, the status, the error raised, deadline and cancellation.
#[pyclass(module = "workhorse._core", subclass)]
pub(crate) struct Context {
    values: Option<Py<PyDict>>,
    status: Py<PyAny>,
    error: Option<Py<PyAny>>,
    #[pyo3(get, set)]
    deadline: Option<f64>,
    /// time.monotonic() at which the core made this execution due (an interval's ideal tick).
    #[pyo3(get, set)]
    scheduled_at: Option<f64>,
    #[pyo3(get, set, name = "_cancelled")]
    cancelled: bool,
    waiters: u32,
    /// Set by the run path: this context belongs to an execution (values set on it stay with it).
    #[pyo3(get, set, name = "_executing")]
    executing: bool,
    /// time.perf_counter() when it was made (for an execution: when it started).
    #[pyo3(get, name = "_started")]
    started: f64,
    trace: Option<Py<PyAny>>,
    result: Option<Py<PyAny>>,
    #[pyo3(get, set)]
    session: Py<PyAny>,
}

impl Context {
    /// A fresh context, as the run path makes one for each execution.
    pub(crate) fn fresh(
        py: Python<'_>,
        session: Py<PyAny>,
        deadline: Option<f64>,
        scheduled_at: Option<f64>,
    ) -> PyResult<Self> {
        Ok(Context {
            values: None,
            status: statics(py)?.unknown.clone_ref(py),
            error: None,
            deadline,
            scheduled_at,
            cancelled: false,
            waiters: 0,
            executing: false,
            // time.perf_counter() reads the same clock as the core on every platform.
            started: ns_to_secs(now_ns()),
            trace: None,
            result: None,
            session,
        })
    }

    /// `Context()`: the default session, no deadline.
    pub(crate) fn new_default(py: Python<'_>) -> PyResult<Self> {
        let session = statics(py)?.default_session.clone_ref(py);
        Context::fresh(py, session, None, None)
    }

    pub(crate) fn deadline_secs(&self) -> Option<f64> {
        self.deadline
    }

    pub(crate) fn started(&self) -> f64 {
        self.started
    }

    pub(crate) fn values_ref(&self) -> Option<&Py<PyDict>> {
        self.values.as_ref()
    }

    pub(crate) fn set_values(&mut self, values: Option<Py<PyDict>>) {
        self.values = values;
    }

    pub(crate) fn executing(&self) -> bool {
        self.executing
    }

    pub(crate) fn mark_executing(&mut self) {
        self.executing = true;
    }

    pub(crate) fn status_ref(&self) -> &Py<PyAny> {
        &self.status
    }

    pub(crate) fn set_status_raw(&mut self, status: Py<PyAny>) {
        self.status = status;
    }

    pub(crate) fn has_error(&self) -> bool {
        self.error.is_some()
    }

    pub(crate) fn error_or_none(&self, py: Python<'_>) -> Py<PyAny> {
        self.error
            .as_ref()
            .map_or_else(|| py.None(), |error| error.clone_ref(py))
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled || self.deadline.is_some_and(|d| ns_to_secs(now_ns()) >= d)
    }
}

#[pymethods]
impl Context {
    #[new]
    #[pyo3(signature = (session=None, deadline=None, values=None, scheduled_at=None))]
    fn new(
        py: Python<'_>,
        session: Option<Py<PyAny>>,
        deadline: Option<f64>,
        values: Option<Py<PyDict>>,
        scheduled_at: Option<f64>,
    ) -> PyResult<Self> {
        let session = match session {
            Some(session) if !session.is_none(py) => session,
            _ => statics(py)?.default_session.clone_ref(py),
        };
        let mut ctx = Context::fresh(py, session, deadline, scheduled_at)?;
        ctx.values = values;
        Ok(ctx)
    }

    /// The execution's Status; assigning an int that is not a member stores its class, and
    /// anything that is not an int raises TypeError (the handler's error, not the worker's).
    #[getter]
    fn status(&self, py: Python<'_>) -> Py<PyAny> {
        self.status.clone_ref(py)
    }

    #[setter]
    fn set_status(slf: &Bound<'_, Self>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let statics = statics(py)?;
        let status = if value.get_type().is(statics.status_type.bind(py)) {
            value.unbind()
        } else {
            statics.as_status.bind(py).call1((value,))?.unbind()
        };
        slf.borrow_mut().status = status; // the old one is a Status member: nothing runs
        Ok(())
    }

    /// The status as stored, without coercion (the status rules and adapters).
    #[getter(_status)]
    fn raw_status(&self, py: Python<'_>) -> Py<PyAny> {
        self.status.clone_ref(py)
    }

    #[setter(_status)]
    fn set_raw_status(&mut self, value: Py<PyAny>) {
        self.status = value;
    }

    /// `ctx.set_status(code)`: `Status(code)`, a ValueError for a code that is not a member.
    #[pyo3(name = "set_status")]
    fn set_status_code(slf: &Bound<'_, Self>, status: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let status = statics(py)?.status_type.bind(py).call1((status,))?.unbind();
        slf.borrow_mut().status = status;
        Ok(())
    }

    #[pyo3(signature = (key, default=None))]
    fn get(
        slf: &Bound<'_, Self>,
        key: Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        // No borrow held while Python runs (a key's __eq__ may let another thread in).
        let values = slf.borrow().values.as_ref().map(|v| v.clone_ref(py));
        if let Some(values) = values {
            if let Some(value) = values.bind(py).get_item(key)? {
                return Ok(value.unbind());
            }
        }
        Ok(default.unwrap_or_else(|| py.None()))
    }

    fn set(slf: &Bound<'_, Self>, key: Bound<'_, PyAny>, value: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let tracked = crate::gc::is_tracked(&value);
        let values = {
            let mut ctx = slf.borrow_mut();
            ctx.values
                .get_or_insert_with(|| PyDict::new(py).unbind())
                .clone_ref(py)
        };
        values.bind(py).set_item(key, value)?;
        if tracked {
            // A value that can close a cycle: the collector must see this context.
            crate::gc::settle_one(slf.as_any());
        }
        Ok(())
    }

    /// A copy of every key/value set on this context.
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match &self.values {
            Some(values) => values.bind(py).copy(),
            None => Ok(PyDict::new(py)),
        }
    }

    #[getter(_values)]
    fn raw_values(&self, py: Python<'_>) -> Py<PyAny> {
        self.values
            .as_ref()
            .map_or_else(|| py.None(), |values| values.clone_ref(py).into_any())
    }

    #[setter(_values)]
    fn set_raw_values(slf: &Bound<'_, Self>, values: Option<Py<PyDict>>) {
        fields::replace(slf, |me| &mut me.values, values);
    }

    #[getter]
    fn error(&self, py: Python<'_>) -> Py<PyAny> {
        fields::some_or_none(py, &self.error)
    }

    #[setter]
    fn set_error(slf: &Bound<'_, Self>, error: Bound<'_, PyAny>) {
        fields::replace(slf, |me| &mut me.error, fields::none_to_option(error));
    }

    /// True once the worker stopped or the deadline passed: a handler should wrap up.
    #[getter]
    fn cancelled(&self) -> bool {
        self.is_cancelled()
    }

    #[getter(_trace)]
    fn raw_trace(&self, py: Python<'_>) -> Py<PyAny> {
        fields::some_or_none(py, &self.trace)
    }

    #[setter(_trace)]
    fn set_raw_trace(slf: &Bound<'_, Self>, trace: Bound<'_, PyAny>) {
        fields::replace(slf, |me| &mut me.trace, fields::none_to_option(trace));
    }

    /// A `wh.Result` a queued job's handler returned.
    #[getter(_result)]
    fn raw_result(&self, py: Python<'_>) -> Py<PyAny> {
        fields::some_or_none(py, &self.result)
    }

    #[setter(_result)]
    fn set_raw_result(slf: &Bound<'_, Self>, result: Bound<'_, PyAny>) {
        fields::replace(slf, |me| &mut me.result, fields::none_to_option(result));
    }

    /// Mark the execution cancelled and wake handlers blocked in wait_cancelled().
    fn cancel(&mut self) {
        self.cancelled = true;
        if self.waiters > 0 {
            CANCELS.notify();
        }
    }

    /// Block until cancelled or past the deadline, at most timeout s; True if cancelled.
    #[pyo3(signature = (timeout=None))]
    fn wait_cancelled(slf: &Bound<'_, Self>, timeout: Option<Bound<'_, PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let timeout: Option<f64> = statics(py)?
            .check_timeout
            .bind(py)
            .call1((timeout,))?
            .extract()?;
        let mut end = end_of(timeout);
        if let Some(deadline) = slf.borrow().deadline {
            if let Some(at) = end_of(Some(deadline - ns_to_secs(now_ns()))) {
                end = Some(end.map_or(at, |end| end.min(at)));
            }
        }
        slf.borrow_mut().waiters += 1;
        let result = CANCELS.wait(py, end, Duration::from_millis(100), || {
            Ok(slf.borrow().cancelled.then_some(()))
        });
        slf.borrow_mut().waiters -= 1;
        result?;
        Ok(slf.borrow().is_cancelled())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (status, cancelled) = {
            let ctx = slf.borrow();
            (ctx.status.clone_ref(py), ctx.is_cancelled())
        };
        Ok(format!(
            "Context(status={}, cancelled={})",
            status.bind(py).repr()?,
            if cancelled { "True" } else { "False" }
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.status)?;
        visit.call(&self.session)?;
        visit.call(&self.values)?;
        visit.call(&self.error)?;
        visit.call(&self.trace)?;
        visit.call(&self.result)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.values = None;
        self.error = None;
        self.trace = None;
        self.result = None;
    }
}
