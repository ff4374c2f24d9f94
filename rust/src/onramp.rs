//! On-ramping for ConcurrentJob: which worker slot to fill, and when.
//!
//! Slot 1 is filled at once; then one more slot is reached every `start_interval` (tick k at
//! start plus k intervals, by the clock, so ticks the control thread was too busy to see still
//! count) until all `max_workers` are. At each tick every reached slot that is free (its run
//! ended) is filled again, so runs shorter than the interval still ramp up to `max_workers`, and
//! an ended run is refilled at the next tick, not at once. Slots wait in one queue: a newly
//! reached slot goes first and a free one joins the back once, so when refills take longer than
//! an interval (short CPU-bound runs holding the GIL) no slot is starved. With an interval of zero
//! every free slot is filled at once.

use crate::errors::Error;
use crate::runtime::{now_ns, secs_to_ns};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

struct Ramp {
    interval: u64,
    running: Vec<bool>,
    /// Slots the ramp has reached so far: one more at every tick until all are.
    activated: usize,
    /// Free reached slots waiting to be filled, in order; `queued` marks them.
    fillable: VecDeque<usize>,
    queued: Vec<bool>,
    next_tick: Option<u64>,
    closed: bool,
}

impl Ramp {
    /// The slot to fill now, if any, and when to look again otherwise.
    ///
    /// At each tick the slots reached since the last one go to the front of the queue and every
    /// other free reached slot joins its back (once): so runs shorter than the interval still
    /// ramp up to `max_workers`, a slot whose run ended waits for the next tick, and a slot
    /// still waiting from an earlier tick keeps its place instead of going behind slot 1 again.
    fn poll(&mut self, now: u64) -> (Option<usize>, Option<u64>) {
        let n = self.running.len();
        match self.next_tick {
            None => {
                // First call: slot 1 at once (every slot with no interval); the clock starts now.
                self.next_tick = Some(now.saturating_add(self.interval));
                self.reach(if self.interval == 0 { n } else { 1 });
            }
            Some(_) if self.interval == 0 => self.take_free(),
            Some(next_tick) if now >= next_tick => {
                // Every tick passed reaches a slot; refills of missed ticks are not saved up.
                let behind = (now - next_tick) / self.interval + 1;
                self.next_tick =
                    Some(next_tick.saturating_add(behind.saturating_mul(self.interval)));
                let reached = usize::try_from(behind).unwrap_or(usize::MAX);
                self.reach(self.activated.saturating_add(reached).min(n));
            }
            Some(_) => {}
        }
        while let Some(slot) = self.fillable.pop_front() {
            self.queued[slot] = false;
            if !self.running[slot] {
                return (Some(self.fill(slot)), None);
            }
        }
        (
            None,
            if self.interval == 0 {
                None
            } else {
                self.next_tick
            },
        )
    }

    /// Reach slots up to `activated` (they are filled first), then queue the other free ones.
    fn reach(&mut self, activated: usize) {
        for slot in (self.activated..activated).rev() {
            if !self.running[slot] && !self.queued[slot] {
                self.queued[slot] = true;
                self.fillable.push_front(slot);
            }
        }
        self.activated = activated;
        self.take_free();
    }

    fn take_free(&mut self) {
        for slot in 0..self.activated {
            if !self.running[slot] && !self.queued[slot] {
                self.queued[slot] = true;
                self.fillable.push_back(slot);
            }
        }
    }

    fn fill(&mut self, slot: usize) -> usize {
        self.running[slot] = true;
        slot + 1
    }
}

#[pyclass(frozen, module = "workhorse._core")]
pub(crate) struct OnRamp {
    inner: Arc<(Mutex<Ramp>, Condvar)>,
}

#[pymethods]
impl OnRamp {
    #[new]
    fn new(max_workers: i64, start_interval: f64) -> PyResult<Self> {
        if max_workers < 1 {
            return Err(
                Error::Invalid(format!("max_workers must be >= 1, got {max_workers}")).into(),
            );
        }
        if start_interval.is_nan() || start_interval < 0.0 || start_interval.is_infinite() {
            return Err(Error::Invalid(format!(
                "start_interval must be >= 0 seconds, got {start_interval}"
            ))
            .into());
        }
        Ok(OnRamp {
            inner: Arc::new((
                Mutex::new(Ramp {
                    interval: secs_to_ns(start_interval),
                    running: vec![false; max_workers as usize],
                    activated: 0,
                    fillable: VecDeque::new(),
                    queued: vec![false; max_workers as usize],
                    next_tick: None,
                    closed: false,
                }),
                Condvar::new(),
            )),
        })
    }

