//! Durable queues: gocraft/work's model behind one contract, with a backend per URL scheme.
//!
//! `memory://` (memory.rs) keeps everything in this process with the same semantics; `redis://`
//! (redis.rs, Lua scripts in lua/) is shared by processes and machines. The consumer loop
//! (consume.rs) claims jobs for a worker's dispatcher, buffers acks and renews leases on tokio,
//! never touching the GIL; py.rs is the Python-facing `Queue` core object.
//!
//! The contract every backend keeps (DESIGN.md section 3):
//! - at-least-once: a claim gives the job a lease (deadline) and a fencing token (its attempt
//!   number); every change after a claim (finish, renew, check-in) names (id, token) and is refused
//!   as STALE when the job is no longer held under that token;
//! - unique keys are taken at enqueue and released when the job is claimed, deleted or dead;
//! - a job id is stored once: enqueuing an id that is already stored (waiting, scheduled,
//!   running, in retry or dead) enqueues nothing and answers the job as it is, so an enqueue
//!   retried after its reply was lost (or a user's own retry with `job_id=`) makes one job;
//! - times are epoch seconds from the backend's clock; delays are relative to it, and an
//!   absolute due time (`at`) is compared with it, never with the enqueuing machine's clock.

pub(crate) mod consume;
pub(crate) mod cron;
pub(crate) mod memory;
pub(crate) mod py;
pub(crate) mod redis;

use crate::errors::{Error, Result};
use std::sync::Arc;

/// A job as stored: what the client API and the handler see.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JobData {
    pub id: String,
    pub name: String,
    /// The arguments as a JSON object, checked and encoded by Python.
    pub args: String,
    pub enqueued_at: f64,
    pub run_at: f64,
    /// Failed runs so far.
    pub fails: u32,
    pub last_error: Option<String>,
    pub unique_key: Option<String>,
    pub died_at: Option<f64>,
    pub reason: Option<String>,
    /// Context that travels with the job (a JSON object: the enqueuer's request id, its trace
    /// context), or None.
    pub meta: Option<String>,
}

/// One job to enqueue. `delay` is relative to the backend's clock (0 = ready now).
#[derive(Clone, Debug)]
pub(crate) struct NewJob {
    pub id: String,
    pub name: String,
    pub args: String,
    pub delay: f64,
    /// Due at this epoch time of the backend's clock (`enqueue_at`); `delay` is then ignored.
    pub at: Option<f64>,
    /// Unique while waiting: the enqueue is refused (None) while a job holds this key.
    pub unique_key: Option<String>,
    /// See `JobData::meta`.
    pub meta: Option<String>,
}

/// What a worker asks for: a job name it has a handler for, its priority and its concurrency cap
/// across processes (0 = none).
#[derive(Clone, Debug)]
pub(crate) struct Wanted {
    pub name: String,
    pub priority: u32,
    pub max_concurrency: u32,
    /// Failed runs after which the job is dead: a run lost with its worker counts as one.
    pub max_fails: u32,
}

/// A claimed job: the lease is (id, token) until `lease_until`.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub job: JobData,
    pub token: u64,
}

/// How a run ended, decided by Python (which knows max_fails, skip_dead and backoff).
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// Done: the job is gone.
    Complete,
    /// A failure: fails + 1, into the retry set after `delay` seconds.
    Retry { delay: f64, error: String },
    /// A failure past max_fails, or a dead result: fails + 1 (for a failure), into the dead set.
    Dead { reason: String, failed: bool },
    /// A failure past max_fails with skip_dead: the job is deleted.
    Discard,
    /// Not a failure: into the scheduled set after `delay`, args replaced if given.
    Reschedule { delay: f64, args: Option<String> },
    /// Never ran or was cancelled at stop: back to its ready list, the attempt not counted.
    Release,
}

/// A finished run on its way to the backend.
#[derive(Clone, Debug)]
pub(crate) struct Ack {
    pub id: String,
    pub name: String,
    pub token: u64,
    pub outcome: Outcome,
}

/// Which set a client page reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobSet {
    Scheduled,
    Retry,
    Dead,
}

impl JobSet {
    pub(crate) fn parse(name: &str) -> Result<Self> {
        match name {
            "scheduled" => Ok(JobSet::Scheduled),
            "retry" => Ok(JobSet::Retry),
            "dead" => Ok(JobSet::Dead),
            other => Err(Error::Invalid(format!(
                "job set must be scheduled, retry or dead, got {other:?}"
            ))),
        }
    }
}

