//! The sync lane's executor loop: what each of a worker's executor threads runs.
//!
//! A thread holds the GIL while executions are ready and runs them one after the other: it pops
//! the next one and completes the last under one lock, calls the worker's Python runner for it
//! (the adapted handler inside the status rules), and releases the GIL only to wait when nothing
//! is ready. One execution per pop, so a handler that blocks (or releases the GIL) holds up only
//! itself: the executions behind it stay in the lane for the other threads, and the stall
//! watchdog (intervals.rs) wakes one when the busy threads stop coming back.
//!
//! Handing the GIL over is what decides throughput with several threads (Executor(10) collected
//! by `result()`: 60-170k calls/s with a context switch per call, 320-500k without):
//! - before popping, the loop calls a Python function that does nothing, which is where CPython
//!   honours another thread's request for the GIL; a thread made to wait for the GIL *after* it
//!   popped an execution would hold it hostage for a whole switch interval;
//! - every 200 us of running back to back it releases the GIL for a moment, so the threads that
//!   wait for it (the submitter, a caller collecting results, the asyncio lane) get a turn
//!   without waiting out the 5 ms switch interval: that is the loop's time slice.
//! - a woken thread counts in `waking` until it is back with the GIL, so ready work wakes one
//!   idle thread, not every idle thread while the GIL is busy;
//! - a thread that gets the GIL and finds that another one took a turn within the last 100 us
//!   steps down: it completes its last execution and waits until it is told to wake. Only one
//!   thread can run Python at a time, and with ten threads all taking turns every time slice
//!   handed the GIL from one to another (a context switch and a gap with nobody running, 16k a
//!   second with 10,000 intervals). A thread whose handler blocks stops taking turns, so the
//!   stall watchdog's wake-up is not stepped down, and the loop stays one thread per handler
//!   that blocks.