    /// The 1-based slot to fill next, waiting up to `timeout` s (GIL released); None on timeout,
    /// 0 once closed.
    fn next_slot(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<usize>> {
        let timeout = crate::runtime::timeout_arg("timeout", timeout)?;
        let inner = self.inner.clone();
        let until = now_ns().saturating_add(secs_to_ns(timeout));
        Ok(py.detach(move || {
            let (lock, cv) = &*inner;
            let mut ramp = lock.lock();
            loop {
                if ramp.closed {
                    return Some(0);
                }
                let now = now_ns();
                let (slot, next) = ramp.poll(now);
                if slot.is_some() {
                    return slot;
                }
                let wake = next.unwrap_or(u64::MAX).min(until);
                if now >= until {
                    return None;
                }
                // At most a second at a time: a start_interval of centuries never overflows.
                cv.wait_for(
                    &mut ramp,
                    Duration::from_nanos(wake.saturating_sub(now).clamp(1, 1_000_000_000)),
                );
            }
        }))
    }

    /// The run in `slot` ended: it is refilled at the next tick.
    fn release(&self, slot: usize) -> PyResult<()> {
        let (lock, cv) = &*self.inner;
        let mut ramp = lock.lock();
        if slot == 0 || slot > ramp.running.len() {
            return Err(Error::Invalid(format!("slot {slot} is out of range")).into());
        }
        ramp.running[slot - 1] = false;
        cv.notify_all();
        Ok(())
    }

    /// Stop on-ramping; no slot counts as running any more (the ConcurrentJob stops them all).
    fn close(&self) {
        let (lock, cv) = &*self.inner;
        let mut ramp = lock.lock();
        ramp.closed = true;
        ramp.running.iter_mut().for_each(|r| *r = false);
        cv.notify_all();
    }

    #[getter]
    fn running(&self) -> usize {
        self.inner.0.lock().running.iter().filter(|r| **r).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, interval: u64) -> Ramp {
        Ramp {
            interval,
            running: vec![false; n],
            activated: 0,
            fillable: VecDeque::new(),
            queued: vec![false; n],
            next_tick: None,
            closed: false,
        }
    }

    #[test]
    fn fills_one_slot_per_tick() {
        let mut r = ramp(3, 100);
        assert_eq!(r.poll(0).0, Some(1));
        assert_eq!(r.poll(50), (None, Some(100)));
        assert_eq!(r.poll(100).0, Some(2));
        assert_eq!(r.poll(150).0, None);
        assert_eq!(r.poll(200).0, Some(3));
        assert_eq!(r.poll(300).0, None);
    }

    #[test]
    fn released_slot_is_refilled_at_next_tick() {
        let mut r = ramp(2, 100);
        r.poll(0);
        r.poll(100);
        r.running[0] = false;
        assert_eq!(r.poll(150).0, None);
        assert_eq!(r.poll(200).0, Some(1));
    }

    #[test]
    fn short_runs_still_ramp_to_every_slot() {
        let mut r = ramp(3, 100);
        assert_eq!(r.poll(0).0, Some(1));
        r.running[0] = false; // the run ended before the next tick
        assert_eq!(r.poll(50).0, None);
        // The newly reached slot first, then the refills.
        assert_eq!(r.poll(100).0, Some(2));
        assert_eq!(r.poll(100).0, Some(1));
        r.running[0] = false;
        r.running[1] = false;
        assert_eq!(r.poll(200).0, Some(3));
        assert_eq!(r.poll(200).0, Some(1));
        assert_eq!(r.poll(200).0, Some(2));
        assert_eq!(r.poll(200).0, None);
    }

    #[test]
    fn a_new_slot_is_not_starved_by_refills_that_outlast_a_tick() {
        // Runs end at once, but each fill takes 60: the queue of one tick is not done by the
        // next, and the slots still waiting keep their place instead of going behind slot 1.
        let mut r = ramp(4, 100);
        let mut now = 0;
        let mut reached = [false; 4];
        while now < 1_000 {
            if let (Some(slot), _) = r.poll(now) {
                reached[slot - 1] = true;
                r.running[slot - 1] = false;
            }
            now += 60;
        }
        assert_eq!(reached, [true; 4]);
    }

    #[test]
    fn ticks_missed_while_busy_still_reach_their_slots() {
        let mut r = ramp(4, 100);
        assert_eq!(r.poll(0).0, Some(1));
        // The control thread comes back after three ticks: slots 2, 3 and 4 are all due.
        assert_eq!(r.poll(350).0, Some(2));
        assert_eq!(r.poll(350).0, Some(3));
        assert_eq!(r.poll(350).0, Some(4));
        assert_eq!(r.poll(350), (None, Some(400)));
    }

    #[test]
    fn a_start_interval_of_centuries_never_wraps() {
        let mut r = ramp(2, u64::MAX);
        assert_eq!(r.poll(5).0, Some(1));
        assert_eq!(r.poll(1_000).0, None);
        assert_eq!(r.next_tick, Some(u64::MAX));
    }

    #[test]
    fn zero_interval_fills_every_slot_at_once() {
        let mut r = ramp(3, 0);
        assert_eq!(r.poll(0).0, Some(1));
        assert_eq!(r.poll(0).0, Some(2));
        assert_eq!(r.poll(0).0, Some(3));
        assert_eq!(r.poll(0).0, None);
    }
}
