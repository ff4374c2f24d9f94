//! `Execution`: the handle of one asynchronous `perform` (`wait()`, `done()`, `status`,
//! `error`, `await`). A Rust object: one is made for every `perform` of a burst, the executor
//! loop (dispatch/executor.rs) sets its job and context and resolves it without running Python,
//! and `wait()` on a finished one returns without entering Python code.
//!
//! Waiting uses one condition for the whole process (waiting is rare, a lock per execution is
//! not free), with a generation that `_finish` bumps so that no wake-up is missed; awaiting
//! (asyncio) is python/workhorse/execution.py's `_wait_async`.

use crate::context::Context;
use crate::runtime::{now_ns, ns_to_secs};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};
use std::time::{Duration, Instant};

struct Statics {
    unknown: Py<PyAny>,
    timeout: Py<PyAny>,
    check_timeout: Py<PyAny>,
    /// `workhorse.execution._tell_awaiters(futures, status)` and `_wait_async(execution)`.
    tell_awaiters: Py<PyAny>,
    wait_async: Py<PyAny>,
}

static STATICS: PyOnceLock<Statics> = PyOnceLock::new();

fn statics(py: Python<'_>) -> PyResult<&Statics> {
    STATICS.get_or_try_init(py, || {
        let status = py
            .import(intern!(py, "workhorse.status"))?
            .getattr(intern!(py, "Status"))?;
        let execution = py.import(intern!(py, "workhorse.execution"))?;
        Ok(Statics {
            unknown: status.getattr(intern!(py, "UNKNOWN"))?.unbind(),
            timeout: status.getattr(intern!(py, "TIMEOUT"))?.unbind(),
            check_timeout: py
                .import(intern!(py, "workhorse._checks"))?
                .getattr(intern!(py, "timeout"))?
                .unbind(),
            tell_awaiters: execution.getattr(intern!(py, "_tell_awaiters"))?.unbind(),
            wait_async: execution.getattr(intern!(py, "_wait_async"))?.unbind(),
        })
    })
}

/// Bumped (and the condition notified) whenever an execution with waiters finishes.
static FINISHED: Mutex<u64> = Mutex::new(0);
static FINISHED_CV: Condvar = Condvar::new();

/// Wake every thread blocked in `Execution.wait()` (they look at their own execution again).
pub(crate) fn wake_waiters() {
    *FINISHED.lock() += 1;
    FINISHED_CV.notify_all();
}

/// Handle of one asynchronous perform: `wait()`, `done()`, `status`, `error`, `await`.
#[pyclass(module = "workhorse._core")]
pub(crate) struct Execution {
    /// The job this execution runs: the job performed, or its fork when another execution of
    /// the same Job object was running when this one started.
    job: Py<PyAny>,
    /// This execution's own context, once it started.
    ctx: Option<Py<Context>>,
    schedule: Option<Py<PyAny>>,
    status: Py<PyAny>,
    error: Option<Py<PyAny>>,
    done: bool,
    waiters: u32,
    /// asyncio futures of its awaiters, each resolved on its own loop.
    futures: Option<Py<PyList>>,
}

impl Execution {
    fn past_deadline(&self, py: Python<'_>) -> bool {
        self.ctx.as_ref().is_some_and(|ctx| {
            ctx.bind(py)
                .borrow()
                .deadline_secs()
                .is_some_and(|deadline| ns_to_secs(now_ns()) >= deadline)
        })
    }

    /// Set by the executor loop when the execution starts.
    pub(crate) fn started(slf: &Bound<'_, Self>, job: &Bound<'_, PyAny>, ctx: &Bound<'_, Context>) {
        let mut execution = slf.borrow_mut();
        let old_job = std::mem::replace(&mut execution.job, job.clone().unbind());
        let old_ctx = execution.ctx.replace(ctx.clone().unbind());
        drop(execution);
        drop((old_job, old_ctx)); // freed with no borrow held
    }

    /// Set its outcome; returns whether threads wait on it, its awaiters' futures and its
    /// schedule (taken: the schedule keeps its execution, the way back would be a cycle).
    fn resolve(
        slf: &Bound<'_, Self>,
        status: &Bound<'_, PyAny>,
        error: &Bound<'_, PyAny>,
    ) -> (bool, Option<Py<PyList>>, Option<Py<PyAny>>) {
        let py = slf.py();
        let mut execution = slf.borrow_mut();
        let old = (
            std::mem::replace(&mut execution.status, status.clone().unbind()),
            std::mem::replace(
                &mut execution.error,
                (!error.is_none()).then(|| error.clone().unbind()),
            ),
        );
        execution.done = true;
        let outcome = (
            execution.waiters > 0,
            execution.futures.as_ref().map(|f| f.clone_ref(py)),
            execution.schedule.take(),
        );
        drop(execution);
        drop(old); // freed with no borrow held
        outcome
    }

