//! A worker's consumer loop: claims queued jobs into its dispatcher while there is room, sends
//! finished runs back in batches, renews the leases of runs still going, reaps expired leases and
//! heartbeats. One tokio task per worker; it never takes the GIL.
//!
//! It ends once the dispatcher closed its entry and every claimed job was acked (the entry drops
//! the ack channel's sender when its last execution completes), then says goodbye to the pool.
//!
//! A panic in the loop or in its lease renewer is not survived quietly (RELIABILITY.md row 20):
//! a process that looks alive but claims nothing, or claims jobs whose leases nobody renews, is
//! worse than one that exits. The supervisor stops the other task, fails the lane in the
//! dispatcher (the entry ends, claimed jobs not started are released, Python is told and cancels
//! the runs still going; `workhorse worker` exits 70), and sends the outcomes of the runs that
//! end afterwards, fenced like every ack.

use super::{Ack, Claim, Outcome, Pool, Store, Wanted};
use crate::dispatch::Inner;
use crate::failpoints::failpoint;
use crate::runtime::handle;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::{JoinError, JoinHandle};

/// Heartbeats of a worker pool, for the client and dashboard.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest sleep between two looks when nothing wakes the loop.
const IDLE_LOOK: f64 = 1.0;
/// Back-off after a backend error (an unreachable Redis), doubling up to the cap.
const ERROR_BACKOFF: (f64, f64) = (0.05, 5.0);

/// What a consumer needs to know, made by the Python-facing queue object.
pub(crate) struct Consumer {
    pub store: Store,
    pub worker_id: String,
    pub wanted: Vec<Wanted>,
    pub lease: f64,
    pub reaper_interval: f64,
    pub pool: Pool,
}

/// Start the consumer loop of dispatcher entry `key`, its lease renewer and their supervisor.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    key: u64,
    consumer: Consumer,
    acks: flume::Receiver<Ack>,
    wake: Arc<Notify>,
) {
    let runtime = handle();
    // Claims handed to the dispatcher and not yet acked: their leases are renewed by a task of
    // their own, so a backend call of the loop that hangs (Redis paused) never delays them.
    let held: Arc<Mutex<HashMap<String, Held>>> = Arc::default();
    let renewer = runtime.spawn(renew_loop(
        inner.clone(),
        consumer.store.clone(),
        consumer.lease,
        held.clone(),
    ));
    let salvage = Salvage {
        store: consumer.store.clone(),
        lease: consumer.lease,
        pool: consumer.pool.clone(),
        acks: acks.clone(),
    };
    let task = runtime.spawn(run(inner.clone(), key, consumer, acks, wake, held));
    runtime.spawn(supervise(inner, key, task, renewer, salvage));
}

/// Wait for the consumer loop to end (a stop) and stop the renewer then; if either task dies
/// first, fail the lane and salvage what can be.
async fn supervise(
    inner: Arc<Inner>,
    key: u64,
    mut consumer: JoinHandle<()>,
    mut renewer: JoinHandle<()>,
    salvage: Salvage,
) {
    let failure = tokio::select! {
        ended = &mut consumer => {
            renewer.abort();
            ended.err().map(|err| failure("queue consumer", err))
        }
        ended = &mut renewer => {
            consumer.abort();
            Some(match ended {
                Ok(()) => "the core's lease renewer ended".to_string(),
                Err(err) => failure("lease renewer", err),
            })
        }
    };
    if let Some(what) = failure {
        inner.queue_failed(key, what);
        salvage.run().await;
    }
    inner.consumer_done();
}

/// A task that ended with an error: reported (and counted) if it panicked; what to tell Python.
fn failure(place: &str, err: JoinError) -> String {
    if !err.is_panic() {
        return format!("the core's {place} was cancelled");
    }
    let panic = err.into_panic();
    crate::errors::report_panic(place, panic.as_ref());
    format!(
        "panic in the core's {place}: {}",
        crate::errors::panic_message(panic.as_ref())
    )
}

/// What a failed lane still does: send the outcomes of runs that end after the failure (Python
/// cancels them, so most are releases), fenced like every ack, until the dispatcher closes the
/// channel (the entry's last run ended); then leave the pool list.
struct Salvage {
    store: Store,
    lease: f64,
    pool: Pool,
    acks: flume::Receiver<Ack>,
}

