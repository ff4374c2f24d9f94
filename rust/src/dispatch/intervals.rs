//! What the timer thread (timers.rs) fires: one-shot timers, fixed-rate intervals (sync ones
//! skip ticks while a run is outstanding) with their lateness figures, and the stall watchdog
//! that wakes an idle executor thread when ready sync work sits behind a busy one.

use super::{Inner, Ready, Source, LATENESS_BOUNDS_NS, STALL_MAX_NS, STALL_NS, SYNC, WATCHDOG};

impl Inner {
    /// Called by the timer thread with the keys whose deadline passed.
    pub(crate) fn fire(&self, due: &[(u64, u64)], now: u64) -> Vec<(u64, u64)> {
        let mut rearm = Vec::new();
        let mut guard = self.state.lock();
        let st = &mut *guard; // split borrows of entries and figures
        if st.closed {
            return rearm;
        }
        for &(key, deadline) in due {
            if key == WATCHDOG {
                st.watchdog = false;
                let stuck = st.ready[SYNC].len();
                if stuck == 0 {
                    st.watch_period = STALL_NS;
                    st.watch_woke = false;
                    continue;
                }
                if st.taken == st.watch_taken {
                    // Ready sync work sat while the busy threads stayed away. If the thread woken
                    // last time made no progress either, the GIL is busy (not a blocked handler):
                    // waking more threads would only queue them for it, so look less often.
                    if st.watch_woke {
                        st.watch_period = (st.watch_period * 2).min(STALL_MAX_NS);
                    }
                    if st.waiting[SYNC] > 0 {
                        st.waking = 1; // whoever was on its way did not come: this one goes
                        self.lanes[SYNC].notify_one();
                        st.watch_woke = true;
                    }
                } else {
                    st.watch_period = STALL_NS;
                    st.watch_woke = false;
                }
                st.watchdog = true;
                st.watch_taken = st.taken;
                rearm.push((WATCHDOG, now.saturating_add(st.watch_period)));
                continue;
            }
            let Some(entry) = st.entries.get_mut(&key) else {
                continue; // cancelled
            };
            let figures = &mut st.figures;
            let lane = entry.lane;
            let mut record = None;
            let mut interval = false;
            match entry.source {
                Source::Timer => {
                    record = st.entries.remove(&key).and_then(|entry| entry.record);
                }
                Source::Interval { sync } => {
                    if entry.ended {
                        continue;
                    }
                    if deadline == u64::MAX {
                        continue; // saturated: a tick centuries away never comes
                    }
                    rearm.push((key, deadline.saturating_add(entry.period)));
                    let late = now.saturating_sub(deadline);
                    figures.ticks += 1;
                    figures.lateness_sum += late;
                    figures.lateness_max = figures.lateness_max.max(late);
                    let bucket = LATENESS_BOUNDS_NS.partition_point(|&bound| bound < late);
                    figures.lateness_buckets[bucket] += 1;
                    if sync && entry.outstanding > 0 {
                        // A sync interval never overlaps: this tick is skipped, not queued.
                        figures.skipped_ticks += 1;
                        continue;
                    }
                    if entry.outstanding as usize >= st.limit {
                        // An async interval overlaps up to the worker's concurrency; past that,
                        // queueing more ticks would only grow memory and lateness without
                        // bound, so the tick is skipped and counted.
                        figures.skipped_ticks += 1;
                        continue;
                    }
                    entry.outstanding += 1;
                    interval = true;
                }
                Source::Receive { .. } | Source::Queue { .. } => continue,
            }
            st.due.push_back(Ready {
                key,
                record,
                payload: None,
                claim: None,
                scheduled: deadline,
                lane,
                ended: false,
                interval,
            });
        }
        self.admit(st);
        rearm
    }
}

#[cfg(test)]
mod tests {
    use crate::dispatch::tests_support::*;
    use crate::dispatch::*;

    #[test]
    fn sync_interval_skips_ticks_while_a_run_is_outstanding() {
        let inner = Inner::new(10);
        entry(&inner, 7, Source::Interval { sync: true });
        let rearm = inner.fire(&[(7, 100)], 100);
        assert_eq!(rearm, vec![(7, 110)]);
        inner.fire(&[(7, 110)], 110);
        assert_eq!(ready_keys(&inner), vec![7]);
        assert_eq!(inner.state.lock().figures.skipped_ticks, 1);
    }

    #[test]
    fn async_interval_overlaps_up_to_the_concurrency_then_skips() {
        let inner = Inner::new(2);
        entry(&inner, 7, Source::Interval { sync: false });
        for tick in 0..3 {
            inner.fire(&[(7, tick * 10)], tick * 10);
        }
        assert_eq!(ready_keys(&inner), vec![7, 7]);
        assert_eq!(inner.state.lock().figures.skipped_ticks, 1);
    }

    #[test]
    fn a_cancelled_timer_never_fires() {
        let inner = Inner::new(1);
        entry(&inner, 3, Source::Timer);
        inner.state.lock().entries.remove(&3);
        assert!(inner.fire(&[(3, 5)], 5).is_empty());
        assert!(ready_keys(&inner).is_empty());
    }

    #[test]
    fn watchdog_backs_off_when_waking_threads_makes_no_progress() {
        let inner = Inner::new(4);
        due(&inner, 1);
        {
            let mut st = inner.state.lock();
            st.running = 1; // a thread took work and has not come back
            st.waiting[SYNC] = 1;
        }
        assert_eq!(inner.fire(&[(WATCHDOG, 0)], 0), vec![(WATCHDOG, STALL_NS)]);
        // The woken thread did not take the work either: the GIL is busy, look half as often.
        assert_eq!(
            inner.fire(&[(WATCHDOG, 0)], 1_000),
            vec![(WATCHDOG, 1_000 + 2 * STALL_NS)]
        );
        // Progress resets the period.
        inner.state.lock().taken += 1;
        assert_eq!(
            inner.fire(&[(WATCHDOG, 0)], 2_000),
            vec![(WATCHDOG, 2_000 + STALL_NS)]
        );
    }

    #[test]
    fn fixed_rate_interval_does_not_drift_when_fired_late() {
        let inner = Inner::new(4);
        entry(&inner, 1, Source::Interval { sync: false });
        // Fired 7 ns late: the next tick is still start + period, not now + period.
        assert_eq!(inner.fire(&[(1, 100)], 107), vec![(1, 110)]);
        let st = inner.state.lock();
        assert_eq!(st.figures.lateness_max, 7);
    }
}
