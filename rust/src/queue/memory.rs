//! `memory://`: the queue contract in this process, for tests and single-process programs.
//!
//! One mutex over plain maps; a watch channel tells consumers that work may be ready (an enqueue,
//! a release), and they sleep until the earliest scheduled job otherwise. `memory://NAME` is
//! shared by name within the process; `memory://` is a new store per call.

use super::{
    sample_order, Ack, Busy, Claim, JobData, JobSet, NewJob, Outcome, Pool, QueueInfo, Stats,
    Wanted,
};
use crate::errors::Result;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Dead jobs kept at most (the oldest go first), as gocraft and Sidekiq cap theirs.
const DEAD_MAX: usize = 10_000;

/// A time as an ordered key: epoch seconds are positive, so their bit patterns sort like them.
type TimeKey = (u64, String);

fn key(at: f64, id: &str) -> TimeKey {
    (at.max(0.0).to_bits(), id.to_string())
}

struct Stored {
    data: JobData,
    /// Claims so far: the fencing token of the current one.
    attempt: u64,
}

struct Running {
    name: String,
    token: u64,
    lease_until: f64,
    worker_id: String,
    started_at: f64,
    max_fails: u32,
    checkin: Option<String>,
    checkin_at: Option<f64>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Stored>,
    ready: HashMap<String, VecDeque<String>>,
    scheduled: BTreeSet<TimeKey>,
    retry: BTreeSet<TimeKey>,
    dead: BTreeSet<TimeKey>,
    running: HashMap<String, Running>,
    paused: HashSet<String>,
    unique: HashMap<String, String>,
    slots: HashSet<String>,
    pools: HashMap<String, Pool>,
    stats: Stats,
}

pub(crate) struct Memory {
    state: Mutex<State>,
    /// Bumped whenever work may have become ready; consumers wait on a receiver of it.
    work: watch::Sender<u64>,
}

