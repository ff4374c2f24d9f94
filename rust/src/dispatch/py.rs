//! The Python-facing side: the `Dispatcher` pyclass (registering sources, submit, take and
//! take_one with the GIL released, done, close, wait_idle, figures) and `pending_timers`.
//! One file because a pyclass has one `#[pymethods]` block (without PyO3's `multiple-pymethods`
//! feature); the mechanisms its methods drive live in the sibling files.

use super::receive::receive_loop;
use super::{lane_of, Entry, Inner, Ready, Source, State, ASYNC, LATENESS_BOUNDS_NS, SYNC};
use crate::channel::Channel;
use crate::errors::{Error, Result};
use crate::queue::{Ack, Outcome};
use crate::runtime::{handle, not_nan, now_ns, ns_to_secs, secs_to_ns, timeout_arg};
use crate::timers::timers;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The per-worker dispatcher (see the module docs). Keys are chosen by Python.
#[pyclass(frozen, module = "workhorse._core")]
pub(crate) struct Dispatcher {
    inner: Arc<Inner>,
}

fn check_key_free(st: &State, key: u64) -> Result<()> {
    if st.entries.contains_key(&key) {
        return Err(Error::Invalid(format!("key {key} is already scheduled")));
    }
    if st.closed {
        return Err(Error::Stopped);
    }
    Ok(())
}

#[pymethods]
impl Dispatcher {
    #[new]
    fn new(concurrency: i64) -> PyResult<Self> {
        if concurrency < 1 {
            return Err(
                Error::Invalid(format!("concurrency must be >= 1, got {concurrency}")).into(),
            );
        }
        Ok(Dispatcher {
            inner: Inner::new(concurrency as usize),
        })
    }

    /// Make one execution of `record` due now (it comes back to Python when taken, under key 0);
    /// returns true when no executor thread of its lane is idle.
    fn submit(&self, record: Py<PyAny>, is_async: bool) -> PyResult<bool> {
        let lane = lane_of(is_async);
        let mut st = self.inner.state.lock();
        if st.closed {
            drop(st);
            drop(record);
            return Err(Error::Stopped.into());
        }
        st.figures.submitted += 1;
        st.due.push_back(Ready {
            key: 0,
            record: Some(record),
            payload: None,
            claim: None,
            scheduled: now_ns(),
            lane,
            ended: false,
            interval: false,
        });
        self.inner.admit(&mut st);
        Ok(st.waiting[lane] == 0)
    }

    /// Count an execution the caller runs in its own thread (sync perform) as in flight; it ends
    /// with `done(0, status)`.
    fn begin_inline(&self) -> PyResult<()> {
        let mut st = self.inner.state.lock();
        if st.closed {
            return Err(Error::Stopped.into());
        }
        st.in_flight += 1;
        Ok(())
    }

    /// Run `key` once at `when` (time.monotonic() seconds).
    #[pyo3(signature = (key, when, is_async, record=None))]
    fn schedule_at(
        &self,
        key: u64,
        when: f64,
        is_async: bool,
        record: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let deadline = secs_to_ns(not_nan("when", when)?);
        {
            let mut st = self.inner.state.lock();
            check_key_free(&st, key)?;
            st.entries.insert(
                key,
                Entry {
                    source: Source::Timer,
                    lane: lane_of(is_async),
                    outstanding: 0,
                    ended: false,
                    period: 0,
                    record,
                },
            );
        }
        timers().schedule(&self.inner, key, deadline);
        Ok(())
    }

