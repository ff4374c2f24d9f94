//! The per-execution half of the counting adapters (issue 7): `prometheus()`, `request_id()` and
//! a health check wrap a sync handler in a callable of the core instead of a Python function. A Python wrapper
//! costs a frame and a dozen attribute reads an execution (1.6 and 2.6 us in a burst,
//! benches/RESULTS.md); these read the Job's and Context's fields natively and count into atomics
//! that a scrape sums. What the adapters are (options, registries, metric families, the async
//! wrappers) stays Python, in python/workhorse/adapters/.

use crate::context::Context;
use crate::job::Job;
use crate::runtime::now_ns;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};
use pyo3::{intern, PyTraverseError, PyVisit};
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A float kept as its bits in an AtomicU64, added to with a compare-exchange loop.
#[derive(Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn add(&self, value: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Counts by the first bound >= the value (the last slot: above every bound) and their sum.
struct Histogram {
    counts: Box<[AtomicU64]>,
    sum: AtomicF64,
}

impl Histogram {
    fn new(bounds: usize) -> Self {
        Histogram {
            counts: counters(bounds + 1),
            sum: AtomicF64::default(),
        }
    }

    fn observe(&self, bounds: &[f64], value: f64) {
        // bisect_left, as the Python adapter and prometheus_client bucket a value.
        let bucket = bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.add(value);
    }

    fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|count| count.load(Relaxed))
            .collect()
    }
}

/// One handler's figures in one series.
struct Figures {
    /// By the index of the code in `Series::codes` (the Status members).
    codes: Box<[AtomicU64]>,
    /// A code that is not a Status member (`ctx._status` forced by hand): rare, so a lock.
    other_codes: Mutex<FxHashMap<i64, u64>>,
    duration: Histogram,
    in_flight: AtomicI64,
    /// Request and response sizes the handler reported on its context.
    sizes: [Histogram; 2],
}

/// The figures of one prometheus series set (registry, namespace, subsystem) by handler name.
struct Series {
    codes: Vec<i64>,
    duration_bounds: Vec<f64>,
    size_bounds: Vec<f64>,
    handlers: Mutex<FxHashMap<String, Arc<Figures>>>,
}

impl Series {
    fn of(&self, handler: &str) -> Arc<Figures> {
        let mut handlers = self.handlers.lock();
        if let Some(figures) = handlers.get(handler) {
            return figures.clone();
        }
        let figures = Arc::new(Figures {
            codes: counters(self.codes.len()),
            other_codes: Mutex::default(),
            duration: Histogram::new(self.duration_bounds.len()),
            in_flight: AtomicI64::new(0),
            sizes: [
                Histogram::new(self.size_bounds.len()),
                Histogram::new(self.size_bounds.len()),
            ],
        });
        handlers.insert(handler.to_owned(), figures.clone());
        figures
    }

    fn count(&self, figures: &Figures, code: i64) {
        match self.codes.iter().position(|&known| known == code) {
            Some(index) => {
                figures.codes[index].fetch_add(1, Relaxed);
            }
            None => *figures.other_codes.lock().entry(code).or_insert(0) += 1,
        }
    }
}

fn ascending(what: &str, bounds: &[f64]) -> PyResult<()> {
    if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} must be finite and ascending, got {bounds:?}"
        )));
    }
    Ok(())
}

/// The context of a job: read natively from a `Job`, through `job.ctx` from anything else.
fn context_of<'py>(job: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    match job.cast::<Job>() {
        Ok(job) => Ok(Job::ctx(job)?.into_bound(job.py()).into_any()),
        Err(_) => job.getattr(intern!(job.py(), "ctx")),
    }
}

/// The handler name of a job, as a str.
fn handler_of<'py>(job: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    match job.cast::<Job>() {
        Ok(job) => Ok(job.borrow().handler_ref().bind(job.py()).clone()),
        Err(_) => job.getattr(intern!(job.py(), "handler"))?.str(),
    }
}

/// A reported size: an int or float that is not a bool.
fn size_of(value: &Bound<'_, PyAny>) -> Option<f64> {
    if value.is_instance_of::<PyBool>() {
        return None;
    }
    if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
        // An int too large for a float is above every bound all the same.
        return Some(value.extract::<f64>().unwrap_or(f64::INFINITY));
    }
    None
}

