//! `QueueCore`: the Python-facing queue object (workhorse.queue wraps it in `wh.Queue`).
//!
//! Every call runs the backend on the tokio runtime with the GIL released; `*_cb` variants return
//! at once and call back (under the GIL) from the runtime, which is how `aenqueue` awaits without
//! a thread per call. Jobs cross the boundary as plain tuples.

use super::consume::Consumer;
use super::{cron, JobData, JobSet, NewJob, Pool, Store, Wanted};
use crate::errors::{Error, Result};
use crate::runtime::handle;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::Notify;

/// (id, name, args JSON, enqueued_at, run_at, fails, last_error, died_at, reason, meta JSON)
type JobTuple = (
    String,
    String,
    String,
    f64,
    f64,
    u32,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<String>,
);

fn job_tuple(j: JobData) -> JobTuple {
    (
        j.id,
        j.name,
        j.args,
        j.enqueued_at,
        j.run_at,
        j.fails,
        j.last_error,
        j.died_at,
        j.reason,
        j.meta,
    )
}

/// A claimed job as the executor sees it: the job tuple and the fencing token.
pub(crate) fn claim_tuple(py: Python<'_>, claim: super::Claim) -> PyResult<Bound<'_, PyTuple>> {
    (job_tuple(claim.job), claim.token).into_pyobject(py)
}

/// (id, name, args JSON, delay seconds, unique key or None, meta JSON or None, due time (epoch
/// seconds of the backend's clock) or None)
type NewJobTuple = (
    String,
    String,
    String,
    f64,
    Option<String>,
    Option<String>,
    Option<f64>,
);

fn new_jobs(jobs: Vec<NewJobTuple>) -> Result<Vec<NewJob>> {
    jobs.into_iter()
        .map(|(id, name, args, delay, unique_key, meta, at)| {
            let delay = crate::runtime::not_nan("delay", delay)?;
            let at = at.map(|at| crate::runtime::not_nan("at", at)).transpose()?;
            Ok(NewJob {
                // An empty id asks the core for a new one (no Python call per job), made here,
                // before the first attempt, so a retried enqueue carries the same ids.
                id: if id.is_empty() { super::new_id() } else { id },
                name,
                args,
                delay,
                at,
                unique_key,
                meta,
            })
        })
        .collect()
}

#[pyclass(frozen, module = "workhorse._core")]
pub(crate) struct QueueCore {
    store: Store,
    lease: f64,
    reaper_interval: f64,
}

/// Run a backend call to completion with the GIL released.
fn block<T: Send>(py: Python<'_>, fut: impl Future<Output = Result<T>> + Send) -> PyResult<T> {
    let runtime = handle();
    py.detach(move || runtime.block_on(fut)).map_err(Into::into)
}

impl QueueCore {
    pub(crate) fn consumer(
        &self,
        worker_id: String,
        wanted: Vec<Wanted>,
        concurrency: u32,
    ) -> Consumer {
        let pool = Pool {
            worker_id: worker_id.clone(),
            pid: std::process::id(),
            host: hostname(),
            names: wanted.iter().map(|w| w.name.clone()).collect(),
            concurrency,
            started_at: super::memory::now(),
            heartbeat_at: 0.0,
        };
        Consumer {
            store: self.store.clone(),
            worker_id,
            wanted,
            lease: self.lease,
            reaper_interval: self.reaper_interval,
            pool,
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[pymethods]
impl QueueCore {
    #[new]
    #[pyo3(signature = (url, namespace, lease, reaper_interval, command_timeout=super::redis::DEFAULT_COMMAND_TIMEOUT))]
    fn new(
        py: Python<'_>,
        url: &str,
        namespace: &str,
        lease: f64,
        reaper_interval: f64,
        command_timeout: f64,
    ) -> PyResult<Self> {
        for (name, value) in [
            ("lease", lease),
            ("reaper_interval", reaper_interval),
            ("command_timeout", command_timeout),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(
                    Error::Invalid(format!("{name} must be > 0 seconds, got {value}")).into(),
                );
            }
        }
        let store = Store::open_with(url, namespace, command_timeout)?;
        // A backend that is not there is a clear error here, not at the first enqueue.
        let probe = store.clone();
        block(py, async move { probe.now().await })?;
        Ok(QueueCore {
            store,
            lease,
            reaper_interval,
        })
    }

    /// The backend's clock (epoch seconds).
    fn now(&self, py: Python<'_>) -> PyResult<f64> {
        let store = self.store.clone();
        block(py, async move { store.now().await })
    }

    /// Enqueue jobs in one round trip; per job its stored tuple, or None when its unique key is
    /// taken.
    fn enqueue(&self, py: Python<'_>, jobs: Vec<NewJobTuple>) -> PyResult<Vec<Option<JobTuple>>> {
        let jobs = new_jobs(jobs)?;
        let store = self.store.clone();
        let out = block(py, async move { store.enqueue(jobs).await })?;
        Ok(out.into_iter().map(|j| j.map(job_tuple)).collect())
    }

    /// `enqueue` without waiting: `callback(result, error)` is called from the runtime.
    fn enqueue_cb(&self, jobs: Vec<NewJobTuple>, callback: Py<PyAny>) -> PyResult<()> {
        let jobs = new_jobs(jobs)?;
        let store = self.store.clone();
        handle().spawn(async move {
            let out = store.enqueue(jobs).await;
            Python::attach(|py| {
                let called = match out {
                    Ok(jobs) => {
                        let jobs: Vec<Option<JobTuple>> =
                            jobs.into_iter().map(|j| j.map(job_tuple)).collect();
                        callback.call1(py, (jobs, py.None()))
                    }
                    Err(err) => {
                        let err: PyErr = err.into();
                        callback.call1(py, (py.None(), err.value(py)))
                    }
                };
                if let Err(err) = called {
                    err.print(py);
                }
            });
        });
        Ok(())
    }

    /// Record progress of a running job; false when the run no longer holds the job.
    fn checkin(&self, py: Python<'_>, id: String, token: u64, message: String) -> PyResult<bool> {
        let store = self.store.clone();
        block(py, async move { store.checkin(&id, token, message).await })
    }

    fn set_paused(&self, py: Python<'_>, name: String, paused: bool) -> PyResult<()> {
        let store = self.store.clone();
        block(py, async move { store.set_paused(&name, paused).await })
    }

    /// Per job name: (name, ready, scheduled, retry, dead, latency, paused, running).
    #[allow(clippy::type_complexity)]
    fn queues(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<(String, u64, u64, u64, u64, f64, bool, u64)>> {
        let store = self.store.clone();
        let infos = block(py, async move { store.queues().await })?;
        Ok(infos
            .into_iter()
            .map(|q| {
                (
                    q.name,
                    q.ready,
                    q.scheduled,
                    q.retry,
                    q.dead,
                    q.latency,
                    q.paused,
                    q.running,
                )
            })
            .collect())
    }

    /// One page of the scheduled, retry or dead set, oldest first, and the set's size.
    fn page(
        &self,
        py: Python<'_>,
        set: &str,
        page: usize,
        per_page: usize,
    ) -> PyResult<(Vec<JobTuple>, u64)> {
        let set = JobSet::parse(set)?;
        let store = self.store.clone();
        let (jobs, total) = block(py, async move { store.page(set, page, per_page).await })?;
        Ok((jobs.into_iter().map(job_tuple).collect(), total))
    }

    #[pyo3(signature = (id=None))]
    fn retry_dead(&self, py: Python<'_>, id: Option<String>) -> PyResult<u64> {
        let store = self.store.clone();
        block(py, async move { store.retry_dead(id).await })
    }

    #[pyo3(signature = (set, id=None))]
    fn delete(&self, py: Python<'_>, set: &str, id: Option<String>) -> PyResult<u64> {
        let set = JobSet::parse(set)?;
        let store = self.store.clone();
        block(py, async move { store.delete(set, id).await })
    }

    /// Requeue runs whose lease expired; how many (workers also do this on their own).
    fn reap(&self, py: Python<'_>) -> PyResult<u64> {
        let store = self.store.clone();
        block(py, async move { store.reap().await })
    }

    /// Worker pools: list of dicts (worker_id, pid, host, names, concurrency, started_at,
    /// heartbeat_at).
    fn pools<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let store = self.store.clone();
        let pools = block(py, async move { store.pools().await })?;
        let out = PyList::empty(py);
        for p in pools {
            let d = PyDict::new(py);
            d.set_item("worker_id", p.worker_id)?;
            d.set_item("pid", p.pid)?;
            d.set_item("host", p.host)?;
            d.set_item("names", p.names)?;
            d.set_item("concurrency", p.concurrency)?;
            d.set_item("started_at", p.started_at)?;
            d.set_item("heartbeat_at", p.heartbeat_at)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Runs going now: (worker_id, job_id, name, started_at, checkin, checkin_at).
    #[allow(clippy::type_complexity)]
    fn busy(
        &self,
        py: Python<'_>,
    ) -> PyResult<Vec<(String, String, String, f64, Option<String>, Option<f64>)>> {
        let store = self.store.clone();
        let busy = block(py, async move { store.busy().await })?;
        Ok(busy
            .into_iter()
            .map(|b| {
                (
                    b.worker_id,
                    b.job_id,
                    b.name,
                    b.started_at,
                    b.checkin,
                    b.checkin_at,
                )
            })
            .collect())
    }

    /// (processed, failed, dead, stale_acks, reaped, data_losses)
    fn stats(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64, u64, u64)> {
        let store = self.store.clone();
        let s = block(py, async move { store.stats().await })?;
        Ok((
            s.processed,
            s.failed,
            s.dead,
            s.stale_acks,
            s.reaped,
            s.data_losses,
        ))
    }

    /// Enqueue `name` with `args` (JSON) once per slot of the cron `spec`, from now until the
    /// returned handle is stopped. Every process may run the same spec: one enqueue per slot.
    fn cron(&self, spec: &str, name: String, args: String) -> PyResult<CronTask> {
        let parsed = cron::parse(spec)?;
        let stop = Arc::new(Notify::new());
        let stopped = Arc::new(Mutex::new(false));
        let store = self.store.clone();
        let (stop2, stopped2) = (stop.clone(), stopped.clone());
        let spec = spec.to_string();
        handle().spawn(async move {
            let mut after = store.now().await.unwrap_or_else(|_| super::memory::now());
            loop {
                let Ok(slot) = cron::next_after(&parsed, after) else {
                    return;
                };
                let now = store.now().await.unwrap_or_else(|_| super::memory::now());
                let wait = std::time::Duration::from_secs_f64((slot - now).max(0.0));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop2.notified() => return,
                }
                if *stopped2.lock() {
                    return;
                }
                let job = NewJob {
                    id: super::new_id(),
                    name: name.clone(),
                    args: args.clone(),
                    delay: 0.0,
                    at: None,
                    unique_key: None,
                    meta: None,
                };
                let slot_key = format!("{name}:{spec}:{slot}");
                if let Err(err) = store.enqueue_slot(slot_key, job).await {
                    eprintln!("workhorse: periodic enqueue of {name:?} failed: {err:?}");
                }
                after = slot;
            }
        });
        Ok(CronTask { stop, stopped })
    }
}

/// A running periodic enqueue; `stop()` ends it.
#[pyclass(frozen, module = "workhorse._core")]
pub(crate) struct CronTask {
    stop: Arc<Notify>,
    stopped: Arc<Mutex<bool>>,
}

#[pymethods]
impl CronTask {
    fn stop(&self) {
        *self.stopped.lock() = true;
        self.stop.notify_one();
    }
}

/// The first slot of a six-field cron spec strictly after `after` (epoch seconds).
#[pyfunction]
pub(crate) fn cron_next(spec: &str, after: f64) -> PyResult<f64> {
    let parsed = cron::parse(spec)?;
    Ok(cron::next_after(
        &parsed,
        crate::runtime::not_nan("after", after)?,
    )?)
}

/// A new queue job id.
#[pyfunction]
pub(crate) fn new_job_id() -> String {
    super::new_id()
}