impl Salvage {
    async fn run(self) {
        while let Ok(first) = self.acks.recv_async().await {
            let mut batch = vec![first];
            batch.extend(self.acks.try_iter());
            let since = Instant::now();
            let mut backoff = ERROR_BACKOFF.0;
            while let Err(err) = self.store.finish(batch.clone()).await {
                if since.elapsed().as_secs_f64() >= self.lease {
                    eprintln!(
                        "workhorse: could not ack {} jobs after the consumer failed ({err:?}); \
                         they will run again once their lease expires",
                        batch.len()
                    );
                    break;
                }
                backoff = sleep_backoff(backoff).await;
            }
        }
        let goodbye = self.store.heartbeat(self.pool, false);
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }
}

async fn run(
    inner: Arc<Inner>,
    key: u64,
    c: Consumer,
    acks: flume::Receiver<Ack>,
    wake: Arc<Notify>,
    held: Arc<Mutex<HashMap<String, Held>>>,
) {
    let mut waiter = c.store.waiter();
    let mut pending: Vec<Ack> = Vec::new();
    let reap_every = Duration::from_secs_f64(c.reaper_interval.clamp(0.01, 3600.0));
    // Reapers of several processes spread out instead of all looking at once.
    let mut next_reap = Instant::now() + reap_every.mul_f64(fastrand::f64());
    let mut next_beat = Instant::now();
    let mut backoff = ERROR_BACKOFF.0;
    // The next fetch's id: kept across a failed fetch, so sending it again is recognised.
    let mut request = super::new_id();
    let mut acks_open = true;
    let mut stopping_since: Option<Instant> = None;
    // Redis's eviction policy is looked at with the first heartbeat that reaches it.
    let mut policy_checked = false;
    loop {
        failpoint!("consume_loop");
        // Finished runs first: they free room and end leases.
        while let Ok(ack) = acks.try_recv() {
            pending.push(ack);
        }
        if !pending.is_empty() {
            failpoint!("before_ack");
            match c.store.finish(pending.clone()).await {
                Ok(results) => {
                    let mut held = held.lock();
                    for (ack, fresh) in pending.drain(..).zip(results) {
                        held.remove(&ack.id);
                        if !fresh {
                            eprintln!(
                                "workhorse: the ack of job {} (attempt {}) was refused: its lease \
                                 had expired and the job was handed on",
                                ack.id, ack.token
                            );
                        }
                    }
                    backoff = ERROR_BACKOFF.0;
                }
                Err(err) => {
                    // Every run has ended once its entry dropped the last sender (this branch
                    // loops without reaching the receive below that would notice).
                    acks_open &= !acks.is_disconnected();
                    if inner.queue_room(key).is_none() && !acks_open {
                        // Stopping, and the backend does not answer: give up after a lease
                        // (by then the reaper hands those jobs on anyway) rather than hang.
                        let since = *stopping_since.get_or_insert_with(Instant::now);
                        if since.elapsed().as_secs_f64() >= c.lease {
                            eprintln!(
                                "workhorse: could not ack {} jobs before stopping ({err:?}); \
                                 they will run again once their lease expires",
                                pending.len()
                            );
                            pending.clear();
                            break;
                        }
                    }
                    eprintln!(
                        "workhorse: acking {} jobs failed, retrying: {err:?}",
                        pending.len()
                    );
                    backoff = sleep_backoff(backoff).await;
                    continue;
                }
            }
        }
        let now = Instant::now();
        if now >= next_beat {
            if c.store.heartbeat(c.pool.clone(), true).await.is_ok() && !policy_checked {
                policy_checked = c.store.check_eviction().await.is_ok();
            }
            next_beat = now + HEARTBEAT;
        }
        if now >= next_reap {
            if let Err(err) = c.store.reap().await {
                eprintln!("workhorse: reaping expired leases failed: {err:?}");
            }
            next_reap = Instant::now() + reap_every;
        }
        let until_periodic = next_reap
            .min(next_beat)
            .saturating_duration_since(Instant::now())
            .as_secs_f64();
        match inner.queue_room(key) {
            None => {
                // Stopped: nothing more is claimed; wait for the acks of the runs still going.
                if !acks_open {
                    break;
                }
                tokio::select! {
                    ack = acks.recv_async() => match ack {
                        Ok(ack) => pending.push(ack),
                        Err(_) => acks_open = false,
                    },
                    _ = tokio::time::sleep(Duration::from_secs_f64(until_periodic)) => {}
                }
            }
            Some(0) => {
                tokio::select! {
                    ack = acks.recv_async() => if let Ok(ack) = ack { pending.push(ack) },
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs_f64(until_periodic)) => {}
                }
            }
            Some(room) => {
                waiter.mark_seen();
                let fetched =
                    c.store
                        .fetch(&c.worker_id, &c.wanted, room, c.lease, &waiter, &request);
                let claims = match fetched.await {
                    Ok(claims) => {
                        backoff = ERROR_BACKOFF.0;
                        request = super::new_id();
                        claims
                    }
                    Err(err) => {
                        // Sent again with the same request id: if Redis applied this fetch and
                        // only its reply was lost, the retry gets its claims back.
                        eprintln!("workhorse: claiming jobs failed, retrying: {err:?}");
                        backoff = sleep_backoff(backoff).await;
                        continue;
                    }
                };
                if claims.is_empty() {
                    tokio::select! {
                        _ = c.store.wait_for_work(&mut waiter, until_periodic.min(IDLE_LOOK)) => {}
                        ack = acks.recv_async() => if let Ok(ack) = ack { pending.push(ack) },
                        _ = wake.notified() => {}
                    }
                    continue;
                }
                failpoint!("after_claim");
                let mut held_now = held.lock();
                for claim in &claims {
                    held_now.insert(
                        claim.job.id.clone(),
                        Held {
                            name: claim.job.name.clone(),
                            token: claim.token,
                            renewed: Instant::now(),
                        },
                    );
                }
                drop(held_now);
                if let Err(back) = inner.claimed(key, claims) {
                    // Stopped while claiming: back to the queue, unattempted.
                    pending.extend(back.into_iter().map(release));
                }
            }
        }
    }
    // Leave the pool list; a backend that does not answer does not hold up the stop.
    let goodbye = c.store.heartbeat(c.pool.clone(), false);
    let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
}