/// The status code an execution ended with: its context's, or what `final_status(job, raised)`
/// makes of what the chain raised. Also hands back the context's values, for the sizes.
fn final_code<'py>(
    job: &Bound<'py, PyAny>,
    raised: Option<&Bound<'py, PyAny>>,
    final_status: &Py<PyAny>,
) -> PyResult<(i64, Option<Bound<'py, PyDict>>)> {
    let py = job.py();
    let ctx = context_of(job)?;
    let (status, values) = match ctx.cast::<Context>() {
        Ok(ctx) => {
            let ctx = ctx.borrow();
            (
                ctx.status_ref().bind(py).clone(),
                ctx.values_ref().map(|values| values.bind(py).clone()),
            )
        }
        Err(_) => (
            ctx.getattr(intern!(py, "_status"))?,
            ctx.getattr(intern!(py, "_values"))?
                .cast_into::<PyDict>()
                .ok(),
        ),
    };
    let code = match raised {
        None => status.extract::<i64>().unwrap_or(-1),
        Some(raised) => final_status
            .bind(py)
            .call1((job, raised))?
            .extract::<i64>()?,
    };
    Ok((code, values))
}

/// `<what handler>`: the repr of a wrapper of the core around a handler.
fn wrapper_repr(py: Python<'_>, what: &str, handler: Option<&Py<PyAny>>) -> PyResult<String> {
    let handler = match handler {
        Some(handler) => handler.bind(py).repr()?.to_string(),
        None => "None".into(),
    };
    Ok(format!("<{what} {handler}>"))
}

/// The figures of one prometheus series set (see the module docs); `prometheus()` makes one per
/// (registry, namespace, subsystem) and reads `snapshot()` at scrape time.
#[pyclass(module = "workhorse._core", frozen)]
pub(crate) struct Meter {
    series: Arc<Series>,
    /// The context keys of the request and response sizes.
    size_keys: [Py<PyString>; 2],
    /// `final_status(job, raised)`: the status an execution ends with when the chain raised.
    final_status: Py<PyAny>,
}

impl Meter {
    /// One execution of `figures` ended: its duration, final status and reported sizes.
    fn finish(
        &self,
        figures: &Figures,
        job: &Bound<'_, PyAny>,
        started: u64,
        raised: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = job.py();
        let series = &*self.series;
        let elapsed = now_ns().saturating_sub(started) as f64 / 1e9;
        figures.duration.observe(&series.duration_bounds, elapsed);
        figures.in_flight.fetch_sub(1, Relaxed);
        let (code, values) = final_code(job, raised, &self.final_status)?;
        series.count(figures, code);
        if let Some(values) = values.filter(|values| !values.is_empty()) {
            for (key, sizes) in self.size_keys.iter().zip(&figures.sizes) {
                if let Some(size) = values.get_item(key.bind(py))?.as_ref().and_then(size_of) {
                    sizes.observe(&series.size_bounds, size);
                }
            }
        }
        Ok(())
    }
}

#[pymethods]
impl Meter {
    #[new]
    fn new(
        codes: Vec<i64>,
        duration_bounds: Vec<f64>,
        size_bounds: Vec<f64>,
        size_keys: (Py<PyString>, Py<PyString>),
        final_status: Py<PyAny>,
    ) -> PyResult<Self> {
        ascending("duration_bounds", &duration_bounds)?;
        ascending("size_bounds", &size_bounds)?;
        Ok(Meter {
            series: Arc::new(Series {
                codes,
                duration_bounds,
                size_bounds,
                handlers: Mutex::default(),
            }),
            size_keys: [size_keys.0, size_keys.1],
            final_status,
        })
    }

    /// A sync handler wrapped so every execution is counted, but those of `ignored` names.
    fn wrap(slf: Py<Self>, handler: Py<PyAny>, ignored: FxHashSet<String>) -> Measured {
        Measured {
            meter: slf,
            handler: Some(handler),
            ignored,
        }
    }