/// Per-name figures for the client.
#[derive(Clone, Debug, Default)]
pub(crate) struct QueueInfo {
    pub name: String,
    pub ready: u64,
    pub scheduled: u64,
    pub retry: u64,
    pub dead: u64,
    /// Seconds the oldest ready job has waited.
    pub latency: f64,
    pub paused: bool,
    pub running: u64,
}

/// A worker pool's heartbeat.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pool {
    pub worker_id: String,
    pub pid: u32,
    pub host: String,
    pub names: Vec<String>,
    pub concurrency: u32,
    pub started_at: f64,
    pub heartbeat_at: f64,
}

/// A job running now, with its last check-in.
#[derive(Clone, Debug, Default)]
pub(crate) struct Busy {
    pub worker_id: String,
    pub job_id: String,
    pub name: String,
    pub started_at: f64,
    pub checkin: Option<String>,
    pub checkin_at: Option<f64>,
}

/// Counters kept by the backend (shared by every process on Redis).
#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub processed: u64,
    pub failed: u64,
    pub dead: u64,
    pub stale_acks: u64,
    pub reaped: u64,
    /// Times Redis was found to have lost its data (a new epoch key).
    pub data_losses: u64,
}

/// What a consumer waits on for new work, per backend.
pub(crate) enum Waiter {
    Memory(tokio::sync::watch::Receiver<u64>),
    Redis(redis::RedisWaiter),
}

impl Waiter {
    /// Mark what is there now as seen: `wait_for_work` then returns on anything newer.
    pub(crate) fn mark_seen(&mut self) {
        match self {
            Waiter::Memory(rx) => {
                rx.borrow_and_update();
            }
            // Redis keeps one token per waiter on its wake list; a wait that was dropped with its
            // BLPOP still blocking moves to a fresh list first.
            Waiter::Redis(w) => w.rotate_if_orphaned(),
        }
    }
}

/// The backends. An enum rather than a trait object: each method is a `match`, and the async
/// methods need no boxing.
#[derive(Clone)]
pub(crate) enum Store {
    Memory(Arc<memory::Memory>),
    Redis(Arc<redis::RedisStore>),
}

/// Dispatch one call to the backend in use.
macro_rules! on_store {
    ($store:expr, $b:ident => $call:expr) => {
        match $store {
            Store::Memory($b) => $call,
            Store::Redis($b) => $call,
        }
    };
}

impl Store {
    /// The backend for a URL; `namespace` prefixes (and hash-tags) every Redis key.
    #[cfg(test)]
    pub(crate) fn open(url: &str, namespace: &str) -> Result<Self> {
        Self::open_with(url, namespace, redis::DEFAULT_COMMAND_TIMEOUT)
    }

