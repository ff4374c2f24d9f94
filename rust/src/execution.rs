//! `Execution` and `Schedule`, the handles the Worker returns. `Execution`: the handle of one
//! asynchronous `perform` (`wait()`, `done()`, `status`,
//! `error`, `await`). A Rust object: one is made for every `perform` of a burst, the executor
//! loop (dispatch/executor.rs) sets its job and context and resolves it without running Python,
//! and `wait()` on a finished one returns without entering Python code.
//!
//! Waiting uses one condition for the whole process (waiting is rare, a lock per execution is
//! not free), with a generation that `_finish` bumps so that no wake-up is missed; awaiting
//! (asyncio) is python/workhorse/execution.py's `_wait_async`. `Schedule`: the handle of a timer,
//! interval or receive schedule (one per `perform_in`, a million pending is a use case).

use crate::context::Context;
use crate::fields;
use crate::runtime::{now_ns, ns_to_secs};
use crate::waiting::{end_of, Waiters};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};
use std::time::Duration;

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

/// One condition for every `Execution.wait()` and `Schedule.wait()` (waiting.rs), notified
/// when one with waiters finishes or ends.
static FINISHED: Waiters = Waiters::new();

/// Wake every thread blocked in `Execution.wait()` or `Schedule.wait()`.
pub(crate) fn wake_waiters() {
    FINISHED.notify();
}

/// Handle of one asynchronous perform: `wait()`, `done()`, `status`, `error`, `await`.
#[pyclass(module = "workhorse._core")]
pub(crate) struct Execution {
    /// The job this execution runs: the job performed, or its fork when another execution of
    /// the same Job object was running when this one started.
    job: Py<PyAny>,
    /// This execution's own context, once it started.
    ctx: Option<Py<Context>>,
    schedule: Option<Py<Schedule>>,
    status: Py<PyAny>,
    error: Option<Py<PyAny>>,
    #[pyo3(get, set, name = "_done")]
    done: bool,
    #[pyo3(get, name = "_waiters")]
    waiters: u32,
    /// asyncio futures of its awaiters, each resolved on its own loop.
    futures: Option<Py<PyList>>,
}

impl Execution {
    pub(crate) fn job_ref(&self) -> &Py<PyAny> {
        &self.job
    }

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
    ) -> (bool, Option<Py<PyList>>, Option<Py<Schedule>>) {
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
    fn tell(
        py: Python<'_>,
        futures: Option<Py<PyList>>,
        status: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
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
            Schedule::_end(schedule.bind(py));
        }
        // Tracked again if it holds an error, or a job the collector must see.
        crate::gc::settle_one(slf.as_any());
        Ok(())
    }
}

/// Resolve executions that never started (a stop) with `status` and `error` and end their
/// schedules: what `_finish` does for one, with one wake-up of the waiters for all of them.
/// Records that are not Executions (Executor calls: Futures) are cancelled instead.
#[pyfunction]
pub(crate) fn finish_unstarted(
    records: &Bound<'_, PyAny>,
    status: Bound<'_, PyAny>,
    error: Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = records.py();
    let mut wake = false;
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
            wake |= schedule.bind(py).borrow_mut().end();
        }
    }
    if wake {
        py.detach(wake_waiters);
    }
    Ok(())
}