    /// Tell its awaiters (each future resolved on its own loop).
    fn tell(py: Python<'_>, futures: Option<Py<PyList>>, status: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(futures) = futures {
            if !futures.bind(py).is_empty() {
                statics(py)?
                    .tell_awaiters
                    .bind(py)
                    .call1((futures, status))?;
            }
        }
        Ok(())
    }

    /// Resolve it: status and error, its waiters and awaiters told, its schedule ended.
    pub(crate) fn finish(
        slf: &Bound<'_, Self>,
        status: Bound<'_, PyAny>,
        error: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (waiters, futures, schedule) = Self::resolve(slf, &status, &error);
        if waiters {
            py.detach(wake_waiters);
        }
        Self::tell(py, futures, &status)?;
        if let Some(schedule) = schedule {
            schedule.bind(py).call_method0(intern!(py, "_end"))?;
        }
        // Tracked again if it holds an error, or a job the collector must see.
        crate::gc::settle_one(slf.as_any());
        Ok(())
    }
}

/// Resolve executions that never started (a stop) with `status` and `error` and end their
/// schedules: what `_finish` does for one, with one wake-up of the waiters for all of them.
/// Records that are not Executions (Executor calls: Futures) are cancelled instead. Returns
/// whether a schedule's waiters are to be told (python/workhorse/execution.py does).
#[pyfunction]
pub(crate) fn finish_unstarted(
    records: &Bound<'_, PyAny>,
    status: Bound<'_, PyAny>,
    error: Bound<'_, PyAny>,
) -> PyResult<bool> {
    let py = records.py();
    let (mut wake, mut notify) = (false, false);
    for record in records.try_iter()? {
        let record = record?;
        let Ok(execution) = record.cast_exact::<Execution>() else {
            record.call_method0(intern!(py, "cancel"))?;
            continue;
        };
        let (waiters, futures, schedule) = Execution::resolve(execution, &status, &error);
        wake |= waiters;
        Execution::tell(py, futures, &status)?;
        if let Some(schedule) = schedule {
            let schedule = schedule.bind(py);
            schedule.setattr(intern!(py, "_ended"), true)?;
            notify |= schedule.getattr(intern!(py, "_waiters"))?.is_truthy()?;
        }
    }
    if wake {
        py.detach(wake_waiters);
    }
    Ok(notify)
}

#[pymethods]
impl Execution {
    #[new]
    #[pyo3(signature = (job, schedule=None))]
    fn new(py: Python<'_>, job: Py<PyAny>, schedule: Option<Py<PyAny>>) -> PyResult<Self> {
        Ok(Execution {
            job,
            ctx: None,
            schedule: schedule.filter(|s| !s.is_none(py)),
            status: statics(py)?.unknown.clone_ref(py),
            error: None,
            done: false,
            waiters: 0,
            futures: None,
        })
    }