    /// For the async wrapper: an execution of `handler` starts; returns its start (ns).
    fn start(&self, handler: &str) -> u64 {
        self.series.of(handler).in_flight.fetch_add(1, Relaxed);
        now_ns()
    }

    /// For the async wrapper: the execution of `job` begun at `started` ended (raising `raised`).
    #[pyo3(signature = (job, started, raised=None))]
    fn finish_async(
        &self,
        job: &Bound<'_, PyAny>,
        started: u64,
        raised: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let figures = self.series.of(handler_of(job)?.to_str()?);
        self.finish(&figures, job, started, raised.as_ref())
    }

    /// Every handler's figures: (handler, {code: n}, duration counts, duration sum, in flight,
    /// request size counts + [sum], response size counts + [sum]), in name order.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let series = &*self.series;
        let mut handlers: Vec<(String, Arc<Figures>)> = series
            .handlers
            .lock()
            .iter()
            .map(|(name, figures)| (name.clone(), figures.clone()))
            .collect();
        handlers.sort_by(|a, b| a.0.cmp(&b.0));
        let out = PyList::empty(py);
        for (name, figures) in handlers {
            let codes = PyDict::new(py);
            for (code, count) in series.codes.iter().zip(figures.codes.iter()) {
                let count = count.load(Relaxed);
                if count > 0 {
                    codes.set_item(code, count)?;
                }
            }
            for (code, count) in figures.other_codes.lock().iter() {
                codes.set_item(code, count)?;
            }
            let sizes = |h: &Histogram| -> Vec<f64> {
                let mut v: Vec<f64> = h.counts().into_iter().map(|c| c as f64).collect();
                v.push(h.sum.get());
                v
            };
            out.append((
                name,
                codes,
                figures.duration.counts(),
                figures.duration.sum.get(),
                figures.in_flight.load(Relaxed),
                sizes(&figures.sizes[0]),
                sizes(&figures.sizes[1]),
            ))?;
        }
        Ok(out)
    }
}

/// A sync handler the prometheus adapter counts (`Meter.wrap`).
#[pyclass(module = "workhorse._core", weakref)]
pub(crate) struct Measured {
    meter: Py<Meter>,
    /// None once the collector cleared it.
    handler: Option<Py<PyAny>>,
    ignored: FxHashSet<String>,
}

#[pymethods]
impl Measured {
    fn __call__(slf: &Bound<'_, Self>, job: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let name = handler_of(&job)?;
        // Nothing is borrowed while Python code runs (the handler may drop this wrapper).
        let (meter, handler, ignored) = {
            let me = slf.borrow();
            let handler = me
                .handler
                .as_ref()
                .ok_or_else(|| PyErr::from(crate::errors::Error::Stopped))?
                .clone_ref(py);
            let ignored = !me.ignored.is_empty() && me.ignored.contains(name.to_str()?);
            (me.meter.clone_ref(py), handler, ignored)
        };
        if ignored {
            return Ok(handler.bind(py).call1((&job,))?.unbind());
        }
        let meter = meter.get();
        let figures = meter.series.of(name.to_str()?);
        figures.in_flight.fetch_add(1, Relaxed);
        let started = now_ns();
        match handler.bind(py).call1((&job,)) {
            Ok(result) => {
                meter.finish(&figures, &job, started, None)?;
                Ok(result.unbind())
            }
            Err(err) => {
                // As the Python wrapper: what counting raises replaces the handler's error.
                meter.finish(&figures, &job, started, Some(err.value(py).as_any()))?;
                Err(err)
            }
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        wrapper_repr(py, "prometheus-measured", self.handler.as_ref())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.meter)?;
        visit.call(&self.handler)
    }

    fn __clear__(&mut self) {
        self.handler = None;
    }
}

/// 16 hex digits of 64 random bits a process (drawn by Python, again in a forked child), and a
/// counter: an id is the two side by side.
static REQUEST_PREFIX: Mutex<[u8; 16]> = Mutex::new([b'0'; 16]);
static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