#[pymethods]
impl Execution {
    #[new]
    #[pyo3(signature = (job, schedule=None))]
    fn new(py: Python<'_>, job: Py<PyAny>, schedule: Option<Py<Schedule>>) -> PyResult<Self> {
        Ok(Execution {
            job,
            ctx: None,
            schedule,
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
        fields::replace(slf, |me| &mut me.job, job);
    }

    #[getter(_ctx)]
    fn raw_ctx(&self, py: Python<'_>) -> Option<Py<Context>> {
        self.ctx.as_ref().map(|c| c.clone_ref(py))
    }

    #[setter(_ctx)]
    fn set_raw_ctx(slf: &Bound<'_, Self>, ctx: Option<Py<Context>>) {
        fields::replace(slf, |me| &mut me.ctx, ctx);
    }

    #[getter]
    fn schedule(&self, py: Python<'_>) -> Option<Py<Schedule>> {
        self.schedule.as_ref().map(|s| s.clone_ref(py))
    }

    #[setter(schedule)]
    fn set_schedule(slf: &Bound<'_, Self>, schedule: Option<Py<Schedule>>) {
        fields::replace(slf, |me| &mut me.schedule, schedule);
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
        fields::some_or_none(py, &self.error)
    }

    #[setter(error)]
    fn set_error(slf: &Bound<'_, Self>, error: Bound<'_, PyAny>) {
        fields::replace(slf, |me| &mut me.error, fields::none_to_option(error));
    }

    fn done(&self) -> bool {
        self.done
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
        let end = end_of(timeout);
        // The deadline is only known once the execution starts: look again every 50 ms.
        let job = slf.borrow().job.clone_ref(py);
        let has_timeout = match job.bind(py).cast::<crate::job::Job>() {
            Ok(job) => job.borrow().timeout().is_some(),
            Err(_) => !job.bind(py).getattr(intern!(py, "timeout"))?.is_none(),
        };
        let slice = Duration::from_millis(if has_timeout { 50 } else { 100 });
        slf.borrow_mut().waiters += 1;
        let result = FINISHED.wait(py, end, slice, || {
            let execution = slf.borrow();
            Ok(if execution.done {
                Some(None)
            } else if execution.past_deadline(py) {
                Some(Some(statics.timeout.clone_ref(py)))
            } else {
                None
            })
        });
        slf.borrow_mut().waiters -= 1;
        match result? {
            Some(Some(timed_out)) => Ok(timed_out),
            _ => Self::status(&slf.borrow(), py),
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
        visit.call(&self.ctx)?;
        visit.call(&self.schedule)?;
        visit.call(&self.error)?;
        visit.call(&self.futures)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.ctx = None;
        self.schedule = None;
        self.error = None;
        self.futures = None;
    }
}

/// Handle of a timer, interval or receive schedule: `cancel()`, `done()`, `wait()`.
#[pyclass(module = "workhorse._core")]
pub(crate) struct Schedule {
    worker: Py<PyAny>,
    #[pyo3(get)]
    key: u64,
    #[pyo3(get)]
    kind: Py<PyAny>,
    #[pyo3(get, set, name = "_ended")]
    ended: bool,
    #[pyo3(get, name = "_waiters")]
    waiters: u32,
    #[pyo3(get, set, name = "_stop")]
    stop: bool,
    execution: Option<Py<Execution>>,
}

impl Schedule {
    /// A `perform_at` / `perform_in` schedule and its execution of `job`.
    pub(crate) fn one_shot(
        py: Python<'_>,
        worker: Py<PyAny>,
        key: u64,
        kind: Py<PyAny>,
        job: Py<PyAny>,
    ) -> PyResult<Py<Schedule>> {
        let schedule = Py::new(py, Schedule::new(worker, key, kind))?;
        let execution = Bound::new(py, Execution::new(py, job, Some(schedule.clone_ref(py)))?)?;
        // Both refer to each other (until the execution finishes): the collector sees them.
        schedule.borrow_mut(py).execution = Some(execution.unbind());
        Ok(schedule)
    }

    fn end(&mut self) -> bool {
        self.ended = true;
        self.waiters > 0
    }
}

#[pymethods]
impl Schedule {
    #[new]
    fn new(worker: Py<PyAny>, key: u64, kind: Py<PyAny>) -> Self {
        Schedule {
            worker,
            key,
            kind,
            ended: false,
            waiters: 0,
            stop: false,
            execution: None,
        }
    }

    #[getter(_worker)]
    fn raw_worker(&self, py: Python<'_>) -> Py<PyAny> {
        self.worker.clone_ref(py)
    }

    /// A one-shot schedule's (`perform_at`, `perform_in`) execution.
    #[getter]
    fn execution(&self, py: Python<'_>) -> Option<Py<Execution>> {
        self.execution.as_ref().map(|e| e.clone_ref(py))
    }

    #[setter(execution)]
    fn set_execution(slf: &Bound<'_, Self>, execution: Option<Py<Execution>>) {
        fields::replace(slf, |me| &mut me.execution, execution);
    }

    /// Stop the schedule; runs already started finish. False if it had already ended.
    fn cancel(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let (ended, worker, key, kind) = {
            let schedule = slf.borrow();
            (
                schedule.ended,
                schedule.worker.clone_ref(py),
                schedule.key,
                schedule.kind.clone_ref(py),
            )
        };
        if ended {
            return Ok(false);
        }
        slf.borrow_mut().stop = true;
        let cancelled = worker
            .bind(py)
            .getattr(intern!(py, "_core"))?
            .call_method1(intern!(py, "cancel"), (key,))?
            .is_truthy()?;
        let kind = kind.bind(py);
        if cancelled && (kind.eq("at")? || kind.eq("in")?) {
            let execution = slf.borrow().execution.as_ref().map(|e| e.clone_ref(py));
            if let Some(execution) = execution {
                // It will never run: resolve it so nobody waits forever.
                let no_response = py
                    .import(intern!(py, "workhorse.status"))?
                    .getattr(intern!(py, "Status"))?
                    .getattr(intern!(py, "NO_RESPONSE"))?;
                Execution::finish(execution.bind(py), no_response, py.None().into_bound(py))?;
            }
            Self::_end(slf);
        }
        Ok(cancelled)
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.stop
    }

    /// True once the schedule produces nothing more and its last run finished.
    fn done(&self) -> bool {
        self.ended
    }

    /// Block until done() (a receive source closed, a timer ran); False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn wait(slf: &Bound<'_, Self>, timeout: Option<Bound<'_, PyAny>>) -> PyResult<bool> {
        let py = slf.py();
        let timeout: Option<f64> = statics(py)?
            .check_timeout
            .bind(py)
            .call1((timeout,))?
            .extract()?;
        slf.borrow_mut().waiters += 1;
        let result = FINISHED.wait(py, end_of(timeout), Duration::from_millis(100), || {
            Ok(slf.borrow().ended.then_some(()))
        });
        slf.borrow_mut().waiters -= 1;
        Ok(result?.is_some())
    }

    fn _end(slf: &Bound<'_, Self>) {
        if slf.borrow_mut().end() {
            slf.py().detach(wake_waiters);
        }
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (kind, key, ended) = {
            let schedule = slf.borrow();
            (schedule.kind.clone_ref(py), schedule.key, schedule.ended)
        };
        Ok(format!(
            "Schedule({}, key={key}, done={})",
            kind.bind(py).str()?,
            if ended { "True" } else { "False" }
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.worker)?;
        visit.call(&self.kind)?;
        visit.call(&self.execution)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.execution = None;
    }
}

/// The record of an interval or receive schedule, or of a queue consumer (job and handler None:
/// each claimed job names its handler), as the dispatcher holds it for every execution.
///
/// An interval's executions run on the job itself, each with a fresh Context (go-work's
/// semantics; one that overlaps a running one gets a fork); a receive schedule's each run on a
/// copy carrying its item at `args["received_data"]`. A Rust object so the executor loop reads
/// an interval tick's job and handler as fields.
#[pyclass(module = "workhorse._core")]
pub(crate) struct Repeat {
    #[pyo3(get)]
    job: Option<Py<PyAny>>,
    #[pyo3(get)]
    handler: Option<Py<PyAny>>,
    #[pyo3(get)]
    is_async: bool,
    #[pyo3(get)]
    schedule: Option<Py<PyAny>>,
    /// A receive schedule's: each execution runs on a copy of the job with its item.
    #[pyo3(get)]
    receives: bool,
}

impl Repeat {
    /// Its job and handler (None for a queue consumer's record, or once cleared).
    pub(crate) fn job_and_handler(&self, py: Python<'_>) -> Option<(Py<PyAny>, Py<PyAny>)> {
        Some((
            self.job.as_ref()?.clone_ref(py),
            self.handler.as_ref()?.clone_ref(py),
        ))
    }
}

#[pymethods]
impl Repeat {
    #[new]
    fn new(
        job: Option<Py<PyAny>>,
        handler: Option<Py<PyAny>>,
        is_async: bool,
        schedule: Bound<'_, PyAny>,
    ) -> PyResult<Self> {
        let receives = schedule
            .getattr(intern!(schedule.py(), "kind"))?
            .eq("receive")?;
        Ok(Repeat {
            job,
            handler,
            is_async,
            schedule: Some(schedule.unbind()),
            receives,
        })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.job)?;
        visit.call(&self.handler)?;
        visit.call(&self.schedule)
    }

    fn __clear__(&mut self) {
        self.job = None;
        self.handler = None;
        self.schedule = None;
    }
}
