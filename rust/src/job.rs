//! `Job`: a handler name, its arguments and the Context of its current execution. A Rust object
//! so that the run path (dispatch/run.rs) reads and forks it without running Python, and making
//! one (`wh.Job("send")`, once per `perform` in a burst) runs no Python either.
//!
//! A job whose args hold only atoms stays out of the cyclic GC (gc.rs); it is looked at again
//! when made, copied, and when each execution ends. `QueueJob` (python/workhorse/queue/job.py)
//! subclasses it.

use crate::context::Context;
use crate::fields;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyMapping, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};

/// What a Job needs from the Python layer, looked up on first use.
struct Statics {
    /// `workhorse.job._new_id()`: a process-unique id, redrawn in a forked child.
    new_id: Py<PyAny>,
    trace: Py<PyAny>,
    arg_error: Py<PyAny>,
    job_timeout: Py<PyAny>,
    deepcopy: Py<PyAny>,
}

static STATICS: PyOnceLock<Statics> = PyOnceLock::new();

fn statics(py: Python<'_>) -> PyResult<&Statics> {
    STATICS.get_or_try_init(py, || {
        let job = py.import(intern!(py, "workhorse.job"))?;
        Ok(Statics {
            new_id: job.getattr(intern!(py, "_new_id"))?.unbind(),
            trace: job.getattr(intern!(py, "Trace"))?.unbind(),
            arg_error: py
                .import(intern!(py, "workhorse.errors"))?
                .getattr(intern!(py, "ArgError"))?
                .unbind(),
            job_timeout: py
                .import(intern!(py, "workhorse._checks"))?
                .getattr(intern!(py, "job_timeout"))?
                .unbind(),
            deepcopy: py
                .import(intern!(py, "copy"))?
                .getattr(intern!(py, "deepcopy"))?
                .unbind(),
        })
    })
}

/// A unit of work: a handler name, its arguments, and a fresh Context on every execution.
#[pyclass(module = "workhorse._core", subclass)]
pub(crate) struct Job {
    #[pyo3(get, set)]
    handler: Py<PyString>,
    args: Py<PyDict>,
    #[pyo3(get, set)]
    queue: Py<PyString>,
    #[pyo3(get, set)]
    timeout: Option<f64>,
    id: Option<Py<PyAny>>,
    ctx: Option<Py<Context>>,
    /// Context values set before the first execution: they seed every execution's context.
    seed: Option<Py<PyDict>>,
}

fn non_empty_str<'py>(value: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyString>> {
    match value.cast::<PyString>() {
        Ok(s) if s.len()? > 0 => Ok(s.clone()),
        _ => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "{what} must be a non-empty str, got {}",
            value.repr()?
        ))),
    }
}

impl Job {
    pub(crate) fn timeout(&self) -> Option<f64> {
        self.timeout
    }

    pub(crate) fn handler_ref(&self) -> &Py<PyString> {
        &self.handler
    }

    pub(crate) fn args_ref(&self) -> &Py<PyDict> {
        &self.args
    }

    pub(crate) fn ctx_ref(&self) -> Option<&Py<Context>> {
        self.ctx.as_ref()
    }

    pub(crate) fn seed_ref(&self) -> Option<&Py<PyDict>> {
        self.seed.as_ref()
    }

    /// Replace its context and seed; what was there is handed back, to be dropped once no
    /// borrow is held (freeing it may run Python code).
    pub(crate) fn set_ctx(&mut self, ctx: Option<Py<Context>>) -> Option<Py<Context>> {
        std::mem::replace(&mut self.ctx, ctx)
    }

    pub(crate) fn set_seed(&mut self, seed: Option<Py<PyDict>>) -> Option<Py<PyDict>> {
        std::mem::replace(&mut self.seed, seed)
    }

