//! The sync lane's executor loop: what each of a worker's executor threads runs.
//!
//! A thread holds the GIL while executions are ready and runs them one after the other: it pops
//! the next one and completes the last under one lock, calls the worker's Python runner for it
//! (the adapted handler inside the status rules), and releases the GIL only to wait when nothing
//! is ready. One execution per pop, so a handler that blocks (or releases the GIL) holds up only
//! itself: the executions behind it stay in the lane for the other threads, and the stall
//! watchdog (intervals.rs) wakes one when the busy threads stop coming back. While the runner
//! runs Python code, CPython's switch interval hands the GIL to other threads that ask for it
//! (the asyncio lane, the submitter, signal handlers in the main thread): that is the time slice.

use super::{Inner, Ready, State, SYNC};
use crate::runtime::ns_to_secs;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Status of an execution whose record was gone when it was taken (its schedule was cancelled
/// or the worker stopped in between): it never ran.
const UNAVAILABLE: i32 = 503;

/// What one turn of the loop found under the lock.
enum Next {
    Run(Ready),
    /// Nothing ready yet.
    Wait,
    /// Closed and drained: the thread ends.
    Finished,
}

impl Inner {
    /// Give a ready execution of a repeating entry the entry's record (None once it is gone).
    pub(super) fn fill_record(py: Python<'_>, st: &State, ready: &mut Ready) {
        if ready.record.is_none() && !ready.ended {
            ready.record = st
                .entries
                .get(&ready.key)
                .and_then(|entry| entry.record.as_ref())
                .map(|record| record.clone_ref(py));
        }
    }

    /// Complete the execution this thread ran last (if the runner left that to us), then pop the
    /// next ready one; `spawn` is set when no other thread waits and the lane may grow.
    fn turn(
        &self,
        py: Python<'_>,
        last: Option<(u64, i32)>,
        busy: &mut bool,
        spawn: &mut bool,
    ) -> Next {
        let mut st = self.state.lock();
        if let Some((key, status)) = last {
            self.complete(&mut st, key, status);
            self.admit(&mut st);
            if st.in_flight == 0 {
                self.idle.notify_all();
            }
        }
        if *busy {
            st.running = st.running.saturating_sub(1);
            *busy = false;
        }
        let Some(mut ready) = st.ready[SYNC].pop_front() else {
            return if Inner::finished(&st) {
                Next::Finished
            } else {
                Next::Wait
            };
        };
        st.running += 1;
        st.taken += 1;
        *busy = true;
        *spawn = st.waiting[SYNC] == 0 && st.threads < st.limit;
        Self::fill_record(py, &st, &mut ready);
        Next::Run(ready)
    }

    /// Wait with the GIL released until the sync lane has work or nothing more can come.
    fn idle_wait(self: &Arc<Self>, py: Python<'_>) {
        let inner = self.clone();
        py.detach(move || {
            let mut st = inner.state.lock();
            st.waiting[SYNC] += 1;
            // In slices: a missed wake-up costs at most one slice, never a stuck thread.
            let until = Instant::now() + Duration::from_millis(500);
            while st.ready[SYNC].is_empty() && !Inner::finished(&st) {
                if inner.lanes[SYNC].wait_until(&mut st, until).timed_out() {
                    break;
                }
            }
            st.waiting[SYNC] -= 1;
        });
    }

    /// The loop itself (see the module docs). `run(key, record, item, due, ended)` returns the
    /// status to complete the execution with, or None when it completed it itself (one-shots
    /// resolve their handle after freeing the permit; queued jobs ack) or it was an end marker.
    /// `spawn()` is called when this thread took work and none is left waiting.
    pub(super) fn run_sync_lane(
        self: &Arc<Self>,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        spawn: &Bound<'_, PyAny>,
    ) {
        self.state.lock().threads += 1;
        let mut last = None;
        let mut busy = false;
        loop {
            let mut grow = false;
            let ready = match self.turn(py, last.take(), &mut busy, &mut grow) {
                Next::Run(ready) => ready,
                Next::Wait => {
                    self.idle_wait(py);
                    continue;
                }
                Next::Finished => break,
            };
            if grow {
                if let Err(err) = spawn.call0() {
                    err.write_unraisable(py, Some(spawn));
                }
            }
            let key = ready.key;
            if ready.record.is_none() && !ready.ended {
                last = Some((key, UNAVAILABLE)); // cancelled or stopped between due and taken
                continue;
            }
            match call_runner(py, run, ready) {
                Ok(Some(status)) => last = Some((key, status)),
                Ok(None) => {}
                // The runner contains handler errors itself: this is a bug in workhorse, and
                // the execution's permit may stay taken. Reported, never silent.
                Err(err) => err.write_unraisable(py, Some(run)),
            }
        }
        self.state.lock().threads -= 1;
    }
}

fn call_runner(py: Python<'_>, run: &Bound<'_, PyAny>, ready: Ready) -> PyResult<Option<i32>> {
    let status = run.call1(ready_args(py, ready)?)?;
    if status.is_none() {
        return Ok(None);
    }
    status.extract::<i32>().map(Some)
}

/// The arguments an execution is handed to Python with: (key, record, item, due, ended), where
/// item is the received item or the claimed queued job's tuple, due is time.monotonic() seconds.
pub(super) fn ready_args<'py>(py: Python<'py>, ready: Ready) -> PyResult<Bound<'py, PyTuple>> {
    let Ready {
        key,
        record,
        payload,
        claim,
        scheduled,
        ended,
        ..
    } = ready;
    let item = match (payload, claim) {
        (Some(item), _) => item.into_bound(py),
        (None, Some(claim)) => crate::queue::py::claim_tuple(py, *claim)?.into_any(),
        (None, None) => py.None().into_bound(py),
    };
    PyTuple::new(
        py,
        [
            key.into_pyobject(py)?.into_any(),
            record.map_or_else(|| py.None().into_bound(py), |r| r.into_bound(py)),
            item,
            ns_to_secs(scheduled).into_pyobject(py)?.into_any(),
            pyo3::types::PyBool::new(py, ended).to_owned().into_any(),
        ],
    )
}
