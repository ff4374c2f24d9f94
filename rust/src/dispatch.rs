//! The dispatcher: where every source's due executions meet the worker's concurrency permits.
//!
//! Sources (immediate submits, the timer thread, channel receive loops, later durable queues) push
//! *due* executions. An execution is admitted when a permit is free and moves to the ready lane of
//! its kind: `SYNC` lanes are drained by the worker's executor threads, `ASYNC` lanes by the thread
//! that feeds the asyncio loop. Python takes ready executions in batches, waiting with the GIL
//! released, and hands completions back with `done`, which frees the permit, lets a sync interval
//! tick again and gives a receive loop room for the next item.

use crate::channel::Channel;
use crate::errors::{Error, Result};
use crate::queue::{Ack, Claim, Outcome};
use crate::runtime::{handle, not_nan, now_ns, ns_to_secs, secs_to_ns, timeout_arg};
use crate::timers::timers;
use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
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
    payload: Option<Py<PyAny>>,
    claim: Option<Box<Claim>>,
    scheduled: u64,
    lane: usize,
    /// Not an execution: tells Python that a repeating entry has finished for good.
    ended: bool,
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
    watchdog: bool,
    /// Sync executions taken so far, and the count the watchdog saw last: no progress = a stall.
    taken: u64,
    watch_taken: u64,
    /// The watchdog's current period, and whether its last look woke a thread.
    watch_period: u64,
    watch_woke: bool,
    entries: HashMap<u64, Entry>,
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
                watchdog: false,
                taken: 0,
                watch_taken: 0,
                watch_period: STALL_NS,
                watch_woke: false,
                entries: HashMap::new(),
                figures: Figures::default(),
            }),
            lanes: [Condvar::new(), Condvar::new()],
            idle: Condvar::new(),
            lost: Mutex::new(Vec::new()),
            lost_cv: Condvar::new(),
            failure: Mutex::new(None),
        })
    }

    /// A queue consumer loop ended (its last acks are with the backend).
    pub(crate) fn consumer_done(&self) {
        let mut st = self.state.lock();
        st.consumers = st.consumers.saturating_sub(1);
        self.idle.notify_all();
    }

    /// The queue consumer of entry `key` (or its lease renewer) died: nothing more is claimed
    /// (the entry ends), its claimed jobs that have not started go back to the queue through
    /// the ack channel, and Python learns why from `wait_lost`/`queue_failure` (it cancels the
    /// runs still going, whose leases nobody renews now).
    pub(crate) fn queue_failed(&self, key: u64, what: String) {
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            self.release_unstarted(st, Some(key));
            self.end_source(st, key);
            self.admit(st);
            if st.in_flight == 0 {
                self.idle.notify_all();
            }
        }
        let _lost = self.lost.lock();
        self.failure.lock().get_or_insert(what);
        self.lost_cv.notify_all();
    }

    /// Send claimed jobs that never started (due, or ready and not taken) back to their queue,
    /// unattempted: all of them, or only entry `only`'s.
    fn release_unstarted(&self, st: &mut State, only: Option<u64>) {
        let ours = |r: &Ready| r.claim.is_some() && only.is_none_or(|k| r.key == k);
        let (claims, due): (VecDeque<Ready>, VecDeque<Ready>) = st.due.drain(..).partition(ours);
        st.due = due;
        let ready_claims: Vec<Ready> = [SYNC, ASYNC]
            .into_iter()
            .flat_map(|lane| {
                let (claims, rest): (VecDeque<Ready>, VecDeque<Ready>) =
                    st.ready[lane].drain(..).partition(ours);
                st.ready[lane] = rest;
                claims
            })
            .collect();
        st.in_flight = st.in_flight.saturating_sub(ready_claims.len());
        for r in claims.into_iter().chain(ready_claims) {
            let claim = r.claim.expect("partitioned on claim");
            let ack = Ack {
                id: claim.job.id,
                name: claim.job.name,
                token: claim.token,
                outcome: Outcome::Release,
            };
            self.ack(st, r.key, ack);
            if let Some(entry) = st.entries.get_mut(&r.key) {
                entry.outstanding = entry.outstanding.saturating_sub(1);
            }
        }
    }

    /// A consumer lost the lease of a run it held: its result will be refused, so Python
    /// cancels it.
    pub(crate) fn lease_lost(&self, id: String, token: u64) {
        self.lost.lock().push((id, token));
        self.lost_cv.notify_all();
    }

    /// Move due executions to their ready lane while permits are free.
    fn admit(&self, st: &mut State) {
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
    fn wake(&self, st: &mut State, lane: usize) {
        if st.waiting[lane] == 0 || st.ready[lane].is_empty() {
            return;
        }
        if lane == ASYNC || st.running == 0 {
            self.lanes[lane].notify_one();
        } else if !st.watchdog {
            if let Some(me) = self.me.upgrade() {
                st.watchdog = true;
                st.watch_taken = st.taken;
                timers().schedule(&me, WATCHDOG, now_ns().saturating_add(st.watch_period));
            }
        }
    }

    fn push_marker(&self, st: &mut State, key: u64, lane: usize) {
        st.ready[lane].push_back(Ready {
            key,
            payload: None,
            claim: None,
            scheduled: 0,
            lane,
            ended: true,
        });
        self.lanes[lane].notify_one();
    }

    /// Mark an entry's source finished; it leaves once its last execution completes.
    fn end_source(&self, st: &mut State, key: u64) -> bool {
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
            let lane = entry.lane;
            st.entries.remove(&key);
            self.push_marker(st, key, lane);
            if Self::finished(st) {
                self.lanes[SYNC].notify_all();
                self.lanes[ASYNC].notify_all();
                self.idle.notify_all();
            }
        }
        true
    }

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
            match entry.source {
                Source::Timer => {
                    st.entries.remove(&key);
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
                }
                Source::Receive { .. } | Source::Queue { .. } => continue,
            }
            st.due.push_back(Ready {
                key,
                payload: None,
                claim: None,
                scheduled: deadline,
                lane,
                ended: false,
            });
        }
        self.admit(st);
        rearm
    }

    /// Called by a receive loop for each item; false when the entry is gone.
    fn received(&self, key: u64, item: Py<PyAny>) -> std::result::Result<(), Py<PyAny>> {
        let mut st = self.state.lock();
        let closed = st.closed;
        let Some(entry) = st.entries.get_mut(&key) else {
            return Err(item);
        };
        if closed && !entry.drains() {
            return Err(item);
        }
        entry.outstanding += 1;
        let lane = entry.lane;
        st.figures.received += 1;
        st.due.push_back(Ready {
            key,
            payload: Some(item),
            claim: None,
            scheduled: now_ns(),
            lane,
            ended: false,
        });
        self.admit(&mut st);
        Ok(())
    }

    /// Whether a receive loop may take another item now (None: the loop must end).
    fn receive_room(&self, key: u64) -> Option<bool> {
        let st = self.state.lock();
        let entry = st.entries.get(&key)?;
        if entry.ended || (st.closed && !entry.drains()) {
            return None;
        }
        match entry.source {
            Source::Receive {
                max_outstanding, ..
            } => Some(entry.outstanding < max_outstanding),
            _ => None,
        }
    }

    /// How many more jobs a queue consumer may claim now (None: the loop must end).
    pub(crate) fn queue_room(&self, key: u64) -> Option<usize> {
        let st = self.state.lock();
        let entry = st.entries.get(&key)?;
        if entry.ended || st.closed {
            return None;
        }
        match entry.source {
            Source::Queue {
                max_outstanding, ..
            } => Some(max_outstanding.saturating_sub(entry.outstanding) as usize),
            _ => None,
        }
    }

    /// A queue consumer claimed these jobs: each becomes a due execution. Given back when the
    /// entry ended meanwhile (the consumer releases them).
    pub(crate) fn claimed(
        &self,
        key: u64,
        claims: Vec<Claim>,
    ) -> std::result::Result<(), Vec<Claim>> {
        let mut st = self.state.lock();
        let closed = st.closed;
        let Some(entry) = st.entries.get_mut(&key) else {
            return Err(claims);
        };
        if closed || entry.ended {
            return Err(claims);
        }
        entry.outstanding += claims.len() as u32;
        let lane = entry.lane;
        let now = now_ns();
        st.figures.received += claims.len() as u64;
        for claim in claims {
            st.due.push_back(Ready {
                key,
                payload: None,
                claim: Some(Box::new(claim)),
                scheduled: now,
                lane,
                ended: false,
            });
        }
        self.admit(&mut st);
        Ok(())
    }

    /// Closed, and nothing more can become ready: no execution waits for a permit and no
    /// draining receive entry is left (only then may executor threads and `wait_idle` finish).
    fn finished(st: &State) -> bool {
        st.closed && st.due.is_empty() && st.entries.is_empty()
    }

    /// Hand a queued execution's outcome to its consumer (before `complete`, which may remove
    /// the entry and with it the consumer's ack channel).
    fn ack(&self, st: &State, key: u64, ack: Ack) -> bool {
        match st.entries.get(&key).map(|e| &e.source) {
            Some(Source::Queue { acks, .. }) => acks.send(ack).is_ok(),
            _ => false,
        }
    }

    fn complete(&self, st: &mut State, key: u64, status: i32) {
        st.in_flight = st.in_flight.saturating_sub(1);
        st.figures.completed += 1;
        *st.figures.by_status.entry(status).or_insert(0) += 1;
        if let Some(entry) = st.entries.get_mut(&key) {
            entry.outstanding = entry.outstanding.saturating_sub(1);
            if let Source::Receive { wake, .. } | Source::Queue { wake, .. } = &entry.source {
                wake.notify_one();
            }
            if entry.ended && entry.outstanding == 0 {
                let lane = entry.lane;
                st.entries.remove(&key);
                self.push_marker(st, key, lane);
                if Self::finished(st) {
                    self.lanes[SYNC].notify_all();
                    self.lanes[ASYNC].notify_all();
                }
            }
        }
    }
}

