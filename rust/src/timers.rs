//! Timers: one thread per process owns a binary heap of deadlines for every worker.
//!
//! tokio's timer wheel ticks in whole milliseconds, which cannot hold interval lateness under 1 ms
//! at p99; this thread parks on a futex with nanosecond deadlines instead (kernel timer slack is
//! ~50 µs). A pending schedule costs one 24-byte heap slot here, no task and no Python object.
//! Due entries are grouped by dispatcher so each dispatcher's lock is taken once per batch.

use crate::dispatch::Inner;
use crate::runtime::{now_ns, pid};
use parking_lot::{Condvar, Mutex};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

/// Deadlines are served up to this late so that ones close together fire as one batch: one
/// wake-up of the timer thread and of an executor thread instead of one per deadline.
const COALESCE_NS: u64 = 100_000;

/// Most due entries handed to one dispatcher under one hold of its lock.
const FIRE_CHUNK: usize = 16;

struct Item {
    deadline: u64,
    key: u64,
    target: Arc<Inner>,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.key == other.key
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    // Reversed: BinaryHeap is a max-heap and we want the earliest deadline on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .deadline
            .cmp(&self.deadline)
            .then_with(|| other.key.cmp(&self.key))
    }
}

#[derive(Default)]
struct Heap {
    items: BinaryHeap<Item>,
    stopped: bool,
}

pub(crate) struct Timers {
    heap: Mutex<Heap>,
    wake: Condvar,
}

static TIMERS: Mutex<Option<(u32, Arc<Timers>)>> = Mutex::new(None);

/// The timer thread of this process, started on first use (and again in a forked child).
pub(crate) fn timers() -> Arc<Timers> {
    let mut slot = TIMERS.lock();
    if let Some((owner, t)) = slot.as_ref() {
        if *owner == pid() {
            return t.clone();
        }
        // The parent's thread does not exist in a forked child; its heap belongs to the parent.
        if let Some((_, stale)) = slot.take() {
            std::mem::forget(stale);
        }
    }
    let t = Arc::new(Timers {
        heap: Mutex::new(Heap::default()),
        wake: Condvar::new(),
    });
    let runner = t.clone();
    std::thread::Builder::new()
        .name("workhorse-timers".into())
        .spawn(move || runner.supervise())
        .expect("spawning the timer thread");
    *slot = Some((pid(), t.clone()));
    t
}

/// Stop the timer thread (interpreter exit).
pub(crate) fn shutdown() {
    if let Some((owner, t)) = TIMERS.lock().take() {
        if owner == pid() {
            t.heap.lock().stopped = true;
            t.wake.notify_all();
        } else {
            std::mem::forget(t);
        }
    }
}

impl Timers {
    pub(crate) fn schedule(&self, target: &Arc<Inner>, key: u64, deadline: u64) {
        let mut heap = self.heap.lock();
        let earliest = heap.items.peek().is_none_or(|top| deadline < top.deadline);
        heap.items.push(Item {
            deadline,
            key,
            target: target.clone(),
        });
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Forget every pending deadline of one dispatcher (it stopped).
    pub(crate) fn purge(&self, target: &Arc<Inner>) {
        self.heap
            .lock()
            .items
            .retain(|item| !Arc::ptr_eq(&item.target, target));
    }

    pub(crate) fn pending(&self) -> usize {
        self.heap.lock().items.len()
    }

    /// Run the timer loop; a panic (a bug) is reported, counted and the loop started again, so
    /// the deadlines still in the heap are not lost with the thread.
    fn supervise(&self) {
        loop {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())) {
                Ok(()) => return,
                Err(panic) => crate::errors::report_panic("timer thread", panic.as_ref()),
            }
        }
    }

    fn run(&self) {
        let mut due: Vec<Item> = Vec::new();
        loop {
            let now = {
                let mut heap = self.heap.lock();
                loop {
                    if heap.stopped {
                        return;
                    }
                    let now = now_ns();
                    match heap.items.peek() {
                        None => self.wake.wait(&mut heap),
                        Some(top) if top.deadline.saturating_add(COALESCE_NS) <= now => break,
                        Some(top) => {
                            // A deadline of u64::MAX (centuries away) waits at most a day at a
                            // time, so no Instant arithmetic overflows.
                            let wait = (top.deadline.saturating_add(COALESCE_NS) - now)
                                .min(86_400_000_000_000);
                            self.wake
                                .wait_for(&mut heap, std::time::Duration::from_nanos(wait));
                        }
                    }
                }
                let now = now_ns();
                while heap.items.peek().is_some_and(|top| top.deadline <= now) {
                    due.extend(heap.items.pop());
                }
                now
            };
            self.fire(&mut due, now);
        }
    }

    fn fire(&self, due: &mut Vec<Item>, now: u64) {
        let mut rearm: Vec<Item> = Vec::new();
        // Group by dispatcher: one lock per dispatcher per batch, not per tick.
        due.sort_by_key(|item| Arc::as_ptr(&item.target) as usize);
        let mut start = 0;
        while start < due.len() {
            let target = due[start].target.clone();
            let mut end = start;
            while end < due.len() && Arc::ptr_eq(&due[end].target, &target) {
                end += 1;
            }
            let keys: Vec<(u64, u64)> = due[start..end]
                .iter()
                .map(|item| (item.key, item.deadline))
                .collect();
            // In chunks: the dispatcher's lock is also what executor threads take (holding the
            // GIL) for every execution, so it is never held for a whole large batch.
            for chunk in keys.chunks(FIRE_CHUNK) {
                for (key, deadline) in target.fire(chunk, now) {
                    rearm.push(Item {
                        deadline,
                        key,
                        target: target.clone(),
                    });
                }
            }
            start = end;
        }
        due.clear();
        if !rearm.is_empty() {
            let mut heap = self.heap.lock();
            heap.items.extend(rearm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_pops_the_earliest_deadline_first() {
        let target = crate::dispatch::tests_support::inner();
        let mut heap = BinaryHeap::new();
        for (deadline, key) in [(30, 1), (10, 2), (20, 3), (10, 1)] {
            heap.push(Item {
                deadline,
                key,
                target: target.clone(),
            });
        }
        let order: Vec<(u64, u64)> = std::iter::from_fn(|| heap.pop())
            .map(|i| (i.deadline, i.key))
            .collect();
        assert_eq!(order, vec![(10, 1), (10, 2), (20, 3), (30, 1)]);
    }

    #[test]
    fn timer_thread_fires_a_due_entry() {
        let inner = crate::dispatch::tests_support::inner();
        crate::dispatch::tests_support::add_timer(&inner, 42);
        timers().schedule(&inner, 42, now_ns() + 1_000_000);
        let start = std::time::Instant::now();
        while crate::dispatch::tests_support::ready_len(&inner) == 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(2),
                "timer never fired"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