/// Start this process's request ids at `prefix` (16 hex digits), counting from 1.
#[pyfunction]
pub(crate) fn seed_request_ids(prefix: &str) -> PyResult<()> {
    let bytes: [u8; 16] = prefix
        .as_bytes()
        .try_into()
        .ok()
        .filter(|b: &[u8; 16]| b.iter().all(u8::is_ascii_hexdigit))
        .ok_or_else(|| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "a request id prefix is 16 hex digits, got {prefix:?}"
            ))
        })?;
    *REQUEST_PREFIX.lock() = bytes;
    REQUEST_COUNTER.store(1, Relaxed);
    Ok(())
}

/// A new 32-hex-digit request id: the process's prefix and a counter.
#[pyfunction]
pub(crate) fn new_request_id(py: Python<'_>) -> Bound<'_, PyString> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&*REQUEST_PREFIX.lock());
    let n = REQUEST_COUNTER.fetch_add(1, Relaxed);
    for (i, digit) in id[16..].iter_mut().enumerate() {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    PyString::new(py, std::str::from_utf8(&id).unwrap_or_default())
}

/// A sync handler the request_id adapter gives an id (see request_id.py for the rules).
#[pyclass(module = "workhorse._core", weakref)]
pub(crate) struct WithRequestId {
    /// None once the collector cleared it.
    hooks: Option<IdHooks>,
}

struct IdHooks {
    handler: Py<PyAny>,
    /// The job.args key that may carry an id, and the context key the id is kept under.
    header: Py<PyString>,
    key: Py<PyString>,
    /// The bound `set` and `reset` of the ContextVar that holds the running execution's id.
    set: Py<PyAny>,
    reset: Py<PyAny>,
    /// `ensure(job, header)`: the Python rules, for a job that is not a `Job`.
    ensure: Py<PyAny>,
}

impl IdHooks {
    fn clone_ref(&self, py: Python<'_>) -> Self {
        IdHooks {
            handler: self.handler.clone_ref(py),
            header: self.header.clone_ref(py),
            key: self.key.clone_ref(py),
            set: self.set.clone_ref(py),
            reset: self.reset.clone_ref(py),
            ensure: self.ensure.clone_ref(py),
        }
    }

    /// The execution's id: kept if its context has one, else the job's arg, else a new one.
    fn ensure<'py>(&self, job: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = job.py();
        let Ok(job) = job.cast::<Job>() else {
            return self.ensure.bind(py).call1((job, &self.header));
        };
        let ctx = Job::ctx(job)?.into_bound(py);
        let values = ctx.borrow().values_ref().map(|v| v.bind(py).clone());
        if let Some(values) = &values {
            if let Some(rid) = values.get_item(self.key.bind(py))? {
                if rid.is_truthy()? {
                    return Ok(rid);
                }
            }
        }
        let args = job.borrow().args_ref().bind(py).clone();
        let rid = match args.get_item(self.header.bind(py))? {
            Some(given) if given.is_truthy()? => given.str()?.into_any(),
            _ => new_request_id(py).into_any(),
        };
        match values {
            Some(values) => values.set_item(self.key.bind(py), &rid)?,
            None => {
                let values = PyDict::new(py);
                values.set_item(self.key.bind(py), &rid)?;
                ctx.borrow_mut().set_values(Some(values.unbind()));
            }
        }
        Ok(rid)
    }
}

#[pymethods]
impl WithRequestId {
    #[new]
    fn new(
        handler: Py<PyAny>,
        header: Py<PyString>,
        key: Py<PyString>,
        var: &Bound<'_, PyAny>,
        ensure: Py<PyAny>,
    ) -> PyResult<Self> {
        let py = var.py();
        Ok(WithRequestId {
            hooks: Some(IdHooks {
                handler,
                header,
                key,
                set: var.getattr(intern!(py, "set"))?.unbind(),
                reset: var.getattr(intern!(py, "reset"))?.unbind(),
                ensure,
            }),
        })
    }