static NAMED: Mutex<Option<HashMap<String, Weak<Memory>>>> = Mutex::new(None);

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Memory {
    /// A new store (empty name), or the live store of that name in this process.
    pub(crate) fn named(name: &str, namespace: &str) -> Arc<Self> {
        if name.is_empty() {
            return Arc::new(Self::new());
        }
        let mut named = NAMED.lock();
        let map = named.get_or_insert_with(HashMap::new);
        map.retain(|_, store| store.strong_count() > 0);
        let full = format!("{namespace}/{name}");
        if let Some(store) = map.get(&full).and_then(Weak::upgrade) {
            return store;
        }
        let store = Arc::new(Self::new());
        map.insert(full, Arc::downgrade(&store));
        store
    }

    fn new() -> Self {
        Memory {
            state: Mutex::new(State::default()),
            work: watch::channel(0).0,
        }
    }

    fn wake(&self) {
        self.work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that `wait_for_work` waits on; changes since its last look are not missed.
    pub(crate) fn waiter(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    pub(crate) async fn now(&self) -> Result<f64> {
        Ok(now())
    }

    pub(crate) async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Option<JobData>>> {
        let now = now();
        let out = {
            let mut st = self.state.lock();
            jobs.into_iter()
                .map(|job| st.enqueue(job, now))
                .collect::<Vec<_>>()
        };
        self.wake();
        Ok(out)
    }

    pub(crate) async fn enqueue_slot(&self, slot: String, job: NewJob) -> Result<bool> {
        let now = now();
        let added = {
            let mut st = self.state.lock();
            st.slots.insert(slot) && st.enqueue(job, now).is_some()
        };
        if added {
            self.wake();
        }
        Ok(added)
    }

    pub(crate) async fn fetch(
        &self,
        worker_id: &str,
        wanted: &[Wanted],
        max: usize,
        lease: f64,
    ) -> Result<Vec<Claim>> {
        let now = now();
        let mut st = self.state.lock();
        st.promote(now);
        let mut claims = Vec::new();
        for i in sample_order(wanted) {
            if claims.len() >= max {
                break;
            }
            let w = &wanted[i];
            if st.paused.contains(&w.name) {
                continue;
            }
            let mut room = max - claims.len();
            if w.max_concurrency > 0 {
                let running = st.running.values().filter(|r| r.name == w.name).count();
                room = room.min((w.max_concurrency as usize).saturating_sub(running));
            }
            for _ in 0..room {
                let Some(id) = st.ready.get_mut(&w.name).and_then(VecDeque::pop_front) else {
                    break;
                };
                let Some(stored) = st.jobs.get_mut(&id) else {
                    continue; // deleted while ready
                };
                stored.attempt += 1;
                let token = stored.attempt;
                let job = stored.data.clone();
                if let Some(unique) = &job.unique_key {
                    if st.unique.get(unique) == Some(&id) {
                        st.unique.remove(unique);
                    }
                }
                st.running.insert(
                    id,
                    Running {
                        name: w.name.clone(),
                        token,
                        lease_until: now + lease,
                        worker_id: worker_id.to_string(),
                        started_at: now,
                        max_fails: w.max_fails,
                        checkin: None,
                        checkin_at: None,
                    },
                );
                claims.push(Claim { job, token });
            }
        }
        Ok(claims)
    }

    pub(crate) async fn finish(&self, acks: Vec<Ack>) -> Result<Vec<bool>> {
        let now = now();
        let mut released = false;
        let out = {
            let mut st = self.state.lock();
            acks.into_iter()
                .map(|ack| {
                    released |= matches!(ack.outcome, Outcome::Release);
                    st.finish(ack, now)
                })
                .collect()
        };
        if released {
            self.wake();
        }
        Ok(out)
    }

    pub(crate) async fn renew(
        &self,
        held: &[(String, String, u64)],
        lease: f64,
    ) -> Result<Vec<bool>> {
        let now = now();
        let mut st = self.state.lock();
        Ok(held
            .iter()
            .map(|(id, _name, token)| match st.running.get_mut(id) {
                Some(run) if run.token == *token => {
                    run.lease_until = run.lease_until.max(now + lease);
                    true
                }
                _ => false,
            })
            .collect())
    }

    pub(crate) async fn reap(&self) -> Result<u64> {
        let now = now();
        let reaped = self.state.lock().reap(now);
        if reaped > 0 {
            self.wake();
        }
        Ok(reaped)
    }

    pub(crate) async fn wait_for_work(&self, waiter: &mut watch::Receiver<u64>, max: f64) {
        let until_due = {
            let st = self.state.lock();
            let earliest = [st.scheduled.first(), st.retry.first()]
                .into_iter()
                .flatten()
                .map(|(bits, _)| f64::from_bits(*bits))
                .fold(f64::INFINITY, f64::min);
            earliest - now()
        };
        let wait = until_due.min(max).max(0.0);
        if wait <= 0.0 {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs_f64(wait), waiter.changed()).await;
    }

    pub(crate) async fn checkin(&self, id: &str, token: u64, message: String) -> Result<bool> {
        let mut st = self.state.lock();
        Ok(match st.running.get_mut(id) {
            Some(run) if run.token == token => {
                run.checkin = Some(message);
                run.checkin_at = Some(now());
                true
            }
            _ => false,
        })
    }

    pub(crate) async fn heartbeat(&self, mut pool: Pool, alive: bool) -> Result<()> {
        let mut st = self.state.lock();
        if alive {
            pool.heartbeat_at = now();
            st.pools.insert(pool.worker_id.clone(), pool);
        } else {
            st.pools.remove(&pool.worker_id);
        }
        Ok(())
    }

    pub(crate) async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        {
            let mut st = self.state.lock();
            if paused {
                st.paused.insert(name.to_string());
            } else {
                st.paused.remove(name);
            }
        }
        if !paused {
            self.wake();
        }
        Ok(())
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let now = now();
        let mut st = self.state.lock();
        st.promote(now);
        let mut by_name: HashMap<String, QueueInfo> = HashMap::new();
        for (name, ids) in &st.ready {
            let oldest = ids
                .front()
                .and_then(|id| st.jobs.get(id))
                .map_or(0.0, |s| (now - s.data.run_at).max(0.0));
            let info = info_of(&mut by_name, name);
            info.ready = ids.len() as u64;
            info.latency = oldest;
        }
        let sets = [
            (&st.scheduled, JobSet::Scheduled),
            (&st.retry, JobSet::Retry),
            (&st.dead, JobSet::Dead),
        ];
        for (set, which) in sets {
            for (_, id) in set {
                let Some(stored) = st.jobs.get(id) else {
                    continue;
                };
                let info = info_of(&mut by_name, &stored.data.name);
                match which {
                    JobSet::Scheduled => info.scheduled += 1,
                    JobSet::Retry => info.retry += 1,
                    JobSet::Dead => info.dead += 1,
                }
            }
        }
        for run in st.running.values() {
            info_of(&mut by_name, &run.name).running += 1;
        }
        for name in &st.paused {
            info_of(&mut by_name, name).paused = true;
        }
        let mut out: Vec<QueueInfo> = by_name.into_values().collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) async fn page(
        &self,
        set: JobSet,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<JobData>, u64)> {
        let st = self.state.lock();
        let keys = st.set(set);
        let total = keys.len() as u64;
        let skip = page.saturating_sub(1).saturating_mul(per_page);
        let jobs = keys
            .iter()
            .skip(skip)
            .take(per_page)
            .filter_map(|(_, id)| st.jobs.get(id).map(|s| s.data.clone()))
            .collect();
        Ok((jobs, total))
    }

    pub(crate) async fn retry_dead(&self, id: Option<String>) -> Result<u64> {
        let now = now();
        let moved = {
            let mut st = self.state.lock();
            let ids: Vec<String> = match id {
                Some(id) => vec![id],
                None => st.dead.iter().map(|(_, id)| id.clone()).collect(),
            };
            let mut moved = 0;
            for id in ids {
                let Some(stored) = st.jobs.get_mut(&id) else {
                    continue;
                };
                let Some(died) = stored.data.died_at.take() else {
                    continue; // not dead
                };
                stored.data.reason = None;
                stored.data.fails = 0;
                stored.data.run_at = now;
                let name = stored.data.name.clone();
                st.dead.remove(&key(died, &id));
                st.ready.entry(name).or_default().push_back(id);
                moved += 1;
            }
            moved
        };
        if moved > 0 {
            self.wake();
        }
        Ok(moved)
    }

    pub(crate) async fn delete(&self, set: JobSet, id: Option<String>) -> Result<u64> {
        let mut st = self.state.lock();
        let keys: Vec<TimeKey> = match &id {
            Some(id) => st
                .set(set)
                .iter()
                .filter(|(_, k)| k == id)
                .cloned()
                .collect(),
            None => st.set(set).iter().cloned().collect(),
        };
        for k in &keys {
            st.set_mut(set).remove(k);
            if let Some(stored) = st.jobs.remove(&k.1) {
                st.release_unique(&stored.data);
            }
        }
        Ok(keys.len() as u64)
    }

    pub(crate) async fn pools(&self) -> Result<Vec<Pool>> {
        let mut pools: Vec<Pool> = self.state.lock().pools.values().cloned().collect();
        pools.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(pools)
    }

    pub(crate) async fn busy(&self) -> Result<Vec<Busy>> {
        let st = self.state.lock();
        let mut busy: Vec<Busy> = st
            .running
            .iter()
            .map(|(id, run)| Busy {
                worker_id: run.worker_id.clone(),
                job_id: id.clone(),
                name: run.name.clone(),
                started_at: run.started_at,
                checkin: run.checkin.clone(),
                checkin_at: run.checkin_at,
            })
            .collect();
        busy.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
        Ok(busy)
    }

    pub(crate) async fn stats(&self) -> Result<Stats> {
        Ok(self.state.lock().stats.clone())
    }
}

fn info_of<'a>(by_name: &'a mut HashMap<String, QueueInfo>, name: &str) -> &'a mut QueueInfo {
    by_name
        .entry(name.to_string())
        .or_insert_with(|| QueueInfo {
            name: name.to_string(),
            ..QueueInfo::default()
        })
}

