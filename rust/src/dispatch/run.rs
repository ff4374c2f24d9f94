//! One sync execution's plumbing around its handler, done in the core: the fresh Context, the
//! claim on its Job (an execution of a Job that is already running runs on a fork of it), the
//! values seeded from `job.ctx`, the live set `stop()` cancels, and the status the status rules
//! leave when nothing set one. What was `Worker._begin` and `Worker._run_job` in Python; the
//! adapted handler (adapters inside the status rules) and `record_error` stay Python.
//!
//! The executor loop (executor.rs) runs an interval's ticks through here without entering
//! Python for anything but the handler chain: about 0.5 us a tick less than the Python path.

use crate::context::Context;
use crate::execution::{Execution, Repeat};
use crate::job::Job;
use crate::runtime::{now_ns, ns_to_secs};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySet};
use pyo3::{intern, PyTraverseError, PyVisit};

/// One worker's run path (see the module docs); its Python objects leave together when the
/// collector clears it.
#[pyclass(module = "workhorse._core")]
pub(crate) struct ExecPath {
    hooks: Option<Hooks>,
}

/// The Python objects one worker's executions need.
struct Hooks {
    /// Contexts of running executions by `id(job)`: the claim (shared by every worker).
    running: Py<PyDict>,
    live: Py<PySet>,
    session: Py<PyAny>,
    unknown: Py<PyAny>,
    success: Py<PyAny>,
    internal_error: Py<PyAny>,
    /// `on_error(job, exc)`: record what the chain raised (middleware.record_error).
    on_error: Py<PyAny>,
    /// `on_result(job, result)`: a chain that returned something (an awaitable from a plain
    /// adapter around an async handler is run on the loop, and may raise).
    on_result: Py<PyAny>,
    /// The worker's chains by handler name ((handler, is_async)) and its `_chain(name)` that
    /// builds a missing one: how the loop runs a one-shot by itself.
    chains: Py<PyDict>,
    chain: Py<PyAny>,
    /// `report(exc)`: a fault of workhorse itself around an execution, for the worker's logger.
    report: Py<PyAny>,
}

impl ExecPath {
    /// Its Python objects; gone once the collector cleared it (a worker being freed).
    fn hooks(&self) -> PyResult<&Hooks> {
        self.hooks
            .as_ref()
            .ok_or_else(|| crate::errors::Error::Stopped.into())
    }
}

#[pymethods]
impl ExecPath {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        running: Py<PyDict>,
        live: Py<PySet>,
        session: Py<PyAny>,
        statuses: (Py<PyAny>, Py<PyAny>, Py<PyAny>),
        on_error: Py<PyAny>,
        on_result: Py<PyAny>,
        one_shots: (Py<PyDict>, Py<PyAny>),
        report: Py<PyAny>,
    ) -> Self {
        let (unknown, success, internal_error) = statuses;
        let (chains, chain) = one_shots;
        let hooks = Hooks {
            running,
            live,
            session,
            unknown,
            success,
            internal_error,
            on_error,
            on_result,
            chains,
            chain,
            report,
        };
        ExecPath { hooks: Some(hooks) }
    }

    /// Give an execution its own Context (see the module docs); returns the job it runs on.
    #[pyo3(signature = (job, due, execution=None))]
    fn begin<'py>(
        &self,
        py: Python<'py>,
        job: Bound<'py, PyAny>,
        due: Option<f64>,
        execution: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Job>> {
        Ok(self.start(py, job, due, execution)?.0)
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
    ) -> PyResult<Bound<'py, Context>> {
        let (job, ctx) = self.start(py, job, due, execution)?;
        let live = match live {
            Some(live) => live,
            None => self.hooks().map(|h| h.live.bind(py))?.clone(),
        };
        live.add(&ctx)?;
        let outcome = match handler.call1((&job,)) {
            Ok(result) if result.is_none() => Ok(()),
            Ok(result) => self
                .hooks()
                .map(|h| h.on_result.bind(py))?
                .call1((&job, result))
                .map(drop),
            Err(err) => Err(err),
        };
        // SystemExit or KeyboardInterrupt from an adapter too: one execution's error, recorded.
        let recorded = match outcome {
            Ok(()) => Ok(()),
            Err(err) => self
                .hooks()
                .map(|h| h.on_error.bind(py))?
                .call1((&job, err.into_value(py)))
                .map(drop),
        };
        live.discard(&ctx)?;
        self.hooks()
            .map(|h| h.running.bind(py))?
            .del_item(id_of(&job))?;
        // What the handler and adapters left on them decides whether the collector sees them.
        crate::gc::settle_one(ctx.as_any());
        crate::gc::settle_one(&job);
        recorded?;
        let hooks = self.hooks()?;
        let mut done = ctx.borrow_mut();
        if done.status_ref().is(&hooks.unknown) {
            let last = if done.has_error() {
                &hooks.internal_error
            } else {
                &hooks.success
            };
            done.set_status_raw(last.clone_ref(py));
        }
        drop(done);
        Ok(ctx)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        let Some(h) = &self.hooks else {
            return Ok(());
        };
        for value in [
            &h.session,
            &h.unknown,
            &h.success,
            &h.internal_error,
            &h.on_error,
            &h.on_result,
            &h.chain,
            &h.report,
        ] {
            visit.call(value)?;
        }
        visit.call(&h.running)?;
        visit.call(&h.chains)?;
        visit.call(&h.live)
    }

    fn __clear__(&mut self) {
        self.hooks = None;
    }
}