    /// `perform_at` / `perform_in` in one call: the Schedule handle (`kind` "at" or "in") and
    /// its Execution of `job`, run `delay` seconds from now; returns the Schedule.
    #[allow(clippy::too_many_arguments)]
    fn schedule_once(
        &self,
        py: Python<'_>,
        key: u64,
        delay: f64,
        is_async: bool,
        job: Py<PyAny>,
        kind: Py<PyAny>,
        worker: Py<PyAny>,
    ) -> PyResult<Py<crate::execution::Schedule>> {
        let schedule = crate::execution::Schedule::one_shot(py, worker, key, kind, job)?;
        let execution = schedule.bind(py).getattr(pyo3::intern!(py, "execution"))?;
        let when = crate::runtime::ns_to_secs(crate::runtime::now_ns()) + not_nan("delay", delay)?;
        self.schedule_at(key, when, is_async, Some(execution.unbind()))?;
        Ok(schedule)
    }

    /// Run `key` at `first` and every `period` seconds after it (fixed rate, no drift).
    #[pyo3(signature = (key, first, period, sync, is_async, record=None))]
    fn every(
        &self,
        key: u64,
        first: f64,
        period: f64,
        sync: bool,
        is_async: bool,
        record: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        if period.is_nan() || period <= 0.0 || period.is_infinite() {
            return Err(
                Error::Invalid(format!("interval must be > 0 seconds, got {period}")).into(),
            );
        }
        let period = secs_to_ns(period).max(1);
        let first = not_nan("first", first)?;
        {
            let mut st = self.inner.state.lock();
            check_key_free(&st, key)?;
            st.entries.insert(
                key,
                Entry {
                    source: Source::Interval { sync },
                    lane: lane_of(is_async),
                    outstanding: 0,
                    ended: false,
                    period,
                    record,
                },
            );
        }
        timers().schedule(&self.inner, key, secs_to_ns(first));
        Ok(())
    }

    /// Run `key` once per item received from `channel`; `sync` keeps one execution at a time.
    /// `drain`: the channel is a private pump's; items it still delivers after `close` are run.
    #[pyo3(signature = (key, channel, sync, is_async, drain=false, record=None))]
    fn receive(
        &self,
        key: u64,
        channel: &Channel,
        sync: bool,
        is_async: bool,
        drain: bool,
        record: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let wake = Arc::new(Notify::new());
        {
            let mut st = self.inner.state.lock();
            check_key_free(&st, key)?;
            let max_outstanding = if sync { 1 } else { st.limit as u32 };
            st.entries.insert(
                key,
                Entry {
                    source: Source::Receive {
                        wake: wake.clone(),
                        max_outstanding,
                        drain,
                    },
                    lane: lane_of(is_async),
                    outstanding: 0,
                    ended: false,
                    period: 0,
                    record,
                },
            );
        }
        let (rx, back) = channel.endpoints();
        let runtime = handle();
        let task = runtime.spawn(receive_loop(self.inner.clone(), key, rx, back, wake));
        let inner = self.inner.clone();
        runtime.spawn(async move {
            // A receive loop that panicked (a bug) is reported and its schedule ended, so that
            // nobody waits for items it will never deliver.
            if let Err(err) = task.await {
                if err.is_panic() {
                    crate::errors::report_panic("receive loop", err.into_panic().as_ref());
                    let mut st = inner.state.lock();
                    inner.end_source(&mut st, key);
                }
            }
        });
        Ok(())
    }

    /// Claim jobs from a durable queue for this dispatcher (see queue/consume.rs): at most
    /// `prefetch` claimed and not yet finished at a time. `wanted`: (name, priority,
    /// max_concurrency, max_fails) per handler.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (key, queue, worker_id, wanted, prefetch, is_async, concurrency, record=None))]
    fn consume(
        &self,
        key: u64,
        queue: &crate::queue::py::QueueCore,
        worker_id: String,
        wanted: Vec<(String, u32, u32, u32)>,
        prefetch: u32,
        is_async: bool,
        concurrency: u32,
        record: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let wake = Arc::new(Notify::new());
        let (acks, acks_rx) = flume::unbounded();
        {
            let mut st = self.inner.state.lock();
            check_key_free(&st, key)?;
            st.consumers += 1;
            st.entries.insert(
                key,
                Entry {
                    source: Source::Queue {
                        wake: wake.clone(),
                        max_outstanding: prefetch.max(1),
                        acks,
                    },
                    lane: lane_of(is_async),
                    outstanding: 0,
                    ended: false,
                    period: 0,
                    record,
                },
            );
        }
        let wanted = wanted
            .into_iter()
            .map(
                |(name, priority, max_concurrency, max_fails)| crate::queue::Wanted {
                    name,
                    priority,
                    max_concurrency,
                    max_fails,
                },
            )
            .collect();
        crate::queue::consume::spawn(
            self.inner.clone(),
            key,
            queue.consumer(worker_id, wanted, concurrency),
            acks_rx,
            wake,
        );
        Ok(())
    }