use super::{Inner, Ready, State, SYNC};
use crate::runtime::ns_to_secs;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Status of an execution whose record was gone when it was taken (its schedule was cancelled
/// or the worker stopped in between): it never ran.
const UNAVAILABLE: i32 = 503;

/// How long the loop runs executions back to back before it releases the GIL for a moment.
const YIELD_AFTER_NS: u64 = 200_000;

/// How long a thread that holds the GIL spins for the state lock before it sleeps on it.
const SPIN_FOR: Duration = Duration::from_micros(50);

/// A thread steps down when another took a turn this recently (see the module docs).
const STEP_DOWN_NS: u64 = 100_000;

/// Numbers executor threads for `last_turn_by` (0: none yet).
static THREAD_NUMBERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// What one turn of the loop found under the lock.
enum Next {
    Run(Ready),
    /// Nothing ready yet.
    Wait,
    /// Another thread is taking turns: wait until told to wake.
    StepDown,
    /// Closed and drained: the thread ends.
    Finished,
}

impl Inner {
    /// The state lock for a thread that holds the GIL: spin for it a while before sleeping.
    /// The timer thread holds it for a chunk of due ticks at a time (some microseconds); a
    /// thread that sleeps on it with the GIL held stops all Python until the kernel wakes it,
    /// which on a VM takes longer than the wait itself.
    fn lock_holding_gil(&self) -> parking_lot::MutexGuard<'_, State> {
        if let Some(st) = self.state.try_lock() {
            return st;
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                std::hint::spin_loop();
                if let Some(st) = self.state.try_lock() {
                    return st;
                }
            }
            if start.elapsed() >= SPIN_FOR {
                return self.state.lock();
            }
        }
    }

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
    #[allow(clippy::too_many_arguments)]
    fn turn(
        &self,
        py: Python<'_>,
        me: u64,
        now: u64,
        last: Option<(u64, i32)>,
        busy: &mut bool,
        spawn: &mut bool,
        woken: &mut bool,
    ) -> Next {
        let mut st = self.lock_holding_gil();
        if std::mem::take(woken) {
            st.waking = st.waking.saturating_sub(1); // back, with the GIL
        }
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
        if st.ready[SYNC].is_empty() {
            return if Inner::finished(&st) {
                Next::Finished
            } else {
                Next::Wait
            };
        }
        if !Self::take_turn(&mut st, me, now) {
            // Should the thread taking turns be blocked in a handler after all, the watchdog
            // sees the ready work make no progress and wakes a waiting thread (this one).
            self.arm_watchdog(&mut st);
            return Next::StepDown;
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

    /// Whether thread `me` takes this turn (recorded as the last) or steps down because another
    /// thread took one within `STEP_DOWN_NS`.
    fn take_turn(st: &mut State, me: u64, now: u64) -> bool {
        if st.last_turn_by != me && now.saturating_sub(st.last_turn_at) < STEP_DOWN_NS {
            return false;
        }
        st.last_turn_by = me;
        st.last_turn_at = now;
        true
    }

    /// A one-shot (`perform`) run by the loop itself: its permit is freed before its handle is
    /// resolved, as `Execution.wait()` callers expect `worker.running` to have dropped.
    fn run_one_shot(
        &self,
        py: Python<'_>,
        path: &super::ExecPath,
        execution: &Bound<'_, PyAny>,
        due: f64,
    ) {
        let outcome = path.run_one_shot(py, execution, due);
        let result = (|| -> PyResult<()> {
            let (status, error) = match outcome {
                Ok(done) => done,
                Err(err) => {
                    // A fault of the plumbing, not of the handler: reported, and the handle
                    // resolved so that nobody waits forever.
                    path.report(py, err, execution);
                    (path.internal_error(py)?, py.None().into_bound(py))
                }
            };
            let code = status.extract::<i32>().unwrap_or(500);
            {
                let mut st = self.lock_holding_gil();
                self.complete(&mut st, 0, code);
                self.admit(&mut st);
                if st.in_flight == 0 {
                    self.idle.notify_all();
                }
            }
            crate::execution::Execution::finish(execution.cast()?, status, error)?;
            Ok(())
        })();
        if let Err(err) = result {
            path.report(py, err, execution);
        }
    }

    /// Wait with the GIL released until the sync lane has work or nothing more can come;
    /// true when this thread was told to wake (it counts in `waking` until its next turn).
    /// `stepped_down`: wait for a wake-up even though work is ready (another thread is on it).
    fn idle_wait(self: &Arc<Self>, py: Python<'_>, stepped_down: bool) -> bool {
        let inner = self.clone();
        py.detach(move || {
            let mut st = inner.state.lock();
            st.waiting[SYNC] += 1;
            // In slices: a missed wake-up costs at most one slice, never a stuck thread.
            let until = Instant::now() + Duration::from_millis(500);
            let mut woken = false;
            if stepped_down {
                woken = !inner.lanes[SYNC].wait_until(&mut st, until).timed_out();
            }
            while st.ready[SYNC].is_empty() && !Inner::finished(&st) {
                if inner.lanes[SYNC].wait_until(&mut st, until).timed_out() {
                    break;
                }
                woken = true;
            }
            st.waiting[SYNC] -= 1;
            // A wake-up that raced with the slice's end still leaves work for this thread: it
            // counts as the one on its way, or `waking` would stay set with nobody coming.
            woken || st.waking > 0 && !st.ready[SYNC].is_empty()
        })
    }

    /// The loop itself (see the module docs). Interval ticks go through `path` (run.rs) when
    /// given, without entering the runner. `run(key, record, item, due, ended)` returns the
    /// status to complete the execution with, or None when it completed it itself (one-shots
    /// resolve their handle after freeing the permit; queued jobs ack) or it was an end marker.
    /// `spawn()` is called when this thread took work and none is left waiting.
    pub(super) fn run_sync_lane(
        self: &Arc<Self>,
        py: Python<'_>,
        run: &Bound<'_, PyAny>,
        spawn: &Bound<'_, PyAny>,
        checkpoint: &Bound<'_, PyAny>,
        path: Option<&super::ExecPath>,
    ) {
        self.state.lock().threads += 1;
        let me = THREAD_NUMBERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut last = None;
        let mut busy = false;
        let mut woken = false;
        let mut held_since = crate::runtime::now_ns();
        loop {
            // One clock read a turn serves the time slice and the turn rule.
            let now = crate::runtime::now_ns();
            if now.saturating_sub(held_since) >= YIELD_AFTER_NS {
                // Now and then release the GIL for a moment, between executions: threads that
                // wait for it (the submitter, a caller collecting results) get a turn without
                // waiting out CPython's switch interval while this one holds no execution.
                py.detach(|| {});
                held_since = crate::runtime::now_ns();
            }
            // Hand the GIL over here, *before* popping, if another thread asked for it: a thread
            // that pops an execution and is then made to wait for the GIL (at the runner's first
            // instruction) holds it hostage for a switch interval while the lane's other threads
            // could run it. A call into Python is where CPython honours such a request.
            if let Err(err) = checkpoint.call0() {
                err.write_unraisable(py, Some(checkpoint));
            }
            let mut grow = false;
            let ready = match self.turn(py, me, now, last.take(), &mut busy, &mut grow, &mut woken)
            {
                Next::Run(ready) => ready,
                Next::Wait => {
                    woken = self.idle_wait(py, false);
                    continue;
                }
                Next::StepDown => {
                    woken = self.idle_wait(py, true);
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
            if let (Some(path), Some(record)) = (path, &ready.record) {
                let record = record.bind(py);
                let due = ns_to_secs(ready.scheduled);
                if ready.interval {
                    last = Some((key, path.run_tick(py, record, due)));
                    continue;
                }
                if key == 0 && super::ExecPath::is_one_shot(record) {
                    self.run_one_shot(py, path, record, due);
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_steps_down_while_another_takes_turns_and_not_once_it_stops() {
        let inner = Inner::new(4);
        let mut st = inner.state.lock();
        assert!(Inner::take_turn(&mut st, 1, 1_000_000));
        // Thread 1 keeps its turns; thread 2, given the GIL in between, steps down.
        assert!(Inner::take_turn(&mut st, 1, 1_003_000));
        assert!(!Inner::take_turn(&mut st, 2, 1_005_000));
        // Thread 1 stopped taking turns (its handler blocks): thread 2 takes over, and thread
        // 1, back from its handler, steps down in turn.
        assert!(Inner::take_turn(&mut st, 2, 1_003_000 + STEP_DOWN_NS));
        assert!(!Inner::take_turn(&mut st, 1, 1_004_000 + STEP_DOWN_NS));
    }
}