impl ExecPath {
    /// `begin`: the job an execution runs on (the one performed, or a fork of it while another
    /// execution of it runs) and its fresh context.
    fn start<'py>(
        &self,
        py: Python<'py>,
        job: Bound<'py, PyAny>,
        due: Option<f64>,
        execution: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, Job>, Bound<'py, Context>)> {
        let job = job.cast_into::<Job>()?;
        let deadline = job
            .borrow()
            .timeout()
            .map(|timeout| ns_to_secs(now_ns()) + timeout);
        let hooks = self.hooks()?;
        let ctx = Context::fresh(py, hooks.session.clone_ref(py), deadline, due)?;
        let ctx = Bound::new(py, ctx)?;
        let running = hooks.running.bind(py);
        let job = if claim(running, job.as_any(), ctx.as_any())?.is(&ctx) {
            let seed = {
                let job = job.borrow();
                job.ctx_ref().and_then(|prev| {
                    let prev = prev.bind(py).borrow();
                    // Values set on job.ctx before performing seed every execution of this
                    // job; values a handler sets stay with its own execution.
                    (!prev.executing()).then(|| prev.values_ref().map(|v| v.clone_ref(py)))
                })
            };
            if let Some(seed) = seed {
                let old = job.borrow_mut().set_seed(seed);
                drop(old);
            }
            job
        } else {
            let fork = Job::fork(&job)?;
            running.set_item(id_of(fork.as_any()), &ctx)?;
            fork
        };
        let values = match job.borrow().seed_ref() {
            Some(seed) if !seed.bind(py).is_empty() => Some(seed.bind(py).copy()?.unbind()),
            _ => None,
        };
        {
            let mut fresh = ctx.borrow_mut();
            fresh.set_values(values);
            fresh.mark_executing();
        }
        let old = job.borrow_mut().set_ctx(Some(ctx.clone().unbind()));
        drop(old); // the previous execution's context, freed with no borrow held
        if let Some(execution) = execution {
            Execution::started(execution.cast::<Execution>()?, job.as_any(), &ctx);
        }
        Ok((job, ctx))
    }
}

impl ExecPath {
    /// Whether `record` is an Execution (a one-shot `perform`), which `run_one_shot` runs.
    pub(super) fn is_one_shot(record: &Bound<'_, PyAny>) -> bool {
        record.is_exact_instance_of::<Execution>()
    }

    /// A one-shot taken by the executor loop: its job through `run` with the chain of its
    /// handler name; returns (status, error) for the loop to complete it and resolve the handle.
    pub(super) fn run_one_shot<'py>(
        &self,
        py: Python<'py>,
        execution: &Bound<'py, PyAny>,
        due: f64,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        // Field reads, not attribute lookups: this runs once per `perform`.
        let job = match execution.cast::<Execution>() {
            Ok(execution) => execution.borrow().job_ref().bind(py).clone(),
            Err(_) => execution.getattr(intern!(py, "job"))?,
        };
        let name = match job.cast::<Job>() {
            Ok(job) => job.borrow().handler_ref().bind(py).clone().into_any(),
            Err(_) => job.getattr(intern!(py, "handler"))?,
        };
        let chain = match self.hooks().map(|h| h.chains.bind(py))?.get_item(&name)? {
            Some(chain) => chain,
            None => self.hooks().map(|h| h.chain.bind(py))?.call1((&name,))?,
        };
        let handler = chain.get_item(0)?;
        let ctx = self.run(py, job, &handler, Some(due), Some(execution.clone()), None)?;
        let ctx = ctx.borrow();
        Ok((
            ctx.status_ref().clone_ref(py).into_bound(py),
            ctx.error_or_none(py).into_bound(py),
        ))
    }

    /// Report a fault of workhorse itself (not of a handler, which the chain contains) through
    /// the worker's logger; to sys.unraisablehook if even that fails.
    pub(super) fn report(&self, py: Python<'_>, err: PyErr, what: &Bound<'_, PyAny>) {
        let reported = self
            .hooks()
            .map(|h| h.report.bind(py))
            .and_then(|report| report.call1((err.value(py),)));
        if reported.is_err() {
            err.write_unraisable(py, Some(what));
        }
    }

    /// INTERNAL_ERROR, for a one-shot whose plumbing failed.
    pub(super) fn internal_error<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.hooks().map(|h| h.internal_error.bind(py)).cloned()
    }

    /// An interval tick taken by the executor loop: its record's job and handler through `run`;
    /// the status to complete it with.
    pub(super) fn run_tick(&self, py: Python<'_>, record: &Bound<'_, PyAny>, due: f64) -> i32 {
        let result = (|| -> PyResult<i32> {
            let (job, handler) = match record.cast::<Repeat>() {
                Ok(record) => record.borrow().job_and_handler(py).ok_or_else(|| {
                    PyErr::from(crate::errors::Error::Stopped) // a queue consumer's, or cleared
                })?,
                Err(_) => (
                    record.getattr(intern!(py, "job"))?.unbind(),
                    record.getattr(intern!(py, "handler"))?.unbind(),
                ),
            };
            let ctx = self.run(
                py,
                job.into_bound(py),
                handler.bind(py),
                Some(due),
                None,
                None,
            )?;
            let status = ctx.borrow().status_ref().clone_ref(py);
            status.bind(py).extract::<i32>()
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