impl State {
    fn enqueue(&mut self, job: NewJob, now: f64) -> Option<JobData> {
        if let Some(stored) = self.jobs.get(&job.id) {
            // Stored already (a retried enqueue, a user's own id): one job, answered as it is.
            return Some(stored.data.clone());
        }
        if let Some(unique) = &job.unique_key {
            if self.unique.contains_key(unique) {
                return None;
            }
            self.unique.insert(unique.clone(), job.id.clone());
        }
        let delay = match job.at {
            Some(at) => (at - now).max(0.0),
            None => job.delay.max(0.0),
        };
        let data = JobData {
            id: job.id.clone(),
            name: job.name.clone(),
            args: job.args,
            enqueued_at: now,
            run_at: now + delay,
            fails: 0,
            last_error: None,
            unique_key: job.unique_key,
            died_at: None,
            reason: None,
            meta: job.meta,
        };
        if delay > 0.0 {
            self.scheduled.insert(key(now + delay, &job.id));
        } else {
            self.ready
                .entry(job.name)
                .or_default()
                .push_back(job.id.clone());
        }
        self.jobs.insert(
            job.id,
            Stored {
                data: data.clone(),
                attempt: 0,
            },
        );
        Some(data)
    }

    /// Move scheduled and retry jobs that are due to their ready lists.
    fn promote(&mut self, now: f64) {
        for which in [JobSet::Scheduled, JobSet::Retry] {
            loop {
                let set = self.set_mut(which);
                let Some(first) = set.first() else { break };
                if f64::from_bits(first.0) > now {
                    break;
                }
                let (_, id) = set.pop_first().expect("first exists");
                if let Some(stored) = self.jobs.get(&id) {
                    let name = stored.data.name.clone();
                    self.ready.entry(name).or_default().push_back(id);
                }
            }
        }
    }