    /// A queued execution finished: its outcome goes to the consumer (acked in a batch), then
    /// the permit is freed. `outcome`: complete, retry, dead, dead_failed, discard, reschedule
    /// or release; `delay` seconds for retry and reschedule; `text` the error or reason.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (key, status, id, name, token, outcome, delay=0.0, text=None, args=None))]
    fn done_claim(
        &self,
        key: u64,
        status: i32,
        id: String,
        name: String,
        token: u64,
        outcome: &str,
        delay: f64,
        text: Option<String>,
        args: Option<String>,
    ) -> PyResult<()> {
        let delay = crate::runtime::timeout_arg("delay", delay)?;
        let text = text.unwrap_or_default();
        let outcome = match outcome {
            "complete" => Outcome::Complete,
            "retry" => Outcome::Retry { delay, error: text },
            "dead" => Outcome::Dead {
                reason: text,
                failed: false,
            },
            "dead_failed" => Outcome::Dead {
                reason: text,
                failed: true,
            },
            "discard" => Outcome::Discard,
            "reschedule" => Outcome::Reschedule { delay, args },
            "release" => Outcome::Release,
            other => {
                return Err(Error::Invalid(format!("unknown queue outcome {other:?}")).into());
            }
        };
        let mut st = self.inner.state.lock();
        let sent = self.inner.ack(
            &st,
            key,
            Ack {
                id,
                name,
                token,
                outcome,
            },
        );
        self.inner.complete(&mut st, key, status);
        self.inner.admit(&mut st);
        if st.in_flight == 0 {
            self.inner.idle.notify_all();
        }
        drop(st);
        if !sent {
            // The consumer is gone (a bug): the job's lease expires and the reaper requeues it.
            eprintln!("workhorse: a queued job's outcome had no consumer to go to");
        }
        Ok(())
    }

    /// Stop a schedule. A pending timer is dropped (true); a repeating entry produces nothing more
    /// and sends its end marker once its last execution is done (true); otherwise false.
    fn cancel(&self, key: u64) -> bool {
        let mut st = self.inner.state.lock();
        match st.entries.get(&key) {
            Some(Entry {
                source: Source::Timer,
                ..
            }) => {
                let entry = st.entries.remove(&key);
                drop(st); // its record is dropped without the lock: a __del__ may call back
                drop(entry);
                true
            }
            // A private pump's channel: the pump stops taking from its source and closes the
            // channel; what it took still runs, then the entry ends.
            Some(entry) if entry.drains() => !entry.ended,
            Some(_) => self.inner.end_source(&mut st, key),
            None => false,
        }
    }