/// Renew the leases of the runs held every lease / 3, each round started on time whatever the
/// last one took; runs whose lease was lost are reported to the dispatcher (Python cancels them).
async fn renew_loop(
    inner: Arc<Inner>,
    store: Store,
    lease: f64,
    held: Arc<Mutex<HashMap<String, Held>>>,
) {
    let every = Duration::from_secs_f64((lease / 3.0).clamp(0.01, 60.0));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is at once: nothing is held yet
    loop {
        tick.tick().await;
        failpoint!("renew");
        for (id, token) in renew(&store, lease, &held).await {
            inner.lease_lost(id, token);
        }
    }
}

fn release(claim: Claim) -> Ack {
    Ack {
        id: claim.job.id,
        name: claim.job.name,
        token: claim.token,
        outcome: Outcome::Release,
    }
}

/// A claim handed to the dispatcher and not yet acked.
struct Held {
    name: String,
    token: u64,
    /// When its lease was last known good (claimed or renewed).
    renewed: Instant,
}

/// Renew the leases of the runs held; returns the runs whose lease was lost: refused by the
/// backend, or not renewed for 60% of the lease (the backend unreachable or stalled), so they
/// are cancelled before another worker may take them.
async fn renew(
    store: &Store,
    lease: f64,
    held: &Mutex<HashMap<String, Held>>,
) -> Vec<(String, u64)> {
    let mut lost = Vec::new();
    let runs: Vec<(String, String, u64)> = held
        .lock()
        .iter()
        .map(|(id, h)| (id.clone(), h.name.clone(), h.token))
        .collect();
    if runs.is_empty() {
        return lost;
    }
    let now = Instant::now();
    // A renewal that does not answer within a third of the lease (Redis paused, a half-open
    // connection) counts as failed, so the check below still runs in time.
    let patience = Duration::from_secs_f64((lease / 3.0).max(0.01));
    let renewed = match tokio::time::timeout(patience, store.renew(&runs, lease)).await {
        Ok(renewed) => renewed,
        Err(_) => Err(crate::errors::Error::Backend(
            "lease renewal timed out".into(),
        )),
    };
    let mut held = held.lock();
    match renewed {
        Ok(kept) => {
            for ((id, _, token), kept) in runs.into_iter().zip(kept) {
                if kept {
                    if let Some(h) = held.get_mut(&id) {
                        h.renewed = now;
                    }
                } else if held.remove(&id).is_some() {
                    eprintln!(
                        "workhorse: the lease of job {id} (attempt {token}) was lost; the run is \
                         cancelled and its result will be refused"
                    );
                    lost.push((id, token));
                }
            }
        }
        Err(err) => {
            eprintln!("workhorse: renewing {} leases failed: {err:?}", runs.len());
            let limit = Duration::from_secs_f64(lease * 0.6);
            held.retain(|id, h| {
                let expiring = now.duration_since(h.renewed) >= limit;
                if expiring {
                    lost.push((id.clone(), h.token));
                }
                !expiring
            });
        }
    }
    lost
}

async fn sleep_backoff(backoff: f64) -> f64 {
    tokio::time::sleep(Duration::from_secs_f64(backoff)).await;
    (backoff * 2.0).min(ERROR_BACKOFF.1)
}
