//! The dispatcher: where every source's due executions meet the worker's concurrency permits.
//!
//! Sources (immediate submits, the timer thread, channel receive loops, durable queues) push *due*
//! executions, each with the Python record it runs (the dispatcher owns the records). An
//! execution is admitted when a permit is free and moves to the ready lane of its kind: `SYNC`
//! lanes are run by the executor loop on the worker's executor threads, `ASYNC` lanes are taken in
//! batches by the thread that feeds the asyncio loop, waiting with the GIL released. Completion
//! (the loop's own, or `done`) frees the permit, lets a sync interval tick again and gives a
//! receive loop room for the next item.
//!
//! One file per mechanism along the path of one execution:
//! - `intervals.rs`: what the timer thread fires (timers, intervals, the stall watchdog);
//! - `receive.rs`: channel receive loops and their room;
//! - `claims.rs`: what a durable queue's consumer calls (claims, acks, lost leases);
//! - `admission.rs`: permits, ready lanes, waking executor threads, completion;
//! - `executor.rs`: the sync lane's executor loop, calling the worker's Python runner;
//! - `run.rs`: one sync execution's plumbing (its Context, the claim on its Job, the last
//!   status), which the loop runs interval ticks through;
//! - `py.rs`: the `Dispatcher` pyclass that Python registers sources with, takes from and
//!   reports completions to.
//!
//! This file holds the state they share.

mod admission;
mod claims;
mod executor;
mod intervals;
mod py;
mod receive;
mod run;

pub(crate) use py::{pending_timers, Dispatcher};
pub(crate) use run::ExecPath;

use crate::queue::{Ack, Claim};
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use tokio::sync::Notify;

const SYNC: usize = 0;
const ASYNC: usize = 1;
/// Timer key of a dispatcher's stall watchdog (Python's keys count up from 1).
const WATCHDOG: u64 = u64::MAX;
/// How long ready sync executions may wait for a busy executor thread to come back before the
/// watchdog wakes an idle one: a thread is only busy for a no-op's microseconds, or it is blocked.
const STALL_NS: u64 = 500_000;
/// The watchdog backs off to this when waking threads does not help (the GIL is busy).
const STALL_MAX_NS: u64 = 8_000_000;
/// Upper bounds of the interval-lateness histogram: 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25 ms.
const LATENESS_BOUNDS_NS: [u64; 8] = [
    100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000,
];

/// One execution on its way to Python: which entry, the received item if any (or the claimed
/// queued job), when it was due.
struct Ready {
    key: u64,
    /// The Python record this execution runs: a one-shot's own (an Execution, an Executor call),
    /// or a repeating entry's, filled in from the entry when an executor takes it (the timer
    /// thread that makes ticks due holds no GIL to copy it). An end marker carries the entry's.
    record: Option<Py<PyAny>>,
    payload: Option<Py<PyAny>>,
    claim: Option<Box<Claim>>,
    scheduled: u64,
    lane: usize,
    /// Not an execution: tells Python that a repeating entry has finished for good.
    ended: bool,
    /// A tick of an interval: the executor loop runs it through `ExecPath` (run.rs).
    interval: bool,
}

enum Source {
    /// One-shot, waiting in the timer heap.
    Timer,
    /// Fixed-rate clock: tick n is due at start + n * period.
    Interval { sync: bool },
    /// A receive loop on the tokio runtime; `wake` tells it a permit or a cancel happened.
    /// `drain`: the channel is a private pump's (a queue or iterable source), which closes it at
    /// stop; the loop goes on until then, so that items the pump took are run, not dropped.
    Receive {
        wake: Arc<Notify>,
        max_outstanding: u32,
        drain: bool,
    },
    /// A durable queue's consumer loop (queue/consume.rs): it claims while the entry has room,
    /// and hears completions through `acks`. `wake` tells it a permit or a stop happened.
    Queue {
        wake: Arc<Notify>,
        max_outstanding: u32,
        acks: flume::Sender<Ack>,
    },
}

struct Entry {
    source: Source,
    lane: usize,
    /// Executions of this entry that are due or running.
    outstanding: u32,
    /// The source will produce nothing more (cancelled, channel closed).
    ended: bool,
    period: u64,
    /// What Python registered it with (a schedule's record); it leaves with the end marker.
    record: Option<Py<PyAny>>,
}