    /// `open` with the seconds a backend command may take (Redis: then it fails and its
    /// connection is replaced).
    pub(crate) fn open_with(url: &str, namespace: &str, command_timeout: f64) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("memory://") {
            return Ok(Store::Memory(memory::Memory::named(rest, namespace)));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Store::Redis(Arc::new(redis::RedisStore::open_with(
                url,
                namespace,
                command_timeout,
            )?)));
        }
        let scheme = url.split("://").next().unwrap_or(url);
        // Never echo a URL that may hold a password.
        Err(Error::Invalid(format!(
            "queue URL scheme must be memory://, redis:// or rediss://, got {scheme:?}"
        )))
    }

    pub(crate) async fn now(&self) -> Result<f64> {
        on_store!(self, b => b.now().await)
    }

    /// Warn once when the backend may evict the queue's keys (Redis's `maxmemory-policy` other
    /// than `noeviction`); Err when the backend could not be asked (try again later).
    pub(crate) async fn check_eviction(&self) -> Result<()> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(b) => b.check_eviction().await.map(drop),
        }
    }

    pub(crate) async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Option<JobData>>> {
        on_store!(self, b => b.enqueue(jobs).await)
    }

    /// Enqueue `job` once for the cron slot `slot` (any number of processes may try).
    pub(crate) async fn enqueue_slot(&self, slot: String, job: NewJob) -> Result<bool> {
        on_store!(self, b => b.enqueue_slot(slot, job).await)
    }

    /// Claim up to `max` jobs. `waiter`: the consumer's, registered for wake-ups in the same
    /// step, so an enqueue right after an empty fetch still wakes it. `request`: the fetch's id
    /// ("" for none), the same when a fetch whose reply was lost is sent again: Redis then
    /// answers the claims the first one made (those still held) instead of leaving them leased
    /// to nobody until the reaper counts them as failures.
    pub(crate) async fn fetch(
        &self,
        worker_id: &str,
        wanted: &[Wanted],
        max: usize,
        lease: f64,
        waiter: &Waiter,
        request: &str,
    ) -> Result<Vec<Claim>> {
        match (self, waiter) {
            (Store::Memory(b), _) => b.fetch(worker_id, wanted, max, lease).await,
            (Store::Redis(b), Waiter::Redis(w)) => {
                b.fetch_request(worker_id, wanted, max, lease, w.id(), request)
                    .await
            }
            (Store::Redis(b), _) => {
                b.fetch_request(worker_id, wanted, max, lease, "", request)
                    .await
            }
        }
    }

    /// Apply finished runs; per ack, false when it was STALE (refused, counted).
    pub(crate) async fn finish(&self, acks: Vec<Ack>) -> Result<Vec<bool>> {
        on_store!(self, b => b.finish(acks).await)
    }

    /// Extend the leases of runs still going; per run, false when the lease was lost.
    pub(crate) async fn renew(
        &self,
        held: &[(String, String, u64)],
        lease: f64,
    ) -> Result<Vec<bool>> {
        on_store!(self, b => b.renew(held, lease).await)
    }

    /// Requeue runs whose lease expired (a crashed or frozen worker); returns how many.
    pub(crate) async fn reap(&self) -> Result<u64> {
        on_store!(self, b => b.reap().await)
    }

    /// A consumer's handle for `wait_for_work`: wake-ups between two looks are not missed.
    pub(crate) fn waiter(&self) -> Waiter {
        match self {
            Store::Memory(b) => Waiter::Memory(b.waiter()),
            Store::Redis(b) => Waiter::Redis(b.waiter()),
        }
    }

    /// Wait until work may be ready (an enqueue, a release, or the earliest scheduled job is
    /// due), at most `max` seconds.
    pub(crate) async fn wait_for_work(&self, waiter: &mut Waiter, max: f64) {
        match (self, waiter) {
            (Store::Memory(b), Waiter::Memory(rx)) => b.wait_for_work(rx, max).await,
            (Store::Redis(b), Waiter::Redis(w)) => b.wait_for_work(w, max).await,
            _ => unreachable!("a waiter is made by the store it waits on"),
        }
    }

    pub(crate) async fn checkin(&self, id: &str, token: u64, message: String) -> Result<bool> {
        on_store!(self, b => b.checkin(id, token, message).await)
    }

    pub(crate) async fn heartbeat(&self, pool: Pool, alive: bool) -> Result<()> {
        on_store!(self, b => b.heartbeat(pool, alive).await)
    }

    pub(crate) async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        on_store!(self, b => b.set_paused(name, paused).await)
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueInfo>> {
        on_store!(self, b => b.queues().await)
    }

    pub(crate) async fn page(
        &self,
        set: JobSet,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<JobData>, u64)> {
        on_store!(self, b => b.page(set, page, per_page).await)
    }

    /// Move one dead job (or all, `id` None) back to ready; returns how many.
    pub(crate) async fn retry_dead(&self, id: Option<String>) -> Result<u64> {
        on_store!(self, b => b.retry_dead(id).await)
    }

    /// Delete one job (or all, `id` None) of a set; returns how many.
    pub(crate) async fn delete(&self, set: JobSet, id: Option<String>) -> Result<u64> {
        on_store!(self, b => b.delete(set, id).await)
    }

    pub(crate) async fn pools(&self) -> Result<Vec<Pool>> {
        on_store!(self, b => b.pools().await)
    }

    pub(crate) async fn busy(&self) -> Result<Vec<Busy>> {
        on_store!(self, b => b.busy().await)
    }

    pub(crate) async fn stats(&self) -> Result<Stats> {
        on_store!(self, b => b.stats().await)
    }
}

/// A new job id: 128 random bits in hex (unique across processes and machines).
pub(crate) fn new_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// gocraft's weighted sampling: names in a random order where a name's chance to come first is
/// its priority over the total (an exponential race, one draw per name).
pub(crate) fn sample_order(wanted: &[Wanted]) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = wanted
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let u = fastrand::f64().max(f64::MIN_POSITIVE);
            (-u.ln() / f64::from(w.priority.max(1)), i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    keyed.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_names_come_first_more_often() {
        let wanted = vec![
            Wanted {
                name: "low".into(),
                priority: 1,
                max_concurrency: 0,
                max_fails: 4,
            },
            Wanted {
                name: "high".into(),
                priority: 9,
                max_concurrency: 0,
                max_fails: 4,
            },
        ];
        let firsts = (0..10_000)
            .filter(|_| sample_order(&wanted)[0] == 1)
            .count();
        // Expected 90%; the bound is loose so the test cannot flake.
        assert!((8_500..9_500).contains(&firsts), "{firsts}");
    }

    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
