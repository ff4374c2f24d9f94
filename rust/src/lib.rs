//! workhorse._core: the tokio-based engine behind workhorse.
//!
//! sources (timers.rs, channel.rs receive loops, queue/ consumers) -> dispatch/ (permits, ready
//! lanes) -> Python executors; onramp.rs paces ConcurrentJob; runtime.rs owns the tokio runtime;
//! adapters.rs is the per-execution half of the counting adapters (prometheus, request_id, health).

mod adapters;
mod channel;
mod context;
mod dispatch;
mod errors;
mod execution;
mod failpoints;
mod fields;
mod gc;
mod job;
mod onramp;
mod queue;
mod runtime;
mod timers;
mod waiting;

use pyo3::prelude::*;

/// time.monotonic() as the core reads it (runtime.rs `now_ns`), in seconds.
#[pyfunction]
fn monotonic() -> f64 {
    runtime::ns_to_secs(runtime::now_ns())
}

/// Stop the tokio runtime and the timer thread; called at interpreter exit.
#[pyfunction]
fn shutdown(py: Python<'_>) {
    py.detach(|| {
        timers::shutdown();
        runtime::shutdown();
    });
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<adapters::Meter>()?;
    m.add_class::<adapters::Measured>()?;
    m.add_class::<adapters::WithRequestId>()?;
    m.add_class::<adapters::HealthTally>()?;
    m.add_class::<adapters::Tallied>()?;
    m.add_function(wrap_pyfunction!(adapters::seed_request_ids, m)?)?;
    m.add_function(wrap_pyfunction!(adapters::new_request_id, m)?)?;
    m.add_class::<channel::Channel>()?;
    m.add_class::<context::Context>()?;
    m.add_class::<job::Job>()?;
    m.add_class::<execution::Execution>()?;
    m.add_class::<execution::Schedule>()?;
    m.add_class::<execution::Repeat>()?;
    m.add_class::<dispatch::Dispatcher>()?;
    m.add_class::<dispatch::ExecPath>()?;
    m.add_class::<onramp::OnRamp>()?;
    m.add_class::<queue::py::QueueCore>()?;
    m.add_class::<queue::py::CronTask>()?;
    m.add_function(wrap_pyfunction!(queue::py::cron_next, m)?)?;
    m.add_function(wrap_pyfunction!(queue::py::new_job_id, m)?)?;
    m.add_function(wrap_pyfunction!(monotonic, m)?)?;
    m.add_function(wrap_pyfunction!(execution::finish_unstarted, m)?)?;
    m.add_function(wrap_pyfunction!(gc::settle, m)?)?;
    m.add_function(wrap_pyfunction!(gc::gc_exempt, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(dispatch::pending_timers, m)?)?;
    m.add_function(wrap_pyfunction!(errors::core_panics, m)?)?;
    m.add("CoreError", py.get_type::<errors::CoreError>())?;
    m.add("ChannelClosed", py.get_type::<errors::ChannelClosed>())?;
    m.add("QueueError", py.get_type::<errors::QueueError>())?;
    // The package's version is the crate's: maturin writes the same into the wheel's metadata.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