#[derive(Default)]
struct Figures {
    by_status: std::collections::BTreeMap<i32, u64>,
    submitted: u64,
    completed: u64,
    ticks: u64,
    skipped_ticks: u64,
    lateness_sum: u64,
    lateness_max: u64,
    /// Ticks by lateness, in the buckets of LATENESS_BOUNDS_NS (and one past the last).
    lateness_buckets: [u64; LATENESS_BOUNDS_NS.len() + 1],
    received: u64,
}

struct State {
    limit: usize,
    in_flight: usize,
    closed: bool,
    /// Queue consumer loops still running: after `close` they flush the last acks, and a stop
    /// is not over until they have.
    consumers: usize,
    due: VecDeque<Ready>,
    ready: [VecDeque<Ready>; 2],
    waiting: [usize; 2],
    /// Executor threads of the sync lane running a batch they took (back at their next take).
    running: usize,
    /// Executor threads in the sync lane's loop (executor.rs): it asks for another while below
    /// the limit and none waits.
    threads: usize,
    /// Sync executor threads told to wake and not yet back for work (with the GIL): one is
    /// enough, and telling more while the GIL is busy only makes them all queue for it.
    waking: usize,
    /// Which executor thread (its number in `run_sync_lane`) took its turn last, and when: a
    /// thread that finds another one taking turns within `STEP_DOWN_NS` steps down (executor.rs).
    last_turn_by: u64,
    last_turn_at: u64,
    watchdog: bool,
    /// Sync executions taken so far, and the count the watchdog saw last: no progress = a stall.
    taken: u64,
    watch_taken: u64,
    /// The watchdog's current period, and whether its last look woke a thread.
    watch_period: u64,
    watch_woke: bool,
    entries: FxHashMap<u64, Entry>,
    figures: Figures,
}

pub(crate) struct Inner {
    me: Weak<Inner>,
    state: Mutex<State>,
    lanes: [Condvar; 2],
    idle: Condvar,
    /// Queued runs whose lease a consumer could not renew: (job id, token), for Python to
    /// cancel (`wait_lost`). Apart from `state`: a consumer never waits on the executors' lock.
    lost: Mutex<Vec<(String, u64)>>,
    lost_cv: Condvar,
    /// Why a queue lane failed (a panic in its consumer or renewer), for Python; set under
    /// `lost`'s lock so that `wait_lost` wakes for it.
    failure: Mutex<Option<String>>,
}

fn lane_of(is_async: bool) -> usize {
    if is_async {
        ASYNC
    } else {
        SYNC
    }
}

impl Inner {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                closed: false,
                consumers: 0,
                due: VecDeque::new(),
                ready: [VecDeque::new(), VecDeque::new()],
                waiting: [0, 0],
                running: 0,
                threads: 0,
                waking: 0,
                last_turn_by: 0,
                last_turn_at: 0,
                watchdog: false,
                taken: 0,
                watch_taken: 0,
                watch_period: STALL_NS,
                watch_woke: false,
                entries: FxHashMap::default(),
                figures: Figures::default(),
            }),
            lanes: [Condvar::new(), Condvar::new()],
            idle: Condvar::new(),
            lost: Mutex::new(Vec::new()),
            lost_cv: Condvar::new(),
            failure: Mutex::new(None),
        })
    }
}

impl Entry {
    fn drains(&self) -> bool {
        matches!(self.source, Source::Receive { drain: true, .. })
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(super) fn due(inner: &Inner, key: u64) {
        let mut st = inner.state.lock();
        st.due.push_back(Ready {
            key,
            record: None,
            payload: None,
            claim: None,
            scheduled: 0,
            lane: SYNC,
            ended: false,
            interval: false,
        });
        inner.admit(&mut st);
    }

    pub(super) fn entry(inner: &Inner, key: u64, source: Source) {
        add_entry(inner, key, source, 10);
    }

    pub(super) fn ready_keys(inner: &Inner) -> Vec<u64> {
        inner.state.lock().ready[SYNC]
            .iter()
            .map(|r| r.key)
            .collect()
    }

    pub(crate) fn inner() -> Arc<Inner> {
        Inner::new(4)
    }

    pub(crate) fn add_timer(inner: &Inner, key: u64) {
        add_entry(inner, key, Source::Timer, 0);
    }

    pub(super) fn add_entry(inner: &Inner, key: u64, source: Source, period: u64) {
        inner.state.lock().entries.insert(
            key,
            Entry {
                source,
                lane: SYNC,
                outstanding: 0,
                ended: false,
                period,
                record: None,
            },
        );
    }

    pub(crate) fn ready_len(inner: &Inner) -> usize {
        inner.state.lock().ready[SYNC].len()
    }
}
