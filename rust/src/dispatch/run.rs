//! One sync execution's plumbing around its handler, done in the core: the fresh Context, the
//! claim on its Job (an execution of a Job that is already running runs on a fork of it), the
//! values seeded from `job.ctx`, the live set `stop()` cancels, and the status the status rules
//! leave when nothing set one. What was `Worker._begin` and `Worker._run_job` in Python; the
//! adapted handler (adapters inside the status rules) and `record_error` stay Python.
//!
//! The executor loop (executor.rs) runs an interval's ticks through here without entering
//! Python for anything but the handler chain: about 0.5 us a tick less than the Python path.

use crate::runtime::{now_ns, ns_to_secs};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet};
use pyo3::{intern, PyTraverseError, PyVisit};

/// The Python objects one worker's executions need (see the module docs).
#[pyclass(module = "workhorse._core")]
pub(crate) struct ExecPath {
    context: Option<Py<PyAny>>,
    /// Contexts of running executions by `id(job)`: the claim (shared by every worker).
    running: Option<Py<PyDict>>,
    live: Option<Py<PySet>>,
    session: Option<Py<PyAny>>,
    unknown: Option<Py<PyAny>>,
    success: Option<Py<PyAny>>,
    internal_error: Option<Py<PyAny>>,
    /// `on_error(job, exc)`: record what the chain raised (middleware.record_error).
    on_error: Option<Py<PyAny>>,
    /// `on_result(job, result)`: a chain that returned something (an awaitable from a plain
    /// adapter around an async handler is run on the loop, and may raise).
    on_result: Option<Py<PyAny>>,
    /// The Execution class, the worker's chains by handler name ((handler, is_async)) and its
    /// `_chain(name)` that builds a missing one: how the loop runs a one-shot by itself.
    execution_type: Option<Py<PyAny>>,
    chains: Option<Py<PyDict>>,
    chain: Option<Py<PyAny>>,
    /// `report(exc)`: a fault of workhorse itself around an execution, for the worker's logger.
    report: Option<Py<PyAny>>,
}

fn field<'a, 'py, T>(py: Python<'py>, value: &'a Option<Py<T>>) -> PyResult<&'a Bound<'py, T>> {
    value
        .as_ref()
        .map(|v| v.bind(py))
        .ok_or_else(|| crate::errors::Error::Stopped.into())
}

#[pymethods]
impl ExecPath {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        context: Py<PyAny>,
        running: Py<PyDict>,
        live: Py<PySet>,
        session: Py<PyAny>,
        statuses: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
        on_error: Py<PyAny>,
        on_result: Py<PyAny>,
        one_shots: (Py<PyAny>, Py<PyDict>, Py<PyAny>),
        report: Py<PyAny>,
    ) -> Self {
        let (unknown, success, internal_error) = statuses;
        let (execution_type, chains, chain) = one_shots;
        ExecPath {
            context: Some(context),
            running: Some(running),
            live: Some(live),
            session: Some(session),
            unknown: Some(unknown),
            success: Some(success),
            internal_error: Some(internal_error),
            on_error: Some(on_error),
            on_result: Some(on_result),
            execution_type: Some(execution_type),
            chains: Some(chains),
            chain: Some(chain),
            report: Some(report),
        }
    }

    /// Give an execution its own Context (see the module docs); returns the job it runs on.
    #[pyo3(signature = (job, due, execution=None))]
    fn begin<'py>(
        &self,
        py: Python<'py>,
        job: Bound<'py, PyAny>,
        due: Option<f64>,
        execution: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = job.getattr(intern!(py, "timeout"))?;
        let deadline = if timeout.is_none() {
            None
        } else {
            Some(ns_to_secs(now_ns()) + timeout.extract::<f64>()?)
        };
        let ctx = field(py, &self.context)?.call1((
            field(py, &self.session)?,
            deadline,
            py.None(),
            due,
        ))?;
        let running = field(py, &self.running)?;
        let job = if claim(running, &job, &ctx)?.is(&ctx) {
            let prev = job.getattr(intern!(py, "_ctx"))?;
            if !prev.is_none() && !prev.getattr(intern!(py, "_executing"))?.is_truthy()? {
                // Values set on job.ctx before performing seed every execution of this job;
                // values a handler sets stay with its own execution.
                job.setattr(intern!(py, "_seed"), prev.getattr(intern!(py, "_values"))?)?;
            }
            job
        } else {
            let fork = job.call_method0(intern!(py, "_fork"))?;
            running.set_item(id_of(&fork), &ctx)?;
            fork
        };
        let seed = job.getattr(intern!(py, "_seed"))?;
        if seed.is_truthy()? {
            ctx.setattr(intern!(py, "_values"), seed.cast::<PyDict>()?.copy()?)?;
        }
        ctx.setattr(intern!(py, "_executing"), true)?;
        job.setattr(intern!(py, "_ctx"), &ctx)?;
        if let Some(execution) = execution {
            execution.setattr(intern!(py, "job"), &job)?;
            execution.setattr(intern!(py, "_ctx"), &ctx)?;
        }
        Ok(job)
    }

    /// Run one sync execution: begin, the handler chain, the end; returns its Context with
    /// the final status. `live`: the set its context is in while it runs (the worker's own
    /// when None; queued jobs have theirs).
    #[pyo3(signature = (job, handler, due=None, execution=None, live=None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        job: Bound<'py, PyAny>,
        handler: &Bound<'py, PyAny>,
        due: Option<f64>,
        execution: Option<Bound<'py, PyAny>>,
        live: Option<Bound<'py, PySet>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let job = self.begin(py, job, due, execution)?;
        let ctx = job.getattr(intern!(py, "_ctx"))?;
        let live = match live {
            Some(live) => live,
            None => field(py, &self.live)?.clone(),
        };
        live.add(&ctx)?;
        let outcome = match handler.call1((&job,)) {
            Ok(result) if result.is_none() => Ok(()),
            Ok(result) => field(py, &self.on_result)?.call1((&job, result)).map(drop),
            Err(err) => Err(err),
        };
        // SystemExit or KeyboardInterrupt from an adapter too: one execution's error, recorded.
        let recorded = match outcome {
            Ok(()) => Ok(()),
            Err(err) => field(py, &self.on_error)?
                .call1((&job, err.into_value(py)))
                .map(drop),
        };
        live.discard(&ctx)?;
        field(py, &self.running)?.del_item(id_of(&job))?;
        // What the handler and adapters left on them decides whether the collector sees them.
        crate::gc::settle_one(&ctx);
        crate::gc::settle_one(&job);
        recorded?;
        let status = ctx.getattr(intern!(py, "_status"))?;
        if status.is(field(py, &self.unknown)?) {
            let last = if ctx.getattr(intern!(py, "error"))?.is_none() {
                field(py, &self.success)?
            } else {
                field(py, &self.internal_error)?
            };
            ctx.setattr(intern!(py, "_status"), last)?;
        }
        Ok(ctx)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for value in [
            &self.context,
            &self.session,
            &self.unknown,
            &self.success,
            &self.internal_error,
            &self.on_error,
            &self.on_result,
            &self.execution_type,
            &self.chain,
            &self.report,
        ] {
            visit.call(value)?;
        }
        visit.call(&self.running)?;
        visit.call(&self.chains)?;
        visit.call(&self.live)
    }

    fn __clear__(&mut self) {
        self.context = None;
        self.running = None;
        self.live = None;
        self.session = None;
        self.unknown = None;
        self.success = None;
        self.internal_error = None;
        self.on_error = None;
        self.on_result = None;
        self.execution_type = None;
        self.chains = None;
        self.chain = None;
        self.report = None;
    }
}