    fn finish(&mut self, ack: Ack, now: f64) -> bool {
        match self.running.get(&ack.id) {
            Some(run) if run.token == ack.token => {}
            _ => {
                self.stats.stale_acks += 1;
                return false;
            }
        }
        self.running.remove(&ack.id);
        let Some(stored) = self.jobs.get_mut(&ack.id) else {
            return true; // deleted while running: nothing left to update
        };
        let data = &mut stored.data;
        match ack.outcome {
            Outcome::Complete => {
                self.stats.processed += 1;
                self.jobs.remove(&ack.id);
            }
            Outcome::Retry { delay, error } => {
                self.stats.processed += 1;
                self.stats.failed += 1;
                data.fails += 1;
                data.last_error = Some(error);
                data.run_at = now + delay.max(0.0);
                self.retry.insert(key(data.run_at, &ack.id));
            }
            Outcome::Dead { reason, failed } => {
                self.stats.processed += 1;
                self.stats.dead += 1;
                if failed {
                    self.stats.failed += 1;
                    data.fails += 1;
                    data.last_error = Some(reason.clone());
                }
                data.died_at = Some(now);
                data.reason = Some(reason);
                self.dead.insert(key(now, &ack.id));
                self.trim_dead();
            }
            Outcome::Discard => {
                self.stats.processed += 1;
                self.stats.failed += 1;
                self.jobs.remove(&ack.id);
            }
            Outcome::Reschedule { delay, args } => {
                self.stats.processed += 1;
                if let Some(args) = args {
                    data.args = args;
                }
                data.run_at = now + delay.max(0.0);
                self.scheduled.insert(key(data.run_at, &ack.id));
            }
            Outcome::Release => {
                data.run_at = now;
                self.ready.entry(ack.name).or_default().push_front(ack.id);
            }
        }
        true
    }

    fn reap(&mut self, now: f64) -> u64 {
        let expired: Vec<String> = self
            .running
            .iter()
            .filter(|(_, run)| run.lease_until < now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            let run = self.running.remove(id).expect("listed above");
            self.stats.reaped += 1;
            let Some(stored) = self.jobs.get_mut(id) else {
                continue;
            };
            // A lost run counts as a failed one, so a job that kills its worker every time ends
            // dead instead of looping forever (dramatiq #213).
            let data = &mut stored.data;
            data.fails += 1;
            data.last_error = Some("lease expired: the worker running it was lost".into());
            if run.max_fails > 0 && data.fails >= run.max_fails {
                data.died_at = Some(now);
                data.reason = data.last_error.clone();
                self.stats.dead += 1;
                self.dead.insert(key(now, id));
            } else {
                data.run_at = now;
                self.ready
                    .entry(run.name)
                    .or_default()
                    .push_front(id.clone());
            }
        }
        expired.len() as u64
    }

    fn trim_dead(&mut self) {
        while self.dead.len() > DEAD_MAX {
            if let Some((_, id)) = self.dead.pop_first() {
                self.jobs.remove(&id);
            }
        }
    }

    fn release_unique(&mut self, data: &JobData) {
        if let Some(unique) = &data.unique_key {
            if self.unique.get(unique) == Some(&data.id) {
                self.unique.remove(unique);
            }
        }
    }

    fn set(&self, set: JobSet) -> &BTreeSet<TimeKey> {
        match set {
            JobSet::Scheduled => &self.scheduled,
            JobSet::Retry => &self.retry,
            JobSet::Dead => &self.dead,
        }
    }

    fn set_mut(&mut self, set: JobSet) -> &mut BTreeSet<TimeKey> {
        match set {
            JobSet::Scheduled => &mut self.scheduled,
            JobSet::Retry => &mut self.retry,
            JobSet::Dead => &mut self.dead,
        }
    }
}