    fn __call__(slf: &Bound<'_, Self>, job: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        // Nothing is borrowed while Python code runs (the handler may drop this wrapper).
        let hooks = slf
            .borrow()
            .hooks
            .as_ref()
            .map(|hooks| hooks.clone_ref(py))
            .ok_or_else(|| PyErr::from(crate::errors::Error::Stopped))?;
        let rid = hooks.ensure(&job)?;
        let token = hooks.set.bind(py).call1((rid,))?;
        let result = hooks.handler.bind(py).call1((&job,));
        let reset = hooks.reset.bind(py).call1((token,));
        let result = result?;
        reset?;
        Ok(result.unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        wrapper_repr(
            py,
            "request_id",
            self.hooks.as_ref().map(|hooks| &hooks.handler),
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(hooks) = &self.hooks {
            visit.call(&hooks.handler)?;
            visit.call(&hooks.set)?;
            visit.call(&hooks.reset)?;
            visit.call(&hooks.ensure)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.hooks = None;
    }
}

/// `floor(a / b)` as Python's float `//` computes it, so a bucket index matches the one the
/// Python layer (and its tests' clocks) would compute.
fn floor_div(a: f64, b: f64) -> f64 {
    let rem = a % b;
    let mut div = (a - rem) / b;
    if rem != 0.0 && ((b < 0.0) != (rem < 0.0)) {
        div -= 1.0;
    }
    let floor = div.floor();
    if div - floor > 0.5 {
        floor + 1.0
    } else {
        floor
    }
}

/// Buckets a health time window is counted in: memory stays flat at any job rate.
const HEALTH_BUCKETS: f64 = 60.0;

/// What a health check judges by.
enum Judged {
    /// The last minutes, in buckets of `width` seconds: (index, executions, errors).
    Window {
        width: f64,
        buckets: std::collections::VecDeque<(f64, u64, u64)>,
    },
    /// The last `len` executions: whether each failed, and how many did.
    Count {
        len: usize,
        last: std::collections::VecDeque<bool>,
        errors: u64,
    },
}

struct Tally {
    judged: Judged,
    /// When the status is next recomputed (the clock's seconds); +inf while a recompute that
    /// `record` or `take_due` handed out is under way.
    next: f64,
}

/// The counting half of a health check (python/workhorse/adapters/health.py keeps the rules,
/// the status and its log lines): every final status recorded, the window's or the last
/// executions' totals, and when the next recompute is due.
#[pyclass(module = "workhorse._core", frozen)]
pub(crate) struct HealthTally {
    errors: FxHashSet<i64>,
    /// The check's clock when it is not time.monotonic (read natively then).
    clock: Option<Py<PyAny>>,
    tally: Mutex<Tally>,
}

impl HealthTally {
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        match &self.clock {
            None => Ok(now_ns() as f64 / 1e9),
            Some(clock) => clock.bind(py).call0()?.extract::<f64>(),
        }
    }

    /// Count one final status; the time, when a recompute is now due (handed to this caller
    /// alone).
    fn count(&self, py: Python<'_>, code: i64) -> PyResult<Option<f64>> {
        let failed = self.errors.contains(&code);
        let now = self.now(py)?;
        let mut tally = self.tally.lock();
        match &mut tally.judged {
            Judged::Window { width, buckets } => {
                let index = floor_div(now, *width);
                match buckets.back_mut() {
                    Some(last) if last.0 == index => {
                        last.1 += 1;
                        last.2 += u64::from(failed);
                    }
                    _ => buckets.push_back((index, 1, u64::from(failed))),
                }
            }
            Judged::Count { len, last, errors } => {
                if last.len() == *len {
                    *errors -= u64::from(last.pop_front().unwrap_or(false));
                }
                last.push_back(failed);
                *errors += u64::from(failed);
            }
        }
        Ok(take_due(&mut tally, now))
    }
}

fn take_due(tally: &mut Tally, now: f64) -> Option<f64> {
    if now >= tally.next {
        tally.next = f64::INFINITY;
        Some(now)
    } else {
        None
    }
}

#[pymethods]
impl HealthTally {
    #[new]
    fn new(errors: FxHashSet<i64>, clock: Option<Py<PyAny>>, next: f64) -> Self {
        HealthTally {
            errors,
            clock,
            tally: Mutex::new(Tally {
                judged: Judged::Count {
                    len: 1,
                    last: Default::default(),
                    errors: 0,
                },
                next,
            }),
        }
    }

    /// Judge by a time window of `minutes` (counts start again).
    fn by_window(&self, minutes: f64) -> PyResult<()> {
        let width = minutes * 60.0 / HEALTH_BUCKETS;
        if !(width.is_finite() && width > 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "minutes must be > 0 and finite, got {minutes}"
            )));
        }
        self.tally.lock().judged = Judged::Window {
            width,
            buckets: Default::default(),
        };
        Ok(())
    }

    /// Judge by the last `last_n` executions (counts start again).
    fn by_count(&self, last_n: usize) -> PyResult<()> {
        if last_n == 0 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "last_n must be >= 1, got 0",
            ));
        }
        self.tally.lock().judged = Judged::Count {
            len: last_n,
            last: std::collections::VecDeque::with_capacity(last_n.min(1 << 16)),
            errors: 0,
        };
        Ok(())
    }

    /// Count one final status; returns the time when a recompute is due (to this caller only).
    fn record(&self, py: Python<'_>, status: i64) -> PyResult<Option<f64>> {
        self.count(py, status)
    }

    /// Whether a recompute is due at `now`; true to this caller only.
    fn take_due(&self, now: f64) -> bool {
        take_due(&mut self.tally.lock(), now).is_some()
    }

    /// The next recompute is at `next`.
    fn set_next(&self, next: f64) {
        self.tally.lock().next = next;
    }

    /// (executions, errors) judged at `now`: the window's buckets older than it are dropped.
    fn totals(&self, now: f64) -> (u64, u64) {
        let mut tally = self.tally.lock();
        match &mut tally.judged {
            Judged::Window { width, buckets } => {
                let oldest = floor_div(now, *width) - HEALTH_BUCKETS;
                while buckets.front().is_some_and(|b| b.0 <= oldest) {
                    buckets.pop_front();
                }
                buckets.iter().fold((0, 0), |(n, e), b| (n + b.1, e + b.2))
            }
            Judged::Count { last, errors, .. } => (last.len() as u64, *errors),
        }
    }

    /// A sync handler wrapped so each final status is counted; `recompute(now)` is called when
    /// a recompute is due.
    fn wrap(
        slf: Py<Self>,
        handler: Py<PyAny>,
        final_status: Py<PyAny>,
        recompute: Py<PyAny>,
    ) -> Tallied {
        Tallied {
            hooks: Some(TallyHooks {
                tally: slf,
                handler,
                final_status,
                recompute,
            }),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.clock)
    }
}