impl Entry {
    fn drains(&self) -> bool {
        matches!(self.source, Source::Receive { drain: true, .. })
    }
}

/// Loop that turns a channel's items into executions of one entry, with back-pressure.
async fn receive_loop(
    inner: Arc<Inner>,
    key: u64,
    rx: flume::Receiver<Py<PyAny>>,
    back: flume::WeakSender<Py<PyAny>>,
    wake: Arc<Notify>,
) {
    loop {
        match inner.receive_room(key) {
            None => return,
            Some(false) => {
                wake.notified().await;
                continue;
            }
            Some(true) => {}
        }
        tokio::select! {
            item = rx.recv_async() => match item {
                Ok(item) => {
                    if let Err(item) = inner.received(key, item) {
                        // Cancelled or stopped while the item was in flight: give it back to the
                        // channel for another receiver instead of dropping it.
                        let returned = back.upgrade().map(|tx| tx.try_send(item));
                        if !matches!(returned, Some(Ok(()))) {
                            eprintln!("workhorse: an item received after its schedule ended could not be returned to the channel");
                        }
                        return;
                    }
                }
                Err(_) => {
                    let mut st = inner.state.lock();
                    inner.end_source(&mut st, key);
                    return;
                }
            },
            _ = wake.notified() => {}
        }
    }
}

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

    /// Make one execution due now; returns true when no executor thread of its lane is idle.
    fn submit(&self, key: u64, is_async: bool) -> PyResult<bool> {
        let lane = lane_of(is_async);
        let mut st = self.inner.state.lock();
        if st.closed {
            return Err(Error::Stopped.into());
        }
        st.figures.submitted += 1;
        st.due.push_back(Ready {
            key,
            payload: None,
            claim: None,
            scheduled: now_ns(),
            lane,
            ended: false,
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
    fn schedule_at(&self, key: u64, when: f64, is_async: bool) -> PyResult<()> {
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
                },
            );
        }
        timers().schedule(&self.inner, key, deadline);
        Ok(())
    }

    /// Run `key` at `first` and every `period` seconds after it (fixed rate, no drift).
    fn every(&self, key: u64, first: f64, period: f64, sync: bool, is_async: bool) -> PyResult<()> {
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
                },
            );
        }
        timers().schedule(&self.inner, key, secs_to_ns(first));
        Ok(())
    }

    /// Run `key` once per item received from `channel`; `sync` keeps one execution at a time.
    /// `drain`: the channel is a private pump's; items it still delivers after `close` are run.
    #[pyo3(signature = (key, channel, sync, is_async, drain=false))]
    fn receive(
        &self,
        key: u64,
        channel: &Channel,
        sync: bool,
        is_async: bool,
        drain: bool,
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
    #[pyo3(signature = (key, queue, worker_id, wanted, prefetch, is_async, concurrency))]
    fn consume(
        &self,
        key: u64,
        queue: &crate::queue::py::QueueCore,
        worker_id: String,
        wanted: Vec<(String, u32, u32, u32)>,
        prefetch: u32,
        is_async: bool,
        concurrency: u32,
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
                st.entries.remove(&key);
                true
            }
            // A private pump's channel: the pump stops taking from its source and closes the
            // channel; what it took still runs, then the entry ends.
            Some(entry) if entry.drains() => !entry.ended,
            Some(_) => self.inner.end_source(&mut st, key),
            None => false,
        }
    }

    /// Ready executions of one lane, as (key, item, due_at, ended) tuples: at most `max_n`, waiting
    /// up to `timeout` seconds with the GIL released. None once the dispatcher is closed and empty.
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

    /// `take` of one sync execution without the list: the tuple, `()` on timeout, None once closed.
    #[pyo3(signature = (timeout, returning=false))]
    fn take_one<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        returning: bool,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let timeout = timeout_arg("timeout", timeout)?;
        match self.wait_ready(py, false, 1, timeout, returning) {
            None => Ok(None),
            Some(batch) => match batch.into_iter().next() {
                Some(ready) => ready_tuple(py, ready).map(Some),
                None => Ok(Some(PyTuple::empty(py))),
            },
        }
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

    fn done_many(&self, done: Vec<(u64, i32)>) {
        let mut st = self.inner.state.lock();
        for (key, status) in done {
            self.inner.complete(&mut st, key, status);
        }
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

    /// Executor threads of a lane now waiting for work.
    fn idle_threads(&self, is_async: bool) -> usize {
        self.inner.state.lock().waiting[lane_of(is_async)]
    }

    /// Stop every source and return the keys of executions that never started (due or ready).
    ///
    /// Items already received from a channel are not dropped: they stay due or ready and are
    /// run by the executor threads, which go on until nothing more can become ready. Python
    /// objects are dropped only after the lock is released (a `__del__` may run Python code that
    /// calls back into this dispatcher from another thread).
    fn close(&self) -> Vec<u64> {
        let mut unstarted = Vec::new();
        let mut dropped: Vec<Ready> = Vec::new();
        {
            let mut guard = self.inner.state.lock();
            let st = &mut *guard;
            if st.closed {
                return unstarted;
            }
            st.closed = true;
            // Claimed queued jobs that never started go back to their queue, unattempted.
            self.inner.release_unstarted(st, None);
            let (keep, drop): (VecDeque<Ready>, VecDeque<Ready>) =
                st.due.drain(..).partition(|r| r.payload.is_some());
            st.due = keep;
            unstarted.extend(drop.iter().map(|r| r.key));
            dropped.extend(drop);
            for lane in [SYNC, ASYNC] {
                let (keep, drop): (VecDeque<Ready>, VecDeque<Ready>) = st.ready[lane]
                    .drain(..)
                    .partition(|r| r.payload.is_some() || r.ended);
                st.ready[lane] = keep;
                st.in_flight = st.in_flight.saturating_sub(drop.len());
                unstarted.extend(drop.iter().map(|r| r.key));
                dropped.extend(drop);
            }
            // Timers and intervals go; receive entries end (a private pump's drains first) and
            // send their end marker once their received items have run.
            st.entries.retain(|_, entry| {
                matches!(entry.source, Source::Receive { .. } | Source::Queue { .. })
            });
            let receiving: Vec<u64> = st.entries.keys().copied().collect();
            for key in receiving {
                let entry = &st.entries[&key];
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
        drop(dropped);
        unstarted
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
            let batch: Vec<Ready> = st.ready[lane].drain(..n).collect();
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

fn ready_tuple<'py>(py: Python<'py>, r: Ready) -> PyResult<Bound<'py, PyTuple>> {
    let payload = match (r.payload, r.claim) {
        (Some(p), _) => p.into_bound(py),
        (None, Some(claim)) => crate::queue::py::claim_tuple(py, *claim)?.into_any(),
        (None, None) => py.None().into_bound(py),
    };
    PyTuple::new(
        py,
        [
            r.key.into_pyobject(py)?.into_any(),
            payload,
            ns_to_secs(r.scheduled).into_pyobject(py)?.into_any(),
            pyo3::types::PyBool::new(py, r.ended).to_owned().into_any(),
        ],
    )
}

/// Timer-heap entries of the whole process (all dispatchers).
#[pyfunction]
pub(crate) fn pending_timers() -> usize {
    timers().pending()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(inner: &Inner, key: u64) {
        let mut st = inner.state.lock();
        st.due.push_back(Ready {
            key,
            payload: None,
            claim: None,
            scheduled: 0,
            lane: SYNC,
            ended: false,
        });
        inner.admit(&mut st);
    }

    fn entry(inner: &Inner, key: u64, source: Source) {
        tests_support::add_entry(inner, key, source, 10);
    }

    fn ready_keys(inner: &Inner) -> Vec<u64> {
        inner.state.lock().ready[SYNC]
            .iter()
            .map(|r| r.key)
            .collect()
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

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

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
            },
        );
    }

    pub(crate) fn ready_len(inner: &Inner) -> usize {
        inner.state.lock().ready[SYNC].len()
    }
}
