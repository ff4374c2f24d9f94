//! Admission: due executions take a free permit and move to the ready lane of their kind;
//! completions free the permit, wake the source that waits for room and, once a finished
//! source's last run is done, send its end marker.

use super::{Entry, Inner, Ready, Source, State, ASYNC, SYNC, WATCHDOG};
use crate::runtime::now_ns;
use crate::timers::timers;

impl Inner {
    /// Move due executions to their ready lane while permits are free.
    pub(super) fn admit(&self, st: &mut State) {
        while st.in_flight < st.limit {
            let Some(ready) = st.due.pop_front() else {
                break;
            };
            st.in_flight += 1;
            let lane = ready.lane;
            st.ready[lane].push_back(ready);
        }
        self.wake(st, ASYNC);
        self.wake(st, SYNC);
    }

    /// Wake a waiting executor thread for ready work. In the sync lane a thread that is running a
    /// batch comes back for more within microseconds unless its handler blocks, and waking another
    /// would only make the two queue for the GIL: then the stall watchdog decides.
    pub(super) fn wake(&self, st: &mut State, lane: usize) {
        if st.waiting[lane] == 0 || st.ready[lane].is_empty() {
            return;
        }
        if lane == ASYNC {
            self.lanes[lane].notify_one();
        } else if st.running == 0 {
            // One thread on its way is enough: it takes what is ready once it has the GIL.
            if st.waking == 0 {
                st.waking = 1;
                self.lanes[lane].notify_one();
            }
        } else {
            self.arm_watchdog(st);
        }
    }

    /// Have the stall watchdog look at the sync lane within its period (intervals.rs), unless
    /// it is armed already.
    pub(super) fn arm_watchdog(&self, st: &mut State) {
        if !st.watchdog {
            if let Some(me) = self.me.upgrade() {
                st.watchdog = true;
                st.watch_taken = st.taken;
                timers().schedule(&me, WATCHDOG, now_ns().saturating_add(st.watch_period));
            }
        }
    }

    fn push_marker(&self, st: &mut State, key: u64, entry: Entry) {
        let lane = entry.lane;
        st.ready[lane].push_back(Ready {
            key,
            record: entry.record,
            payload: None,
            claim: None,
            scheduled: 0,
            lane,
            ended: true,
            interval: false,
        });
        self.lanes[lane].notify_one();
    }

    /// Mark an entry's source finished; it leaves once its last execution completes.
    pub(super) fn end_source(&self, st: &mut State, key: u64) -> bool {
        let Some(entry) = st.entries.get_mut(&key) else {
            return false;
        };
        if entry.ended {
            return false;
        }
        entry.ended = true;
        if let Source::Receive { wake, .. } | Source::Queue { wake, .. } = &entry.source {
            wake.notify_one();
        }
        if entry.outstanding == 0 {
            if let Some(entry) = st.entries.remove(&key) {
                self.push_marker(st, key, entry);
            }
            if Self::finished(st) {
                self.lanes[SYNC].notify_all();
                self.lanes[ASYNC].notify_all();
                self.idle.notify_all();
            }
        }
        true
    }

    /// Closed, and nothing more can become ready: no execution waits for a permit and no
    /// draining receive entry is left (only then may executor threads and `wait_idle` finish).
    pub(super) fn finished(st: &State) -> bool {
        st.closed && st.due.is_empty() && st.entries.is_empty()
    }

    pub(super) fn complete(&self, st: &mut State, key: u64, status: i32) {
        st.in_flight = st.in_flight.saturating_sub(1);
        st.figures.completed += 1;
        *st.figures.by_status.entry(status).or_insert(0) += 1;
        if let Some(entry) = st.entries.get_mut(&key) {
            entry.outstanding = entry.outstanding.saturating_sub(1);
            if let Source::Receive { wake, .. } | Source::Queue { wake, .. } = &entry.source {
                wake.notify_one();
            }
            if entry.ended && entry.outstanding == 0 {
                if let Some(entry) = st.entries.remove(&key) {
                    self.push_marker(st, key, entry);
                }
                if Self::finished(st) {
                    self.lanes[SYNC].notify_all();
                    self.lanes[ASYNC].notify_all();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::dispatch::tests_support::*;
    use crate::dispatch::*;

    #[test]
    fn ready_work_wakes_one_idle_thread_until_it_is_back() {
        let inner = Inner::new(8);
        inner.state.lock().waiting[SYNC] = 3; // three idle threads, none running
        due(&inner, 1);
        assert_eq!(inner.state.lock().waking, 1);
        // More work while the woken thread waits for the GIL: nobody else is told.
        due(&inner, 2);
        due(&inner, 3);
        assert_eq!(inner.state.lock().waking, 1);
        // Back with the GIL (its turn takes `waking` down): the next work wakes one again.
        inner.state.lock().waking = 0;
        due(&inner, 4);
        assert_eq!(inner.state.lock().waking, 1);
    }

    #[test]
    fn admits_only_while_permits_are_free() {
        let inner = Inner::new(2);
        for key in 1..=5 {
            due(&inner, key);
        }
        assert_eq!(ready_keys(&inner), vec![1, 2]);
        assert_eq!(inner.state.lock().due.len(), 3);
        let mut st = inner.state.lock();
        st.ready[SYNC].pop_front();
        inner.complete(&mut st, 1, 200);
        inner.admit(&mut st);
        drop(st);
        assert_eq!(ready_keys(&inner), vec![2, 3]);
        assert_eq!(inner.state.lock().figures.by_status.get(&200), Some(&1));
    }

    #[test]
    fn ended_source_sends_its_marker_after_the_last_run() {
        let inner = Inner::new(4);
        entry(&inner, 9, Source::Interval { sync: false });
        inner.fire(&[(9, 0)], 0);
        let mut st = inner.state.lock();
        assert!(inner.end_source(&mut st, 9));
        assert_eq!(
            st.ready[SYNC].len(),
            1,
            "no marker while a run is outstanding"
        );
        st.ready[SYNC].pop_front();
        inner.complete(&mut st, 9, 200);
        let marker = st.ready[SYNC].pop_front().expect("end marker");
        assert!(marker.ended && marker.key == 9);
        assert!(st.entries.is_empty());
    }
}