    /// Ready executions of one lane, as (key, record, item, due_at, ended) tuples: at most
    /// `max_n`, waiting up to `timeout` seconds with the GIL released. None once the dispatcher
    /// is closed and empty. `record` is what the execution was registered with (None when its
    /// schedule went in between); a one-shot's key is 0.
    /// `returning`: the calling thread ran the batch it took last (the sync lane's busy count).
    #[pyo3(signature = (is_async, max_n, timeout, returning=false))]
    fn take<'py>(
        &self,
        py: Python<'py>,
        is_async: bool,
        max_n: usize,
        timeout: f64,
        returning: bool,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let timeout = timeout_arg("timeout", timeout)?;
        let Some(batch) = self.wait_ready(py, is_async, max_n, timeout, returning) else {
            return Ok(None);
        };
        let list = PyList::empty(py);
        for ready in batch {
            list.append(ready_tuple(py, ready)?)?;
        }
        Ok(Some(list))
    }

    /// Run the sync lane's executor loop on this thread until the dispatcher is closed and
    /// drained (executor.rs): `run(key, record, item, due, ended)` for each ready execution,
    /// `spawn()` when the lane may need another thread, `checkpoint()` (a Python function that
    /// does nothing) before taking the next one; interval ticks through `path` (run.rs).
    #[pyo3(signature = (run, spawn, checkpoint, path=None))]
    fn run_sync(
        &self,
        py: Python<'_>,
        run: Bound<'_, PyAny>,
        spawn: Bound<'_, PyAny>,
        checkpoint: Bound<'_, PyAny>,
        path: Option<PyRef<'_, super::ExecPath>>,
    ) {
        self.inner
            .run_sync_lane(py, &run, &spawn, &checkpoint, path.as_deref());
    }

    /// An execution finished with `status`: free its permit and let its source go on.
    #[pyo3(signature = (key, status=-1))]
    fn done(&self, key: u64, status: i32) {
        let mut st = self.inner.state.lock();
        self.inner.complete(&mut st, key, status);
        self.inner.admit(&mut st);
        if st.in_flight == 0 {
            self.inner.idle.notify_all();
        }
    }

    /// Queued runs whose lease was lost, waiting up to `timeout` s with the GIL released; None
    /// once the dispatcher is closed and nothing more can run. Returns at once (perhaps with
    /// none) once a queue lane has failed: see `queue_failure`.
    fn wait_lost(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Vec<(String, u64)>>> {
        let timeout = timeout_arg("timeout", timeout)?;
        let inner = self.inner.clone();
        Ok(py.detach(move || {
            let until = Instant::now() + crate::runtime::capped_duration(timeout);
            let mut lost = inner.lost.lock();
            while lost.is_empty() && inner.failure.lock().is_none() {
                if Inner::finished(&inner.state.lock()) {
                    return None;
                }
                if inner.lost_cv.wait_until(&mut lost, until).timed_out() {
                    break;
                }
            }
            Some(std::mem::take(&mut *lost))
        }))
    }

    /// Stop every source; returns (the records of one-shot executions that never started, due,
    /// ready or waiting for their timer; the records of every repeating schedule, which Python
    /// marks stopped and, but for receive and queue schedules still draining, ends).
    ///
    /// Items already received from a channel are not dropped: they stay due or ready and are
    /// run by the executor threads, which go on until nothing more can become ready. Python
    /// objects are dropped only after the lock is released (a `__del__` may run Python code that
    /// calls back into this dispatcher from another thread).
    fn close(&self, py: Python<'_>) -> (Vec<Py<PyAny>>, Vec<Py<PyAny>>) {
        let mut unstarted = Vec::new();
        let mut schedules = Vec::new();
        let mut dropped: Vec<Ready> = Vec::new();
        {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            if st.closed {
                return (unstarted, schedules);
            }
            st.closed = true;
            // Claimed queued jobs that never started go back to their queue, unattempted.
            self.inner.release_unstarted(st, None);
            let (keep, drop): (VecDeque<Ready>, VecDeque<Ready>) =
                st.due.drain(..).partition(|r| r.payload.is_some());
            st.due = keep;
            dropped.extend(drop);
            for lane in [SYNC, ASYNC] {
                let (keep, drop): (VecDeque<Ready>, VecDeque<Ready>) = st.ready[lane]
                    .drain(..)
                    .partition(|r| r.payload.is_some() || r.ended);
                st.ready[lane] = keep;
                st.in_flight = st.in_flight.saturating_sub(drop.len());
                dropped.extend(drop);
            }
            // Timers and intervals go (a timer's record is a one-shot that never started);
            // receive entries end (a private pump's drains first) and send their end marker
            // once their received items have run.
            // In key order, which is the order Python made them in: a million records resolved
            // in hash order would each be a cache miss (0.4 s against 0.1 s).
            let mut gone: Vec<(u64, bool, Py<PyAny>)> = st
                .entries
                .extract_if(|_, entry| {
                    !matches!(entry.source, Source::Receive { .. } | Source::Queue { .. })
                })
                .filter_map(|(key, entry)| {
                    let one_shot = matches!(entry.source, Source::Timer);
                    entry.record.map(|record| (key, one_shot, record))
                })
                .collect();
            gone.sort_unstable_by_key(|&(key, _, _)| key);
            for (_, one_shot, record) in gone {
                if one_shot {
                    unstarted.push(record);
                } else {
                    schedules.push(record);
                }
            }
            let receiving: Vec<u64> = st.entries.keys().copied().collect();
            for key in receiving {
                let entry = &st.entries[&key];
                if let Some(record) = &entry.record {
                    schedules.push(record.clone_ref(py));
                }
                if let Source::Receive { wake, .. } | Source::Queue { wake, .. } = &entry.source {
                    wake.notify_one();
                }
                if !entry.drains() {
                    self.inner.end_source(st, key);
                }
            }
            for lane in &self.inner.lanes {
                lane.notify_all();
            }
            self.inner.idle.notify_all();
        }
        timers().purge(&self.inner);
        // Executions dropped before they were taken: a one-shot's record goes back to Python as
        // unstarted; a repeating entry's tick holds none.
        unstarted.extend(dropped.into_iter().filter_map(|r| r.record));
        (unstarted, schedules)
    }

    /// Wait (GIL released) until no execution is in flight and none can start; false on timeout.
    /// Waits in slices and looks for signals between them, so Ctrl-C interrupts a stop that
    /// waits forever.
    fn wait_idle(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = timeout.map(|t| timeout_arg("timeout", t)).transpose()?;
        let until = timeout.map(|t| Instant::now() + crate::runtime::capped_duration(t));
        loop {
            let inner = self.inner.clone();
            let idle = py.detach(move || {
                let slice = Instant::now() + Duration::from_millis(100);
                let end = until.map_or(slice, |u| u.min(slice));
                let mut st = inner.state.lock();
                let busy = |st: &State| {
                    st.in_flight > 0
                        || !st.due.is_empty()
                        || (st.closed && (!st.entries.is_empty() || st.consumers > 0))
                };
                while busy(&st) {
                    if inner.idle.wait_until(&mut st, end).timed_out() {
                        break;
                    }
                }
                !busy(&st)
            });
            if idle {
                return Ok(true);
            }
            if until.is_some_and(|u| Instant::now() >= u) {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    #[getter]
    fn in_flight(&self) -> usize {
        self.inner.state.lock().in_flight
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.state.lock().closed
    }

    /// Why this dispatcher's queue consumer died (a panic in it or in its lease renewer), or
    /// None: a failed lane claims nothing more.
    #[getter]
    fn queue_failure(&self) -> Option<String> {
        self.inner.failure.lock().clone()
    }

    /// Figures of the core, read at scrape time by the Prometheus collector. Copied under the
    /// lock, turned into Python objects after it is released.
    fn figures<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (counts, by_status, buckets, skipped, late_sum, late_max) = {
            let st = self.inner.state.lock();
            let scheduled = st
                .entries
                .values()
                .filter(|e| !e.ended && matches!(e.source, Source::Timer | Source::Interval { .. }))
                .count();
            let receiving = st
                .entries
                .values()
                .filter(|e| !e.ended && matches!(e.source, Source::Receive { .. }))
                .count();
            let f = &st.figures;
            let counts: [(&str, u64); 10] = [
                ("scheduled", scheduled as u64),
                ("receiving", receiving as u64),
                ("due", st.due.len() as u64),
                (
                    "ready",
                    (st.ready[SYNC].len() + st.ready[ASYNC].len()) as u64,
                ),
                ("in_flight", st.in_flight as u64),
                ("permits", st.limit as u64),
                ("submitted_total", f.submitted),
                ("completed_total", f.completed),
                ("received_total", f.received),
                ("interval_ticks_total", f.ticks),
            ];
            let by_status: Vec<(i32, u64)> = f.by_status.iter().map(|(k, v)| (*k, *v)).collect();
            (
                counts,
                by_status,
                f.lateness_buckets,
                f.skipped_ticks,
                f.lateness_sum,
                f.lateness_max,
            )
        };
        let d = PyDict::new(py);
        for (name, value) in counts {
            d.set_item(name, value)?;
        }
        d.set_item("interval_skipped_ticks_total", skipped)?;
        d.set_item("interval_lateness_seconds_sum", ns_to_secs(late_sum))?;
        d.set_item("interval_lateness_seconds_max", ns_to_secs(late_max))?;
        let statuses = PyDict::new(py);
        for (status, count) in by_status {
            statuses.set_item(status, count)?;
        }
        d.set_item("by_status", statuses)?;
        let bounds: Vec<f64> = LATENESS_BOUNDS_NS.iter().map(|&b| ns_to_secs(b)).collect();
        d.set_item("interval_lateness_bounds", bounds)?;
        d.set_item("interval_lateness_buckets", buckets.to_vec())?;
        Ok(d)
    }
}

impl Dispatcher {
    /// Pop up to `max_n` ready executions of a lane, waiting with the GIL released; None once
    /// closed and empty, an empty batch on timeout.
    fn wait_ready(
        &self,
        py: Python<'_>,
        is_async: bool,
        max_n: usize,
        timeout: f64,
        returning: bool,
    ) -> Option<Vec<Ready>> {
        let lane = lane_of(is_async);
        let max_n = max_n.max(1);
        if returning && lane == SYNC {
            let mut st = self.inner.state.lock();
            st.running = st.running.saturating_sub(1);
        }
        let drain = |st: &mut State| -> Vec<Ready> {
            let n = st.ready[lane].len().min(max_n);
            let mut batch: Vec<Ready> = st.ready[lane].drain(..n).collect();
            for ready in &mut batch {
                Inner::fill_record(py, st, ready);
            }
            if lane == SYNC && !batch.is_empty() {
                st.running += 1;
                st.taken += batch.len() as u64;
            }
            batch
        };
        let until = Instant::now() + Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        // Ready executions are popped only while this thread holds the GIL: an execution handed
        // to a thread still waiting for the GIL would sit there while another thread could run it.
        let batch = loop {
            {
                let mut st = self.inner.state.lock();
                let batch = drain(&mut st);
                if !batch.is_empty() {
                    break batch;
                }
                if Inner::finished(&st) {
                    return None;
                }
            }
            if Instant::now() >= until {
                return Some(Vec::new());
            }
            let inner = self.inner.clone();
            py.detach(move || {
                let mut st = inner.state.lock();
                st.waiting[lane] += 1;
                while st.ready[lane].is_empty() && !Inner::finished(&st) {
                    if inner.lanes[lane].wait_until(&mut st, until).timed_out() {
                        break;
                    }
                }
                st.waiting[lane] -= 1;
            });
        };
        Some(batch)
    }
}

/// (key, record, item, due, ended): see `take`.
fn ready_tuple<'py>(py: Python<'py>, r: Ready) -> PyResult<Bound<'py, PyTuple>> {
    super::executor::ready_args(py, r)
}

/// Timer-heap entries of the whole process (all dispatchers).
#[pyfunction]
pub(crate) fn pending_timers() -> usize {
    timers().pending()
}
