//! Blocking on a handle (`Execution.wait()`, `Schedule.wait()`, `Context.wait_cancelled()`) with
//! the GIL released. Waiting is rare and a lock per handle is not free, so each kind of handle
//! shares one condition per process; `notify` bumps its generation under the lock, so a waiter
//! that read the generation before looking at its handle cannot miss the wake-up.

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use std::time::{Duration, Instant};

pub(crate) struct Waiters {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Waiters {
    pub(crate) const fn new() -> Self {
        Waiters {
            generation: Mutex::new(0),
            changed: Condvar::new(),
        }
    }

    /// Wake every thread waiting here (they look at their own handle again).
    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.changed.notify_all();
    }

    /// Call `ready` (with the GIL) until it returns a value, sleeping in between with the GIL
    /// released until notified or `end`, at most `slice` at a time so that signals (Ctrl-C) are
    /// checked; None once `end` has passed.
    pub(crate) fn wait<T>(
        &self,
        py: Python<'_>,
        end: Option<Instant>,
        slice: Duration,
        mut ready: impl FnMut() -> PyResult<Option<T>>,
    ) -> PyResult<Option<T>> {
        loop {
            let seen = *self.generation.lock();
            if let Some(value) = ready()? {
                return Ok(Some(value));
            }
            let now = Instant::now();
            if end.is_some_and(|end| now >= end) {
                return Ok(None);
            }
            let until = end.map_or(now + slice, |end| end.min(now + slice));
            py.detach(|| {
                let mut generation = self.generation.lock();
                if *generation == seen {
                    self.changed.wait_until(&mut generation, until);
                }
            });
            py.check_signals()?;
        }
    }
}

/// `end` for a timeout in seconds (None: no end).
pub(crate) fn end_of(timeout: Option<f64>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.clamp(0.0, 1e9)))
}