/// A sync handler whose final statuses a health check counts (`HealthTally.wrap`).
#[pyclass(module = "workhorse._core", weakref)]
pub(crate) struct Tallied {
    /// None once the collector cleared it.
    hooks: Option<TallyHooks>,
}

struct TallyHooks {
    tally: Py<HealthTally>,
    handler: Py<PyAny>,
    final_status: Py<PyAny>,
    recompute: Py<PyAny>,
}

#[pymethods]
impl Tallied {
    fn __call__(slf: &Bound<'_, Self>, job: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        // Nothing is borrowed while Python code runs (the handler may drop this wrapper).
        let (tally, handler, final_status, recompute) = {
            let me = slf.borrow();
            let hooks = me
                .hooks
                .as_ref()
                .ok_or_else(|| PyErr::from(crate::errors::Error::Stopped))?;
            (
                hooks.tally.clone_ref(py),
                hooks.handler.clone_ref(py),
                hooks.final_status.clone_ref(py),
                hooks.recompute.clone_ref(py),
            )
        };
        let result = handler.bind(py).call1((&job,));
        // As the Python wrapper: what counting raises replaces the handler's error.
        let raised = result.as_ref().err().map(|err| err.value(py).clone());
        let (code, _) = final_code(&job, raised.as_ref().map(|r| r.as_any()), &final_status)?;
        if let Some(now) = tally.get().count(py, code)? {
            recompute.bind(py).call1((now,))?;
        }
        Ok(result?.unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        wrapper_repr(
            py,
            "health-tallied",
            self.hooks.as_ref().map(|hooks| &hooks.handler),
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(hooks) = &self.hooks {
            visit.call(&hooks.tally)?;
            visit.call(&hooks.handler)?;
            visit.call(&hooks.final_status)?;
            visit.call(&hooks.recompute)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.hooks = None;
    }
}