    /// A per-execution copy for a repeating schedule: shallow args, no context, a new id; the
    /// values set on `job.ctx` before performing (or its seed) carried as the seed.
    pub(crate) fn fork<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let (handler, args, queue, timeout, ctx, seed) = {
            let job = slf.borrow();
            (
                job.handler.clone_ref(py),
                job.args.clone_ref(py),
                job.queue.clone_ref(py),
                job.timeout,
                job.ctx.as_ref().map(|c| c.clone_ref(py)),
                job.seed.as_ref().map(|s| s.clone_ref(py)),
            )
        };
        let seed = match ctx {
            Some(ctx) => {
                let ctx = ctx.bind(py).borrow();
                if ctx.executing() {
                    seed
                } else {
                    ctx.values_ref().map(|v| v.clone_ref(py))
                }
            }
            None => seed,
        };
        let seed = match seed {
            Some(seed) if !seed.bind(py).is_empty() => Some(seed.bind(py).copy()?.unbind()),
            _ => None,
        };
        let new = Bound::new(
            py,
            Job {
                handler,
                args: args.bind(py).copy()?.unbind(),
                queue,
                timeout,
                id: None,
                ctx: None,
                seed,
            },
        )?;
        crate::gc::settle_one(new.as_any());
        Ok(new)
    }

    fn arg<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyString>,
        name: &str,
        fits: impl Fn(&Bound<'py, PyAny>) -> bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arg_error = statics(py)?.arg_error.bind(py);
        let Some(value) = self.args.bind(py).get_item(key)? else {
            let message = format!("argument {} is missing (wanted {name})", key.repr()?);
            return Err(PyErr::from_value(arg_error.call1((message,))?));
        };
        if !fits(&value) {
            let message = format!(
                "argument {} must be {name}, got {}",
                key.repr()?,
                value.get_type().name()?
            );
            return Err(PyErr::from_value(arg_error.call1((message,))?));
        }
        Ok(value)
    }
}

fn is_bool(value: &Bound<'_, PyAny>) -> bool {
    value.is_instance_of::<pyo3::types::PyBool>()
}