impl ExecPath {
    /// Whether `record` is an Execution (a one-shot `perform`), which `run_one_shot` runs.
    pub(super) fn is_one_shot(&self, py: Python<'_>, record: &Bound<'_, PyAny>) -> bool {
        field(py, &self.execution_type).is_ok_and(|kind| record.get_type().is(kind))
    }

    /// A one-shot taken by the executor loop: its job through `run` with the chain of its
    /// handler name; returns (status, error) for the loop to complete it and resolve the handle.
    pub(super) fn run_one_shot<'py>(
        &self,
        py: Python<'py>,
        execution: &Bound<'py, PyAny>,
        due: f64,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let job = execution.getattr(intern!(py, "job"))?;
        let name = job.getattr(intern!(py, "handler"))?;
        let chain = match field(py, &self.chains)?.get_item(&name)? {
            Some(chain) => chain,
            None => field(py, &self.chain)?.call1((&name,))?,
        };
        let handler = chain.get_item(0)?;
        let ctx = self.run(py, job, &handler, Some(due), Some(execution.clone()), None)?;
        Ok((
            ctx.getattr(intern!(py, "_status"))?,
            ctx.getattr(intern!(py, "error"))?,
        ))
    }

    /// Report a fault of workhorse itself (not of a handler, which the chain contains) through
    /// the worker's logger; to sys.unraisablehook if even that fails.
    pub(super) fn report(&self, py: Python<'_>, err: PyErr, what: &Bound<'_, PyAny>) {
        let reported = field(py, &self.report).and_then(|report| report.call1((err.value(py),)));
        if reported.is_err() {
            err.write_unraisable(py, Some(what));
        }
    }

    /// INTERNAL_ERROR, for a one-shot whose plumbing failed.
    pub(super) fn internal_error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        field(py, &self.internal_error).cloned()
    }

    /// An interval tick taken by the executor loop: its record's job and handler through `run`;
    /// the status to complete it with.
    pub(super) fn run_tick(&self, py: Python<'_>, record: &Bound<'_, PyAny>, due: f64) -> i32 {
        let result = (|| -> PyResult<i32> {
            let job = record.getattr(intern!(py, "job"))?;
            let handler = record.getattr(intern!(py, "handler"))?;
            let ctx = self.run(py, job, &handler, Some(due), None, None)?;
            ctx.getattr(intern!(py, "_status"))?.extract::<i32>()
        })();
        result.unwrap_or_else(|err| {
            self.report(py, err, record);
            500
        })
    }
}

/// `id(obj)` as Python computes it.
fn id_of(obj: &Bound<'_, PyAny>) -> usize {
    obj.as_ptr() as usize
}

/// `running.setdefault(id(job), ctx)`: the context now claiming the job. Atomic under the GIL:
/// an int key runs no Python code between the lookup and the insert.
fn claim<'py>(
    running: &Bound<'py, PyDict>,
    job: &Bound<'py, PyAny>,
    ctx: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let key = id_of(job);
    match running.get_item(key)? {
        Some(claimed) => Ok(claimed),
        None => {
            running.set_item(key, ctx)?;
            Ok(ctx.clone())
        }
    }
}