    /// Made: a handle that refers to nothing tracked stays out of the cyclic GC (gc.rs).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(
        slf: &Bound<'_, Self>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        crate::gc::settle_one(slf.as_any());
    }

    #[getter]
    fn job(&self, py: Python<'_>) -> Py<PyAny> {
        self.job.clone_ref(py)
    }

    #[setter(job)]
    fn set_job(slf: &Bound<'_, Self>, job: Py<PyAny>) {
        let old = std::mem::replace(&mut slf.borrow_mut().job, job);
        drop(old);
    }

    #[getter(_ctx)]
    fn raw_ctx(&self, py: Python<'_>) -> Option<Py<Context>> {
        self.ctx.as_ref().map(|c| c.clone_ref(py))
    }

    #[setter(_ctx)]
    fn set_raw_ctx(slf: &Bound<'_, Self>, ctx: Option<Py<Context>>) {
        let old = std::mem::replace(&mut slf.borrow_mut().ctx, ctx);
        drop(old);
    }

    #[getter]
    fn schedule(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.schedule.as_ref().map(|s| s.clone_ref(py))
    }

    #[setter(schedule)]
    fn set_schedule(slf: &Bound<'_, Self>, schedule: Option<Py<PyAny>>) {
        let py = slf.py();
        let schedule = schedule.filter(|s| !s.is_none(py));
        let old = std::mem::replace(&mut slf.borrow_mut().schedule, schedule);
        drop(old);
    }

    /// The final status once done; TIMEOUT once the job's deadline passed; else UNKNOWN.
    #[getter]
    fn status(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if !self.done && self.past_deadline(py) {
            return Ok(statics(py)?.timeout.clone_ref(py));
        }
        Ok(self.status.clone_ref(py))
    }

    #[getter(_status)]
    fn raw_status(&self, py: Python<'_>) -> Py<PyAny> {
        self.status.clone_ref(py)
    }

    #[setter(_status)]
    fn set_raw_status(&mut self, status: Py<PyAny>) {
        self.status = status;
    }

    #[getter]
    fn error(&self, py: Python<'_>) -> Py<PyAny> {
        self.error
            .as_ref()
            .map_or_else(|| py.None(), |e| e.clone_ref(py))
    }

    #[setter(error)]
    fn set_error(slf: &Bound<'_, Self>, error: Bound<'_, PyAny>) {
        let error = (!error.is_none()).then(|| error.unbind());
        let old = std::mem::replace(&mut slf.borrow_mut().error, error);
        drop(old);
    }

    fn done(&self) -> bool {
        self.done
    }

    #[getter(_done)]
    fn raw_done(&self) -> bool {
        self.done
    }

    #[setter(_done)]
    fn set_raw_done(&mut self, done: bool) {
        self.done = done;
    }

    #[getter(_waiters)]
    fn raw_waiters(&self) -> u32 {
        self.waiters
    }

    #[getter(_futures)]
    fn raw_futures(&self, py: Python<'_>) -> Option<Py<PyList>> {
        self.futures.as_ref().map(|f| f.clone_ref(py))
    }

    /// The list its awaiters add their futures to (made on first use).
    fn _awaiters(slf: &Bound<'_, Self>) -> Py<PyList> {
        let py = slf.py();
        let futures = slf
            .borrow_mut()
            .futures
            .get_or_insert_with(|| PyList::empty(py).unbind())
            .clone_ref(py);
        // Its awaiters' futures can close a cycle back to it.
        crate::gc::settle_one(slf.as_any());
        futures
    }

    fn _past_deadline(&self, py: Python<'_>) -> bool {
        self.past_deadline(py)
    }

    #[pyo3(name = "_finish")]
    fn py_finish(
        slf: &Bound<'_, Self>,
        status: Bound<'_, PyAny>,
        error: Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::finish(slf, status, error)
    }

    /// Wake every thread blocked in `wait()` (after resolving executions in bulk).
    #[staticmethod]
    fn _wake_waiters(py: Python<'_>) {
        py.detach(wake_waiters);
    }

    /// Block until done (TIMEOUT once the job's deadline passes); never raises its error.
    #[pyo3(signature = (timeout=None))]
    fn wait(slf: &Bound<'_, Self>, timeout: Option<Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if timeout.is_none() && slf.borrow().done {
            return Ok(slf.borrow().status.clone_ref(py));
        }
        let statics = statics(py)?;
        let timeout: Option<f64> = statics
            .check_timeout
            .bind(py)
            .call1((timeout,))?
            .extract()?;
        let end = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.min(1e9)));
        // The deadline is only known once the execution starts: look again every 50 ms.
        let job = slf.borrow().job.clone_ref(py);
        let has_timeout = match job.bind(py).cast::<crate::job::Job>() {
            Ok(job) => job.borrow().timeout().is_some(),
            Err(_) => !job.bind(py).getattr(intern!(py, "timeout"))?.is_none(),
        };
        slf.borrow_mut().waiters += 1;
        let result = (|| -> PyResult<Option<Py<PyAny>>> {
            loop {
                let seen = *FINISHED.lock();
                {
                    let execution = slf.borrow();
                    if execution.done {
                        return Ok(None);
                    }
                    if execution.past_deadline(py) {
                        return Ok(Some(statics.timeout.clone_ref(py)));
                    }
                }
                let now = Instant::now();
                if end.is_some_and(|end| now >= end) {
                    return Ok(None);
                }
                // In slices, so that signals (Ctrl-C) reach the waiting thread.
                let slice = if has_timeout { 50 } else { 100 };
                let slice = now + Duration::from_millis(slice);
                let until = end.map_or(slice, |end| end.min(slice));
                py.detach(|| {
                    let mut generation = FINISHED.lock();
                    if *generation == seen {
                        FINISHED_CV.wait_until(&mut generation, until);
                    }
                });
                py.check_signals()?;
            }
        })();
        slf.borrow_mut().waiters -= 1;
        match result? {
            Some(timed_out) => Ok(timed_out),
            None => Self::status(&slf.borrow(), py),
        }
    }

    fn __await__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let coroutine = statics(py)?.wait_async.bind(py).call1((slf,))?;
        Ok(coroutine.call_method0(intern!(py, "__await__"))?.unbind())
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let job = slf.borrow().job.clone_ref(py);
        let status = Self::status(&slf.borrow(), py)?;
        Ok(format!(
            "Execution({}, status={})",
            job.bind(py).getattr(intern!(py, "handler"))?.repr()?,
            status.bind(py).repr()?
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.job)?;
        visit.call(&self.status)?;
        if let Some(ctx) = &self.ctx {
            visit.call(ctx)?;
        }
        for value in [&self.schedule, &self.error].into_iter().flatten() {
            visit.call(value)?;
        }
        if let Some(futures) = &self.futures {
            visit.call(futures)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.ctx = None;
        self.schedule = None;
        self.error = None;
        self.futures = None;
    }
}