#[pymethods]
impl Job {
    #[new]
    #[pyo3(
        signature = (handler, args=None, *, queue=None, timeout=None),
        text_signature = "(handler, args=None, *, queue='default', timeout=None)"
    )]
    fn new(
        handler: Bound<'_, PyAny>,
        args: Option<Bound<'_, PyAny>>,
        queue: Option<Bound<'_, PyAny>>,
        timeout: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let py = handler.py();
        let handler = non_empty_str(&handler, "handler")?.unbind();
        let args = match args {
            None => PyDict::new(py),
            Some(args) if args.is_none() => PyDict::new(py),
            Some(args) => match args.cast::<PyDict>() {
                Ok(dict) => dict.copy()?,
                Err(_) if args.cast::<PyMapping>().is_ok() => {
                    py.get_type::<PyDict>().call1((args,))?.cast_into()?
                }
                Err(_) => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "args must be a dict or None, got {}",
                        args.get_type().name()?
                    )))
                }
            },
        }
        .unbind();
        let queue = match queue {
            None => intern!(py, "default").clone().unbind(),
            Some(queue) => non_empty_str(&queue, "queue")?.unbind(),
        };
        let timeout = match timeout {
            Some(timeout) if !timeout.is_none() => statics(py)?
                .job_timeout
                .bind(py)
                .call1((timeout,))?
                .extract()?,
            _ => None,
        };
        Ok(Job {
            handler,
            args,
            queue,
            timeout,
            id: None,
            ctx: None,
            seed: None,
        })
    }

    /// Made: it leaves the collector when its args hold only atoms (gc.rs). A `__new__` that
    /// settles would be called before a subclass's slots exist; `__init__` runs after.
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(
        slf: &Bound<'_, Self>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) {
        crate::gc::settle_one(slf.as_any());
    }

    #[getter]
    fn args(&self, py: Python<'_>) -> Py<PyDict> {
        self.args.clone_ref(py)
    }

    #[setter]
    fn set_args(slf: &Bound<'_, Self>, args: Py<PyDict>) {
        fields::replace(slf, |me| &mut me.args, args);
    }

    /// The current execution's Context (values set before performing are carried into it).
    #[getter]
    pub(crate) fn ctx(slf: &Bound<'_, Self>) -> PyResult<Py<Context>> {
        let py = slf.py();
        if let Some(ctx) = &slf.borrow().ctx {
            return Ok(ctx.clone_ref(py));
        }
        let ctx = Py::new(py, Context::new_default(py)?)?;
        slf.borrow_mut().ctx = Some(ctx.clone_ref(py));
        Ok(ctx)
    }

    #[setter(ctx)]
    fn set_ctx_value(slf: &Bound<'_, Self>, ctx: Py<Context>) {
        let old = slf.borrow_mut().set_ctx(Some(ctx));
        drop(old);
        crate::gc::settle_one(slf.as_any());
    }

    #[getter(_ctx)]
    fn raw_ctx(&self, py: Python<'_>) -> Option<Py<Context>> {
        self.ctx.as_ref().map(|c| c.clone_ref(py))
    }

    #[setter(_ctx)]
    fn set_raw_ctx(slf: &Bound<'_, Self>, ctx: Option<Py<Context>>) {
        let old = slf.borrow_mut().set_ctx(ctx);
        drop(old);
    }

    #[getter(_seed)]
    fn raw_seed(&self, py: Python<'_>) -> Option<Py<PyDict>> {
        self.seed.as_ref().map(|s| s.clone_ref(py))
    }

    #[setter(_seed)]
    fn set_raw_seed(slf: &Bound<'_, Self>, seed: Option<Py<PyDict>>) {
        let old = slf.borrow_mut().set_seed(seed);
        drop(old);
    }

    #[getter(_id)]
    fn raw_id(&self, py: Python<'_>) -> Py<PyAny> {
        self.id
            .as_ref()
            .map_or_else(|| py.None(), |id| id.clone_ref(py))
    }

    #[setter(_id)]
    fn set_raw_id(slf: &Bound<'_, Self>, id: Bound<'_, PyAny>) {
        fields::replace(slf, |me| &mut me.id, fields::none_to_option(id));
    }

    /// Process-unique id of this job object (copies get their own).
    #[getter]
    fn id(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        if let Some(id) = &slf.borrow().id {
            return Ok(id.clone_ref(py));
        }
        let id = statics(py)?.new_id.bind(py).call0()?.unbind();
        slf.borrow_mut().id = Some(id.clone_ref(py));
        Ok(id)
    }

    /// Step timings of the current execution (job.trace.mark("step")), counted from the start
    /// of the execution.
    #[getter]
    fn trace(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let ctx = Self::ctx(slf)?.into_bound(py);
        let trace = ctx.getattr(intern!(py, "_trace"))?;
        if !trace.is_none() {
            return Ok(trace.unbind());
        }
        let started = ctx.borrow().started();
        let trace = statics(py)?.trace.bind(py).call1((started,))?;
        ctx.setattr(intern!(py, "_trace"), &trace)?;
        crate::gc::settle_one(ctx.as_any());
        Ok(trace.unbind())
    }

    /// A deep copy of the arguments with a fresh Context and a new id.
    fn copy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let new = Self::fork(slf)?;
        let args = slf.borrow().args.clone_ref(py);
        let args = statics(py)?.deepcopy.bind(py).call1((args,))?;
        new.borrow_mut().args = args.cast_into::<PyDict>()?.unbind();
        crate::gc::settle_one(new.as_any());
        Ok(new)
    }

    #[pyo3(name = "_fork")]
    fn py_fork<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, Self>> {
        Self::fork(slf)
    }

    fn arg_str<'py>(&self, key: Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let py = key.py();
        let value = self.arg(py, &key, "str", |v| v.is_instance_of::<PyString>())?;
        Ok(value.str()?.into_any())
    }

    fn arg_int<'py>(&self, key: Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        let py = key.py();
        let value = self.arg(py, &key, "int", |v| {
            !is_bool(v) && v.is_instance_of::<pyo3::types::PyInt>()
        })?;
        py.get_type::<pyo3::types::PyInt>().call1((value,))
    }

    fn arg_float(&self, key: Bound<'_, PyString>) -> PyResult<f64> {
        let py = key.py();
        let value = self.arg(py, &key, "float", |v| {
            !is_bool(v)
                && (v.is_instance_of::<pyo3::types::PyInt>()
                    || v.is_instance_of::<pyo3::types::PyFloat>())
        })?;
        value.extract()
    }

    fn arg_bool(&self, key: Bound<'_, PyString>) -> PyResult<bool> {
        let py = key.py();
        self.arg(py, &key, "bool", is_bool)?.is_truthy()
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let (handler, args, queue) = {
            let job = slf.borrow();
            (
                job.handler.clone_ref(py),
                job.args.clone_ref(py),
                job.queue.clone_ref(py),
            )
        };
        Ok(format!(
            "Job({}, {}, queue={})",
            handler.bind(py).repr()?,
            args.bind(py).repr()?,
            queue.bind(py).repr()?
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.handler)?;
        visit.call(&self.args)?;
        visit.call(&self.queue)?;
        visit.call(&self.id)?;
        visit.call(&self.ctx)?;
        visit.call(&self.seed)?;
        Ok(())
    }

    fn __clear__(&mut self) {
        self.ctx = None;
        self.seed = None;
    }
}
