//! `redis://` and `rediss://`: the queue contract on Redis, shared by processes and machines.
//!
//! Every operation is one Lua script (lua/*.lua, each prefixed with lua/common.lua), so each is
//! atomic; every key starts with the namespace's hash tag `{ns}`, so the scripts also run on a
//! Redis Cluster slot. Time comes from Redis (`TIME`), never from the client. Keys:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:data` | hash | job id -> the job (JSON: args, times, fails, meta, ...) |
//! | `{ns}:attempts` | hash | job id -> claims so far: the fencing token of the current one |
//! | `{ns}:q:<name>` | list | ids ready to run, oldest first |
//! | `{ns}:scheduled`, `{ns}:retry` | zset | `id\|name` by due time |
//! | `{ns}:dead` | zset | `id\|name` by death time, the newest 10,000 |
//! | `{ns}:run:<name>` | zset | `id\|token` by lease deadline (ZCARD = running, max_concurrency) |
//! | `{ns}:runinfo` | hash | id -> worker, token, started_at, max_fails, lease, check-in |
//! | `{ns}:names`, `{ns}:paused` | set | job names seen; paused names |
//! | `{ns}:u:<key>` | string | the id holding a unique key while it waits |
//! | `{ns}:cron:<slot>` | string | the id enqueued for a cron slot (expires after a day) |
//! | `{ns}:enq:<request>` | string | an enqueue call's answer, for that call sent again (short-lived) |
//! | `{ns}:fetch:<request>` | string | a fetch's claims, for that fetch sent again after a lost reply (a lease) |
//! | `{ns}:pools` | hash | worker id -> heartbeat (JSON) |
//! | `{ns}:stats` | hash | processed, failed, dead, stale_acks, reaped, data_losses |
//! | `{ns}:epoch` | string | made at the first heartbeat; a new one means Redis lost its data |
//! | `{ns}:waiters`, `{ns}:wake:<id>` | zset, list | consumers waiting, one wake-up token each |
//!
//! Consumers wait with BLPOP on their own wake list (a connection of their own, so the shared
//! multiplexed one never blocks); every script that makes work ready pushes a token to each, and
//! so does one that schedules a job due before everything else scheduled (consumers sleep until
//! the earliest due time, on a local timer: Redis times blocked commands out on its cron tick).

use super::{Ack, Busy, Claim, JobData, JobSet, NewJob, Outcome, Pool, QueueInfo, Stats, Wanted};
use crate::errors::{Error, Result};
use crate::runtime::handle;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script};
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Each connection attempt gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command gives up after this unless `Queue.from_url(command_timeout=)` says otherwise.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: f64 = 5.0;
/// `now()` (the probe at open, the cron clock) gives up after this (or the command timeout).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of one enqueue call: a connection-level failure (reset, timeout) is retried once
/// with the same job ids and request id, which the script recognises (`{ns}:enq:<request>`).
const ENQUEUE_ATTEMPTS: usize = 2;
/// Jobs per enqueue script call (`enqueue_many` is chunked).
const ENQUEUE_CHUNK: usize = 1000;

const COMMON: &str = include_str!("lua/common.lua");

struct Scripts {
    enqueue: Script,
    enqueue_slot: Script,
    fetch: Script,
    finish: Script,
    renew: Script,
    reap: Script,
    client: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            enqueue_slot: script(include_str!("lua/enqueue_slot.lua")),
            fetch: script(include_str!("lua/fetch.lua")),
            finish: script(include_str!("lua/finish.lua")),
            renew: script(include_str!("lua/renew.lua")),
            reap: script(include_str!("lua/reap.lua")),
            client: script(include_str!("lua/client.lua")),
        }
    }
}

pub(crate) struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The shared connection and its generation. redis-rs's manager reconnects when a
    /// connection drops, not when a command times out (a half-open connection: the peer is
    /// gone without a FIN or RST), so a timeout replaces the whole manager, once per
    /// generation however many calls saw it.
    con: parking_lot::Mutex<(u64, ConnectionManager)>,
    /// Every command (and the connecting it may wait for) fails after this.
    timeout: Duration,
    /// The eviction policy was looked at (once per store: several consumers share it).
    policy_checked: AtomicBool,
    /// `{namespace}`: the hash tag every key starts with.
    prefix: String,
    scripts: Scripts,
    /// The `{ns}:epoch` value seen at the last heartbeat: a different one means Redis lost its
    /// data in between.
    epoch: parking_lot::Mutex<Option<String>>,
}

/// A consumer's wake-up list and its own connection for BLPOP.
pub(crate) struct RedisWaiter {
    id: String,
    con: Option<MultiplexedConnection>,
    /// A BLPOP was sent and its wait dropped before the answer (the consumer woke for an ack):
    /// it still blocks in Redis and would take the next token, so the next wait uses a new
    /// list and connection (dropping the old connection ends the orphan).
    blocked: bool,
    /// Ids given up that way: unregistered (and their lists deleted) by the next wait.
    retired: Vec<String>,
}

fn backend(err: redis::RedisError) -> Error {
    Error::Backend(format!("redis: {err}"))
}

/// A failed command: the error, and whether it failed on the connection (reset, refused, timed
/// out: it may or may not have been applied) rather than being refused by Redis.
struct Failure {
    error: Error,
    connection: bool,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        f.error
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A job as the scripts store it (JSON) -> JobData.
fn job_of(raw: &str) -> Result<JobData> {
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| Error::Backend(format!("redis: a stored job is not JSON: {e}")))?;
    let job = JobData {
        id: text(&v, "id").unwrap_or_default(),
        name: text(&v, "name").unwrap_or_default(),
        args: text(&v, "args").unwrap_or_else(|| "{}".into()),
        enqueued_at: num(&v, "enqueued_at"),
        run_at: num(&v, "run_at"),
        fails: num(&v, "fails") as u32,
        last_error: text(&v, "last_error"),
        unique_key: text(&v, "unique_key"),
        died_at: v.get("died_at").and_then(Value::as_f64),
        reason: text(&v, "reason"),
        meta: text(&v, "meta"),
    };
    Ok(job)
}

impl RedisStore {
    /// Connect lazily; the first command (Queue.from_url pings) says whether Redis is there.
    #[cfg(test)]
    pub(crate) fn open(url: &str, namespace: &str) -> Result<Self> {
        Self::open_with(url, namespace, DEFAULT_COMMAND_TIMEOUT)
    }

    /// `open` with the seconds a command may take before it fails and its connection is
    /// replaced.
    pub(crate) fn open_with(url: &str, namespace: &str, command_timeout: f64) -> Result<Self> {
        if !(command_timeout > 0.0 && command_timeout.is_finite()) {
            return Err(Error::Invalid(format!(
                "command_timeout must be > 0 seconds, got {command_timeout}"
            )));
        }
        let timeout = Duration::from_secs_f64(command_timeout);
        if namespace.is_empty() {
            // `{}` is no hash tag: the keys would spread over Redis Cluster slots.
            return Err(Error::Invalid(
                "a Redis queue needs a non-empty namespace".into(),
            ));
        }
        let client = redis::Client::open(url).map_err(|e| {
            Error::Invalid(format!(
                "invalid Redis URL (not shown: it may hold a password): {e}"
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT.min(timeout)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let con = Self::manager(&client, &config)?;
        Ok(RedisStore {
            client,
            config,
            con: parking_lot::Mutex::new((0, con)),
            timeout,
            policy_checked: AtomicBool::new(false),
            prefix: format!("{{{namespace}}}"),
            scripts: Scripts::new(),
            epoch: parking_lot::Mutex::new(None),
        })
    }

    fn manager(
        client: &redis::Client,
        config: &ConnectionManagerConfig,
    ) -> Result<ConnectionManager> {
        let runtime = handle();
        let _inside = runtime.enter();
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone()).map_err(backend)
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    /// Drop the connection of generation `generation` (it timed out) for a new one, unless
    /// another call did already. Its commands still waiting fail; its socket is closed.
    fn replace_connection(&self, generation: u64) {
        let mut con = self.con.lock();
        if con.0 != generation {
            return;
        }
        match Self::manager(&self.client, &self.config) {
            Ok(fresh) => *con = (generation + 1, fresh),
            Err(err) => eprintln!("workhorse: could not make a new Redis connection: {err:?}"),
        }
    }

    /// Run one command (`call` gets its own handle on the shared connection) within `limit`.
    /// A timeout, ours or redis-rs's, replaces the connection: a half-open one never answers.
    async fn attempt<T, F, Fut>(&self, limit: Duration, call: F) -> std::result::Result<T, Failure>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (generation, con) = self.con.lock().clone();
        match tokio::time::timeout(limit, call(con)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if err.is_timeout() {
                    self.replace_connection(generation);
                }
                let connection = err.is_io_error()
                    || err.is_timeout()
                    || err.is_connection_dropped()
                    || err.is_connection_refusal();
                Err(Failure {
                    error: backend(err),
                    connection,
                })
            }
            Err(_) => {
                self.replace_connection(generation);
                Err(Failure {
                    error: Error::Backend(format!(
                        "redis: no answer within {} s (command_timeout)",
                        limit.as_secs_f64()
                    )),
                    connection: true,
                })
            }
        }
    }

    /// `attempt` within the command timeout, the failure as an Error.
    async fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        Ok(self.attempt(self.timeout, call).await?)
    }

    async fn client_call<T: redis::FromRedisValue>(&self, args: &[&str]) -> Result<T> {
        self.client_call_within(self.timeout, args).await
    }

    async fn client_call_within<T: redis::FromRedisValue>(
        &self,
        limit: Duration,
        args: &[&str],
    ) -> Result<T> {
        let mut inv = self.scripts.client.prepare_invoke();
        inv.key(self.key("data")).arg(&self.prefix);
        for a in args {
            inv.arg(*a);
        }
        let call = |mut con: ConnectionManager| async move { inv.invoke_async(&mut con).await };
        Ok(self.attempt(limit, call).await?)
    }

    pub(crate) fn waiter(&self) -> RedisWaiter {
        RedisWaiter {
            id: super::new_id(),
            con: None,
            blocked: false,
            retired: Vec::new(),
        }
    }

    /// Redis's clock. Also the probe `Queue.from_url` makes: a server that accepts connections
    /// but never answers is an error after `PROBE_TIMEOUT`, not after every retry's timeouts.
    pub(crate) async fn now(&self) -> Result<f64> {
        let t: String = self
            .client_call_within(PROBE_TIMEOUT.min(self.timeout), &["time"])
            .await?;
        t.parse()
            .map_err(|_| Error::Backend(format!("redis: TIME gave {t:?}")))
    }

    /// Enqueue in calls of `ENQUEUE_CHUNK` jobs. A call that fails on the connection (its reply
    /// lost: it may have been applied) is sent once more, the same: its request id makes the
    /// script answer what the first one did instead of enqueuing twice, and the job ids would
    /// anyway (an id already stored is not enqueued again).
    /// Look (once per store: its consumers share it) at Redis's `maxmemory-policy` and warn
    /// unless it is `noeviction`: any other policy lets Redis delete the queue's keys under
    /// memory pressure (jobs lost, leases gone, unique keys freed early). A server that refuses
    /// CONFIG (renamed, or denied by an ACL) is not checked and nothing is said. Err only when
    /// Redis could not be reached (the caller tries again later).
    pub(crate) async fn check_eviction(&self) -> Result<Option<String>> {
        if self.policy_checked.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let config = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .to_owned();
        let call = |mut con: ConnectionManager| async move {
            config.query_async::<Vec<String>>(&mut con).await
        };
        let policy = match self.attempt(self.timeout, call).await {
            Ok(pair) => pair.get(1).cloned(),
            Err(f) if f.connection => return Err(f.error),
            Err(_) => None,
        };
        if self.policy_checked.swap(true, Ordering::Relaxed) {
            return Ok(policy);
        }
        if let Some(p) = policy.as_deref().filter(|p| *p != "noeviction") {
            eprintln!(
                "workhorse: Redis's maxmemory-policy is {p}, but a queue needs noeviction: under \
                 memory pressure Redis would delete jobs, leases and unique keys (jobs lost or \
                 run twice); set `maxmemory-policy noeviction` (writes then fail loudly instead)"
            );
        }
        Ok(policy)
    }

    pub(crate) async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Option<JobData>>> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            out.extend(self.enqueue_request(chunk, &super::new_id()).await?);
        }
        Ok(out)
    }

    /// One enqueue call (`request`: its id, the same for each attempt).
    async fn enqueue_request(
        &self,
        chunk: &[NewJob],
        request: &str,
    ) -> Result<Vec<Option<JobData>>> {
        // The request marker outlives every attempt of the call, with room to spare.
        let attempts = ENQUEUE_ATTEMPTS as f64;
        let marker_ttl = (self.timeout.as_secs_f64() * attempts).ceil() as u64 + 10;
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(self.key("data"))
            .arg(&self.prefix)
            .arg(request)
            .arg(marker_ttl);
        for job in chunk {
            inv.arg(&job.id)
                .arg(&job.name)
                .arg(&job.args)
                .arg(job.delay)
                .arg(job.at.map_or(String::new(), |at| at.to_string()))
                .arg(job.unique_key.as_deref().unwrap_or(""))
                .arg(job.meta.as_deref().unwrap_or(""));
        }
        let mut attempt = 1;
        let answer: Vec<String> = loop {
            let call = |mut con: ConnectionManager| {
                let inv = &inv;
                async move { inv.invoke_async(&mut con).await }
            };
            match self.attempt(self.timeout, call).await {
                Ok(answer) => break answer,
                Err(f) if f.connection && attempt < ENQUEUE_ATTEMPTS => {
                    eprintln!(
                        "workhorse: an enqueue of {} jobs failed on the connection; sending it \
                         again (same ids, same request: it cannot enqueue twice): {:?}",
                        chunk.len(),
                        f.error
                    );
                    attempt += 1;
                }
                Err(f) => return Err(f.error),
            }
        };
        let t: f64 = answer
            .first()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::Backend("redis: enqueue gave no time".into()))?;
        chunk
            .iter()
            .zip(answer.iter().skip(1))
            .map(|(job, stored)| match stored.as_str() {
                "0" => Ok(None),
                "1" => Ok(Some(JobData {
                    id: job.id.clone(),
                    name: job.name.clone(),
                    args: job.args.clone(),
                    enqueued_at: t,
                    run_at: job.at.unwrap_or(t + job.delay.max(0.0)).max(t),
                    fails: 0,
                    last_error: None,
                    unique_key: job.unique_key.clone(),
                    died_at: None,
                    reason: None,
                    meta: job.meta.clone(),
                })),
                // Its id was stored already: that job, as it is now.
                raw => job_of(raw).map(Some),
            })
            .collect()
    }

    pub(crate) async fn enqueue_slot(&self, slot: String, job: NewJob) -> Result<bool> {
        let mut inv = self.scripts.enqueue_slot.prepare_invoke();
        inv.key(self.key("data"))
            .arg(&self.prefix)
            .arg(slot)
            .arg(&job.id)
            .arg(&job.name)
            .arg(&job.args)
            .arg(job.delay)
            .arg(job.unique_key.as_deref().unwrap_or(""))
            .arg(job.meta.as_deref().unwrap_or(""));
        let won: i64 = self
            .run(|mut con| async move { inv.invoke_async(&mut con).await })
            .await?;
        Ok(won == 1)
    }

    #[cfg(test)]
    pub(crate) async fn fetch(
        &self,
        worker_id: &str,
        wanted: &[Wanted],
        max: usize,
        lease: f64,
        waiter_id: &str,
    ) -> Result<Vec<Claim>> {
        self.fetch_request(worker_id, wanted, max, lease, waiter_id, "")
            .await
    }

    /// One fetch; `request` ("" for none) lets the same fetch sent again after a lost reply
    /// get back the claims the first one made (`{ns}:fetch:<request>`, kept for a lease).
    pub(crate) async fn fetch_request(
        &self,
        worker_id: &str,
        wanted: &[Wanted],
        max: usize,
        lease: f64,
        waiter_id: &str,
        request: &str,
    ) -> Result<Vec<Claim>> {
        let marker_ttl = lease.ceil().max(1.0) as u64 + 1;
        let mut inv = self.scripts.fetch.prepare_invoke();
        inv.key(self.key("data"))
            .arg(&self.prefix)
            .arg(worker_id)
            .arg(lease)
            .arg(max)
            .arg(waiter_id)
            .arg(request)
            .arg(marker_ttl);
        for i in super::sample_order(wanted) {
            let w = &wanted[i];
            inv.arg(&w.name).arg(w.max_concurrency).arg(w.max_fails);
        }
        let flat: Vec<redis::Value> = self
            .run(|mut con| async move { inv.invoke_async(&mut con).await })
            .await?;
        let mut claims = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let bad = |e: redis::ParsingError| Error::Backend(format!("redis: fetch gave {e}"));
            let raw: String = redis::from_redis_value_ref(&pair[0]).map_err(bad)?;
            let token: u64 = redis::from_redis_value_ref(&pair[1]).map_err(bad)?;
            claims.push(Claim {
                job: job_of(&raw)?,
                token,
            });
        }
        Ok(claims)
    }

    pub(crate) async fn finish(&self, acks: Vec<Ack>) -> Result<Vec<bool>> {
        let mut inv = self.scripts.finish.prepare_invoke();
        inv.key(self.key("data")).arg(&self.prefix);
        for ack in &acks {
            let (outcome, delay, text, args): (&str, f64, &str, &str) = match &ack.outcome {
                Outcome::Complete => ("complete", 0.0, "", ""),
                Outcome::Retry { delay, error } => ("retry", *delay, error, ""),
                Outcome::Dead { reason, failed } => (
                    if *failed { "dead_failed" } else { "dead" },
                    0.0,
                    reason,
                    "",
                ),
                Outcome::Discard => ("discard", 0.0, "", ""),
                Outcome::Reschedule { delay, args } => {
                    ("reschedule", *delay, "", args.as_deref().unwrap_or(""))
                }
                Outcome::Release => ("release", 0.0, "", ""),
            };
            inv.arg(&ack.id)
                .arg(&ack.name)
                .arg(ack.token)
                .arg(outcome)
                .arg(delay)
                .arg(text)
                .arg(args);
        }
        let fresh: Vec<i64> = self
            .run(|mut con| async move { inv.invoke_async(&mut con).await })
            .await?;
        Ok(fresh.into_iter().map(|f| f == 1).collect())
    }

    pub(crate) async fn renew(
        &self,
        held: &[(String, String, u64)],
        lease: f64,
    ) -> Result<Vec<bool>> {
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.key(self.key("data")).arg(&self.prefix).arg(lease);
        for (id, name, token) in held {
            inv.arg(id).arg(name).arg(*token);
        }
        // Within a third of the lease (a little less, so this gives up before the consumer's own
        // patience does and the connection is replaced): a renewal that waits longer is useless.
        let limit = self
            .timeout
            .min(Duration::from_secs_f64((lease / 3.0 * 0.9).max(0.01)));
        let call = |mut con: ConnectionManager| async move { inv.invoke_async(&mut con).await };
        let kept: Vec<i64> = self.attempt(limit, call).await?;
        Ok(kept.into_iter().map(|k| k == 1).collect())
    }

    pub(crate) async fn reap(&self) -> Result<u64> {
        let mut inv = self.scripts.reap.prepare_invoke();
        inv.key(self.key("data")).arg(&self.prefix);
        self.run(|mut con| async move { inv.invoke_async(&mut con).await })
            .await
    }

    pub(crate) async fn wait_for_work(&self, waiter: &mut RedisWaiter, max: f64) {
        waiter.rotate_if_orphaned();
        // Register for wake-ups (again: fetch did already, unless the list just changed), drop
        // the ids retired, and learn when the earliest scheduled job is due, in one call.
        let mut args = vec!["next_due", waiter.id.as_str()];
        args.extend(waiter.retired.iter().map(String::as_str));
        let due: Result<String> = self.client_call(&args).await;
        if due.is_ok() {
            waiter.retired.clear();
        }
        let until_due = match due {
            Ok(s) if !s.is_empty() => s.parse::<f64>().unwrap_or(max),
            Ok(_) => f64::INFINITY,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs_f64(max.clamp(0.0, 1.0))).await;
                return;
            }
        };
        let wait = until_due.min(max);
        if wait <= 0.001 {
            return;
        }
        if waiter.con.is_none() {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(Duration::from_secs_f64(
                    max + self.timeout.as_secs_f64(),
                )));
            match self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(con) => waiter.con = Some(con),
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs_f64(wait.min(1.0))).await;
                    return;
                }
            }
        }
        let Some(con) = waiter.con.as_mut() else {
            return;
        };
        let list = self.key(&format!("wake:{}", waiter.id));
        waiter.blocked = true;
        let blpop = redis::cmd("BLPOP")
            .arg(&list)
            .arg(wait.max(0.01))
            .to_owned();
        let popped = if until_due < max {
            // Waiting for a due time: Redis times blocked commands out on its cron tick (up to
            // 100 ms late at the default hz 10), so a local timer ends the wait on time. The
            // BLPOP is then left blocking (`blocked` stays set): the next look moves to a new
            // list and connection, sending nothing more meanwhile (Redis may be paused).
            let pop = blpop.query_async::<Option<(String, String)>>(con);
            match tokio::time::timeout(Duration::from_secs_f64(wait), pop).await {
                Ok(popped) => popped,
                Err(_) => return,
            }
        } else {
            blpop.query_async(con).await
        };
        waiter.blocked = false;
        if popped.is_err() {
            waiter.con = None; // reconnect next time
        }
    }

    pub(crate) async fn checkin(&self, id: &str, token: u64, message: String) -> Result<bool> {
        let held: i64 = self
            .client_call(&["checkin", id, &token.to_string(), &message])
            .await?;
        Ok(held == 1)
    }

    pub(crate) async fn heartbeat(&self, pool: Pool, alive: bool) -> Result<()> {
        let json = if alive {
            serde_json::json!({
                "worker_id": pool.worker_id,
                "pid": pool.pid,
                "host": pool.host,
                "names": pool.names,
                "concurrency": pool.concurrency,
                "started_at": pool.started_at,
            })
            .to_string()
        } else {
            String::new()
        };
        let seen = self.epoch.lock().clone().unwrap_or_default();
        let epoch: String = self
            .client_call(&["heartbeat", &pool.worker_id, &json, &seen])
            .await?;
        if !seen.is_empty() && epoch != seen {
            eprintln!(
                "workhorse: Redis lost its data (its epoch key is new: restarted without \
                 persistence, or flushed); jobs enqueued before are gone"
            );
        }
        *self.epoch.lock() = Some(epoch);
        Ok(())
    }

    pub(crate) async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        let _: i64 = self
            .client_call(&["paused", name, if paused { "1" } else { "0" }])
            .await?;
        Ok(())
    }

    pub(crate) async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let flat: Vec<String> = self.client_call(&["queues"]).await?;
        let mut out: Vec<QueueInfo> = flat
            .chunks(8)
            .map(|c| {
                let n = |i: usize| c[i].parse::<u64>().unwrap_or(0);
                QueueInfo {
                    name: c[0].clone(),
                    ready: n(1),
                    scheduled: n(2),
                    retry: n(3),
                    dead: n(4),
                    latency: c[5].parse().unwrap_or(0.0),
                    paused: c[6] == "1",
                    running: n(7),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) async fn page(
        &self,
        set: JobSet,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<JobData>, u64)> {
        // Ranks stay exact in Lua's doubles; an empty page (per_page 0) still answers the total
        // (a stop before the start).
        const MAX_RANK: usize = 1 << 50;
        let start = page
            .saturating_sub(1)
            .saturating_mul(per_page)
            .min(MAX_RANK);
        let stop = start.saturating_add(per_page).min(MAX_RANK) as i64 - 1;
        let flat: Vec<String> = self
            .client_call(&["page", set_name(set), &start.to_string(), &stop.to_string()])
            .await?;
        let total = flat.first().and_then(|t| t.parse().ok()).unwrap_or(0);
        let jobs = flat
            .iter()
            .skip(1)
            .map(|raw| job_of(raw))
            .collect::<Result<Vec<_>>>()?;
        Ok((jobs, total))
    }

    pub(crate) async fn retry_dead(&self, id: Option<String>) -> Result<u64> {
        self.client_call(&["retry_dead", id.as_deref().unwrap_or("")])
            .await
    }

    pub(crate) async fn delete(&self, set: JobSet, id: Option<String>) -> Result<u64> {
        self.client_call(&["delete", set_name(set), id.as_deref().unwrap_or("")])
            .await
    }

    pub(crate) async fn pools(&self) -> Result<Vec<Pool>> {
        let raws: Vec<String> = self.client_call(&["pools"]).await?;
        let mut pools: Vec<Pool> = raws
            .iter()
            .filter_map(|raw| serde_json::from_str::<Value>(raw).ok())
            .map(|v| Pool {
                worker_id: text(&v, "worker_id").unwrap_or_default(),
                pid: num(&v, "pid") as u32,
                host: text(&v, "host").unwrap_or_default(),
                names: v
                    .get("names")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                concurrency: num(&v, "concurrency") as u32,
                started_at: num(&v, "started_at"),
                heartbeat_at: num(&v, "heartbeat_at"),
            })
            .collect();
        pools.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(pools)
    }

    pub(crate) async fn busy(&self) -> Result<Vec<Busy>> {
        let flat: Vec<String> = self.client_call(&["busy"]).await?;
        let mut busy: Vec<Busy> = flat
            .chunks(6)
            .map(|c| Busy {
                worker_id: c[0].clone(),
                job_id: c[1].clone(),
                name: c[2].clone(),
                started_at: c[3].parse().unwrap_or(0.0),
                checkin: (!c[4].is_empty()).then(|| c[4].clone()),
                checkin_at: c[5].parse().ok(),
            })
            .collect();
        busy.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
        Ok(busy)
    }

    pub(crate) async fn stats(&self) -> Result<Stats> {
        let hmget = redis::cmd("HMGET")
            .arg(self.key("stats"))
            .arg(&[
                "processed",
                "failed",
                "dead",
                "stale_acks",
                "reaped",
                "data_losses",
            ])
            .to_owned();
        let fields: Vec<Option<u64>> = self
            .run(|mut con| async move { hmget.query_async(&mut con).await })
            .await?;
        let f = |i: usize| fields.get(i).copied().flatten().unwrap_or(0);
        Ok(Stats {
            processed: f(0),
            failed: f(1),
            dead: f(2),
            stale_acks: f(3),
            reaped: f(4),
            data_losses: f(5),
        })
    }
}

impl RedisWaiter {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// After a wait dropped with its BLPOP still blocking: a new list and connection.
    pub(crate) fn rotate_if_orphaned(&mut self) {
        if self.blocked {
            let old = std::mem::replace(&mut self.id, super::new_id());
            if self.retired.len() < 16 {
                self.retired.push(old); // beyond that, left to expire with the others
            }
            self.con = None;
            self.blocked = false;
        }
    }
}

fn set_name(set: JobSet) -> &'static str {
    match set {
        JobSet::Scheduled => "scheduled",
        JobSet::Retry => "retry",
        JobSet::Dead => "dead",
    }
}

/// Against a real redis-server of their own on a free loopback port (never the machine's 6379);
/// skipped, with a note, when redis-server is not installed.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::memory::Memory;
    use crate::queue::{Store, Waiter};
    use std::future::Future;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Instant;

    struct Server {
        child: Child,
        port: u16,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Server {
        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    fn redis_server_exe() -> Option<String> {
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([std::path::PathBuf::from("/usr/bin")])
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// A fresh redis-server (`extra` arguments added), or None when there is none to start.
    fn server(extra: &[&str]) -> Option<Server> {
        let Some(exe) = redis_server_exe() else {
            eprintln!("redis-server is not installed: the Redis backend test is skipped");
            return None;
        };
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free loopback port");
            let port_arg = port.to_string();
            let mut args = vec![
                "--port",
                &port_arg,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/tmp",
            ];
            args.extend_from_slice(extra);
            let child = Command::new(&exe)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server");
            let mut srv = Server { child, port };
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if srv.child.try_wait().ok().flatten().is_some() {
                    break; // the port was taken meanwhile: try another
                }
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                    let mut buf = [0u8; 64];
                    if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).unwrap_or(0) > 0 {
                        return Some(srv);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(srv.child.kill());
        }
        panic!("redis-server did not start");
    }

    fn run<F: Future>(f: F) -> F::Output {
        handle().block_on(f)
    }

    fn store(srv: &Server) -> RedisStore {
        RedisStore::open(&srv.url(), "test").expect("open")
    }

    fn job(name: &str) -> NewJob {
        NewJob {
            id: crate::queue::new_id(),
            name: name.into(),
            args: r#"{"n":1}"#.into(),
            delay: 0.0,
            at: None,
            unique_key: None,
            meta: None,
        }
    }

    fn later(name: &str, delay: f64) -> NewJob {
        NewJob { delay, ..job(name) }
    }

    fn unique(name: &str, key: &str) -> NewJob {
        NewJob {
            unique_key: Some(key.into()),
            ..job(name)
        }
    }

    fn wanted(name: &str, max_concurrency: u32, max_fails: u32) -> Vec<Wanted> {
        vec![Wanted {
            name: name.into(),
            priority: 1,
            max_concurrency,
            max_fails,
        }]
    }

    fn ack(c: &Claim, outcome: Outcome) -> Ack {
        Ack {
            id: c.job.id.clone(),
            name: c.job.name.clone(),
            token: c.token,
            outcome,
        }
    }

    async fn take(s: &RedisStore, name: &str, max: usize, lease: f64) -> Vec<Claim> {
        s.fetch("w1", &wanted(name, 0, 4), max, lease, "")
            .await
            .unwrap()
    }

    async fn info(s: &RedisStore, name: &str) -> QueueInfo {
        s.queues()
            .await
            .unwrap()
            .into_iter()
            .find(|q| q.name == name)
            .unwrap_or_default()
    }

    #[test]
    fn enqueue_fetch_finish() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let before = s.now().await.unwrap();
            let mut first = job("a");
            first.meta = Some(r#"{"request_id":"r1"}"#.into());
            let jobs = vec![first, job("a"), job("a")];
            let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let stored = s.enqueue(jobs).await.unwrap();
            let stored: Vec<JobData> = stored.into_iter().map(Option::unwrap).collect();
            assert!(stored[0].enqueued_at >= before - 0.001);
            assert_eq!(stored[0].run_at, stored[0].enqueued_at);
            assert_eq!(info(&s, "a").await.ready, 3);

            let claims = take(&s, "a", 10, 30.0).await;
            let got: Vec<&str> = claims.iter().map(|c| c.job.id.as_str()).collect();
            assert_eq!(got, ids, "FIFO");
            assert!(claims.iter().all(|c| c.token == 1 && c.job.fails == 0));
            assert_eq!(
                claims[0].job.meta.as_deref(),
                Some(r#"{"request_id":"r1"}"#)
            );
            assert_eq!(claims[0].job.args, r#"{"n":1}"#);
            let q = info(&s, "a").await;
            assert_eq!((q.ready, q.running), (0, 3));
            let busy = s.busy().await.unwrap();
            assert_eq!(busy.len(), 3);
            assert!(busy.iter().all(|b| b.worker_id == "w1" && b.name == "a"));

            let acks = claims.iter().map(|c| ack(c, Outcome::Complete)).collect();
            assert_eq!(s.finish(acks).await.unwrap(), vec![true; 3]);
            let q = info(&s, "a").await;
            assert_eq!((q.ready, q.running), (0, 0));
            assert_eq!(s.stats().await.unwrap().processed, 3);
            assert!(s.busy().await.unwrap().is_empty());
            // A second ack of the same run is stale.
            assert_eq!(
                s.finish(vec![ack(&claims[0], Outcome::Complete)])
                    .await
                    .unwrap(),
                vec![false]
            );
            assert_eq!(s.stats().await.unwrap().stale_acks, 1);
        });
    }

    #[test]
    fn big_batches_are_chunked() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let jobs: Vec<NewJob> = (0..2500).map(|_| job("bulk")).collect();
            let stored = s.enqueue(jobs).await.unwrap();
            assert_eq!(stored.iter().filter(|j| j.is_some()).count(), 2500);
            assert_eq!(info(&s, "bulk").await.ready, 2500);
            assert_eq!(take(&s, "bulk", 1000, 30.0).await.len(), 1000);
        });
    }

    #[test]
    fn a_reaped_run_counts_as_a_failure_and_its_late_ack_is_stale() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let j = job("a");
            s.enqueue(vec![j.clone(), job("a")]).await.unwrap();
            let first = take(&s, "a", 1, 0.05).await;
            assert_eq!(s.reap().await.unwrap(), 0, "the lease still runs");
            tokio::time::sleep(Duration::from_millis(120)).await;
            assert_eq!(s.reap().await.unwrap(), 1);
            assert_eq!(s.stats().await.unwrap().reaped, 1);
            // Back at the front, one failure counted.
            let again = take(&s, "a", 1, 30.0).await;
            assert_eq!(again[0].job.id, j.id);
            assert_eq!(again[0].token, 2);
            assert_eq!(again[0].job.fails, 1);
            assert_eq!(
                again[0].job.last_error.as_deref(),
                Some("lease expired: the worker running it was lost")
            );
            // The frozen worker comes back: refused, counted; the new run is untouched.
            let late = s.finish(vec![ack(&first[0], Outcome::Complete)]).await;
            assert_eq!(late.unwrap(), vec![false]);
            assert_eq!(s.stats().await.unwrap().stale_acks, 1);
            assert!(!s.checkin(&j.id, 1, "late".into()).await.unwrap());
            assert!(s.checkin(&j.id, 2, "fresh".into()).await.unwrap());
            let busy = s.busy().await.unwrap();
            assert_eq!(busy[0].checkin.as_deref(), Some("fresh"));
            assert!(busy[0].checkin_at.is_some());
            assert_eq!(
                s.finish(vec![ack(&again[0], Outcome::Complete)])
                    .await
                    .unwrap(),
                vec![true]
            );
        });
    }

    #[test]
    fn lost_runs_end_dead_after_max_fails() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue(vec![job("a")]).await.unwrap();
            for round in 1..=2 {
                let c = s.fetch("w", &wanted("a", 0, 2), 1, 0.01, "").await.unwrap();
                assert_eq!(c.len(), 1, "round {round}");
                tokio::time::sleep(Duration::from_millis(30)).await;
                assert_eq!(s.reap().await.unwrap(), 1);
            }
            let (dead, total) = s.page(JobSet::Dead, 1, 10).await.unwrap();
            assert_eq!(total, 1);
            assert_eq!(dead[0].fails, 2);
            assert!(dead[0].died_at.is_some());
            assert_eq!(
                dead[0].reason.as_deref(),
                Some("lease expired: the worker running it was lost")
            );
            let st = s.stats().await.unwrap();
            assert_eq!((st.reaped, st.dead), (2, 1));
            assert_eq!(info(&s, "a").await.ready, 0);
        });
    }

    #[test]
    fn release_goes_first_and_keeps_fails_but_not_the_token() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let (a, b) = (job("a"), job("a"));
            s.enqueue(vec![a.clone(), b.clone()]).await.unwrap();
            let c = take(&s, "a", 1, 30.0).await;
            let ok = s.finish(vec![ack(&c[0], Outcome::Release)]).await;
            assert_eq!(ok.unwrap(), vec![true]);
            let c2 = take(&s, "a", 2, 30.0).await;
            assert_eq!(c2[0].job.id, a.id, "released to the front");
            assert_eq!(c2[1].job.id, b.id);
            assert_eq!(c2[0].token, 2, "the fencing token never goes back");
            assert_eq!(c2[0].job.fails, 0);
            assert_eq!(s.stats().await.unwrap().processed, 0);
        });
    }

    #[test]
    fn unique_keys_are_held_while_waiting() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            assert!(s.enqueue(vec![unique("a", "k")]).await.unwrap()[0].is_some());
            let twice = s
                .enqueue(vec![unique("a", "k"), unique("a", "k")])
                .await
                .unwrap();
            assert!(twice.iter().all(Option::is_none));
            let c = take(&s, "a", 5, 30.0).await;
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].job.unique_key.as_deref(), Some("k"));
            // Released at claim.
            assert!(s.enqueue(vec![unique("a", "k")]).await.unwrap()[0].is_some());
            // Released by delete.
            let mut sched = unique("a", "k2");
            sched.delay = 100.0;
            let id = sched.id.clone();
            assert!(s.enqueue(vec![sched]).await.unwrap()[0].is_some());
            assert!(s.enqueue(vec![unique("a", "k2")]).await.unwrap()[0].is_none());
            assert_eq!(
                s.delete(JobSet::Scheduled, Some(id.clone())).await.unwrap(),
                1
            );
            assert_eq!(s.delete(JobSet::Scheduled, Some(id)).await.unwrap(), 0);
            assert!(s.enqueue(vec![unique("a", "k2")]).await.unwrap()[0].is_some());
        });
    }

    #[test]
    fn unique_enqueue_race_stores_one() {
        let Some(srv) = server(&[]) else { return };
        let s = Arc::new(store(&srv));
        run(async {
            let tries = (0..50).map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.enqueue(vec![unique("a", "same")]).await.unwrap() })
            });
            let mut won = 0;
            for t in tries {
                won += t.await.unwrap().iter().flatten().count();
            }
            assert_eq!(won, 1);
            assert_eq!(info(&s, "a").await.ready, 1);
        });
    }

    #[test]
    fn max_concurrency_counts_runs_of_every_process() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue((0..5).map(|_| job("a")).collect()).await.unwrap();
            let w = wanted("a", 2, 4);
            let c = s.fetch("w1", &w, 10, 30.0, "").await.unwrap();
            assert_eq!(c.len(), 2);
            assert!(s.fetch("w2", &w, 10, 30.0, "").await.unwrap().is_empty());
            s.finish(vec![ack(&c[0], Outcome::Complete)]).await.unwrap();
            assert_eq!(s.fetch("w2", &w, 10, 30.0, "").await.unwrap().len(), 1);
            // Without a cap, the rest.
            assert_eq!(take(&s, "a", 10, 30.0).await.len(), 2);
        });
    }

    #[test]
    fn paused_names_are_skipped() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue(vec![job("a"), job("b")]).await.unwrap();
            s.set_paused("a", true).await.unwrap();
            let both = [wanted("a", 0, 4), wanted("b", 0, 4)].concat();
            let c = s.fetch("w", &both, 10, 30.0, "").await.unwrap();
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].job.name, "b");
            assert!(info(&s, "a").await.paused);
            s.set_paused("a", false).await.unwrap();
            assert!(!info(&s, "a").await.paused);
            assert_eq!(take(&s, "a", 10, 30.0).await.len(), 1);
        });
    }

    #[test]
    fn scheduled_jobs_are_promoted_when_due() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let stored = s.enqueue(vec![later("a", 0.15)]).await.unwrap();
            let j = stored[0].clone().unwrap();
            assert!((j.run_at - j.enqueued_at - 0.15).abs() < 1e-3);
            assert!(take(&s, "a", 10, 30.0).await.is_empty());
            let q = info(&s, "a").await;
            assert_eq!((q.ready, q.scheduled), (0, 1));
            let (page, total) = s.page(JobSet::Scheduled, 1, 10).await.unwrap();
            assert_eq!((page[0].id.as_str(), total), (j.id.as_str(), 1));
            tokio::time::sleep(Duration::from_millis(200)).await;
            // The client counts due jobs as ready (as memory:// does).
            let q = info(&s, "a").await;
            assert_eq!((q.ready, q.scheduled), (1, 0));
            assert_eq!(take(&s, "a", 10, 30.0).await.len(), 1);
        });
    }

    #[test]
    fn retry_reschedule_discard_and_dead_outcomes() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue((0..4).map(|_| job("a")).collect()).await.unwrap();
            let c = take(&s, "a", 4, 30.0).await;
            let acks = vec![
                ack(
                    &c[0],
                    Outcome::Retry {
                        delay: 0.05,
                        error: "boom".into(),
                    },
                ),
                ack(
                    &c[1],
                    Outcome::Reschedule {
                        delay: 100.0,
                        args: Some(r#"{"n":2}"#.into()),
                    },
                ),
                ack(&c[2], Outcome::Discard),
                ack(
                    &c[3],
                    Outcome::Dead {
                        reason: "bad".into(),
                        failed: true,
                    },
                ),
            ];
            assert_eq!(s.finish(acks).await.unwrap(), vec![true; 4]);
            let st = s.stats().await.unwrap();
            assert_eq!((st.processed, st.failed, st.dead), (4, 3, 1));

            let (retry, _) = s.page(JobSet::Retry, 1, 10).await.unwrap();
            assert_eq!(retry[0].fails, 1);
            assert_eq!(retry[0].last_error.as_deref(), Some("boom"));
            let (sched, _) = s.page(JobSet::Scheduled, 1, 10).await.unwrap();
            assert_eq!((sched[0].fails, sched[0].args.as_str()), (0, r#"{"n":2}"#));
            let (dead, _) = s.page(JobSet::Dead, 1, 10).await.unwrap();
            assert_eq!(dead[0].id, c[3].job.id);
            assert_eq!(dead[0].fails, 1);
            assert_eq!(dead[0].reason.as_deref(), Some("bad"));
            assert!(dead[0].died_at.is_some());

            tokio::time::sleep(Duration::from_millis(80)).await;
            let again = take(&s, "a", 10, 30.0).await;
            assert_eq!(again.len(), 1);
            assert_eq!(
                (again[0].job.id.as_str(), again[0].token),
                (c[0].job.id.as_str(), 2)
            );

            // Dead back to ready with its fails reset.
            assert_eq!(s.retry_dead(Some("nope".into())).await.unwrap(), 0);
            assert_eq!(s.retry_dead(Some(c[0].job.id.clone())).await.unwrap(), 0);
            assert_eq!(s.retry_dead(Some(c[3].job.id.clone())).await.unwrap(), 1);
            let revived = take(&s, "a", 10, 30.0).await;
            assert_eq!(revived[0].job.id, c[3].job.id);
            assert_eq!(revived[0].job.fails, 0);
            assert!(revived[0].job.died_at.is_none());
            assert_eq!(s.page(JobSet::Dead, 1, 10).await.unwrap().1, 0);
        });
    }

    #[test]
    fn dead_set_all_operations_and_pages() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue((0..5).map(|_| job("a")).collect()).await.unwrap();
            let c = take(&s, "a", 5, 30.0).await;
            for claim in &c {
                let dead = Outcome::Dead {
                    reason: "r".into(),
                    failed: false,
                };
                s.finish(vec![ack(claim, dead)]).await.unwrap();
            }
            let (p1, total) = s.page(JobSet::Dead, 1, 2).await.unwrap();
            let (p3, _) = s.page(JobSet::Dead, 3, 2).await.unwrap();
            let (p0, total0) = s.page(JobSet::Dead, 1, 0).await.unwrap();
            assert_eq!(
                (p1.len(), p3.len(), p0.len(), total, total0),
                (2, 1, 0, 5, 5)
            );
            assert_eq!(p1[0].id, c[0].job.id, "oldest first");
            assert_eq!(p3[0].id, c[4].job.id);
            assert_eq!(p1[0].fails, 0, "a dead result is not a failure");
            assert_eq!(
                s.delete(JobSet::Dead, Some(c[0].job.id.clone()))
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(s.retry_dead(None).await.unwrap(), 4);
            assert_eq!(info(&s, "a").await.ready, 4);
            let c = take(&s, "a", 5, 30.0).await;
            for claim in &c {
                let dead = Outcome::Dead {
                    reason: "r".into(),
                    failed: true,
                };
                s.finish(vec![ack(claim, dead)]).await.unwrap();
            }
            assert_eq!(info(&s, "a").await.dead, 4);
            assert_eq!(s.delete(JobSet::Dead, None).await.unwrap(), 4);
            assert_eq!(s.page(JobSet::Dead, 1, 10).await.unwrap().1, 0);
        });
    }

    #[test]
    fn the_dead_set_keeps_the_newest_ten_thousand() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue((0..10_003).map(|_| job("a")).collect())
                .await
                .unwrap();
            // The oldest go: the first batch died at one time, so its smallest ids.
            let mut first: Option<String> = None;
            loop {
                let c = take(&s, "a", 1000, 30.0).await;
                if c.is_empty() {
                    break;
                }
                if first.is_none() {
                    first = c.iter().map(|c| c.job.id.clone()).min();
                }
                let dead = c
                    .iter()
                    .map(|c| {
                        ack(
                            c,
                            Outcome::Dead {
                                reason: "r".into(),
                                failed: true,
                            },
                        )
                    })
                    .collect();
                s.finish(dead).await.unwrap();
            }
            assert_eq!(s.page(JobSet::Dead, 1, 1).await.unwrap().1, 10_000);
            let mut con = s.con.lock().1.clone();
            let kept: i64 = redis::cmd("HLEN")
                .arg(s.key("data"))
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(kept, 10_000, "the trimmed jobs' data is gone too");
            assert_eq!(s.retry_dead(first).await.unwrap(), 0);
        });
    }

    #[test]
    fn a_cron_slot_is_enqueued_once() {
        let Some(srv) = server(&[]) else { return };
        let s = Arc::new(store(&srv));
        run(async {
            let tries = (0..10).map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.enqueue_slot("report:slot1".into(), job("r")).await })
            });
            let mut won = 0;
            for t in tries {
                won += usize::from(t.await.unwrap().unwrap());
            }
            assert_eq!(won, 1);
            assert!(s
                .enqueue_slot("report:slot2".into(), job("r"))
                .await
                .unwrap());
            assert_eq!(info(&s, "r").await.ready, 2);
        });
    }

    #[test]
    fn renew_extends_held_leases_only() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue(vec![job("a"), job("a")]).await.unwrap();
            let c = take(&s, "a", 2, 0.1).await;
            let held = |c: &Claim, token| (c.job.id.clone(), c.job.name.clone(), token);
            let kept = s
                .renew(&[held(&c[0], 1), held(&c[1], 7)], 5.0)
                .await
                .unwrap();
            assert_eq!(kept, vec![true, false]);
            // Never shortened by a shorter renewal.
            assert_eq!(s.renew(&[held(&c[0], 1)], 0.001).await.unwrap(), vec![true]);
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(s.reap().await.unwrap(), 1, "only the run not renewed");
            assert_eq!(s.renew(&[held(&c[1], 1)], 5.0).await.unwrap(), vec![false]);
            let busy = s.busy().await.unwrap();
            assert_eq!(busy.len(), 1);
            assert_eq!(busy[0].job_id, c[0].job.id);
        });
    }

    #[test]
    fn pools_come_and_go() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let pool = Pool {
                worker_id: "w1".into(),
                pid: 42,
                host: "h".into(),
                names: vec!["a".into(), "b".into()],
                concurrency: 8,
                started_at: 1.5,
                heartbeat_at: 0.0,
            };
            s.heartbeat(pool.clone(), true).await.unwrap();
            let pools = s.pools().await.unwrap();
            assert_eq!(pools.len(), 1);
            assert_eq!(pools[0].names, vec!["a".to_string(), "b".to_string()]);
            assert_eq!((pools[0].pid, pools[0].concurrency), (42, 8));
            assert!(pools[0].heartbeat_at > 1e9);
            s.heartbeat(pool, false).await.unwrap();
            assert!(s.pools().await.unwrap().is_empty());
        });
    }

    #[test]
    fn latency_is_the_oldest_ready_jobs_wait() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue(vec![job("a")]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
            s.enqueue(vec![job("a")]).await.unwrap();
            let q = info(&s, "a").await;
            assert!((0.05..5.0).contains(&q.latency), "{}", q.latency);
        });
    }

    /// A Store's waiter wakes on an enqueue at once, never missing one between a fetch and the
    /// wait, and wakes for a scheduled job at its due time.
    #[test]
    fn waiters_wake_on_work() {
        let Some(srv) = server(&[]) else { return };
        let store = Store::open(&srv.url(), "wake").unwrap();
        let want = wanted("a", 0, 4);
        run(async {
            let mut waiters: Vec<Waiter> = (0..3).map(|_| store.waiter()).collect();
            for w in &mut waiters {
                w.mark_seen();
                assert!(store
                    .fetch("w", &want, 1, 30.0, w, "")
                    .await
                    .unwrap()
                    .is_empty());
            }
            // Enqueued after the empty fetches and before the waits: not missed.
            store.enqueue(vec![job("a")]).await.unwrap();
            let t0 = Instant::now();
            for w in &mut waiters {
                store.wait_for_work(w, 5.0).await;
            }
            assert!(
                t0.elapsed() < Duration::from_millis(500),
                "{:?}",
                t0.elapsed()
            );

            // Every waiter wakes on one enqueue.
            for w in &mut waiters {
                w.mark_seen();
                let _ = store.fetch("w", &want, 10, 30.0, w, "").await.unwrap();
            }
            let t0 = Instant::now();
            let waits = waiters
                .into_iter()
                .map(|mut w| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store.wait_for_work(&mut w, 5.0).await;
                        w
                    })
                })
                .collect::<Vec<_>>();
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.enqueue(vec![job("a")]).await.unwrap();
            let mut waiters = Vec::new();
            for w in waits {
                waiters.push(w.await.unwrap());
            }
            let woke = t0.elapsed();
            assert!(woke < Duration::from_millis(500), "{woke:?}");

            // A scheduled job due before anything else wakes the waiter, which then sleeps
            // until it is due.
            let w = &mut waiters[0];
            w.mark_seen();
            let _ = store.fetch("w", &want, 10, 30.0, w, "").await.unwrap();
            let store2 = store.clone();
            let enqueue = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                store2.enqueue(vec![later("a", 0.2)]).await.unwrap();
                Instant::now() + Duration::from_millis(200)
            });
            let t0 = Instant::now();
            loop {
                store.wait_for_work(w, 2.0).await;
                w.mark_seen();
                if !store
                    .fetch("w", &want, 10, 30.0, w, "")
                    .await
                    .unwrap()
                    .is_empty()
                {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(1), "never woke");
            }
            let claimed = Instant::now();
            let due = enqueue.await.unwrap();
            // Claimed within 50 ms of its due time (DESIGN.md), not early.
            let late = claimed.saturating_duration_since(due);
            let early = due.saturating_duration_since(claimed);
            eprintln!("scheduled job claimed {late:?} late, {early:?} early");
            assert!(late < Duration::from_millis(50), "{late:?} late");
            assert!(early < Duration::from_millis(10), "{early:?} early");
            // The wait ended on its local timer and left its BLPOP: the next wait moved to a new
            // list and unregistered the old one.
            w.mark_seen();
            store.wait_for_work(w, 0.01).await;
            let Store::Redis(r) = &store else {
                unreachable!()
            };
            let mut con = r.con.lock().1.clone();
            let registered: u64 = redis::cmd("ZCARD")
                .arg(r.key("waiters"))
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(registered, 3);
        });
    }

    #[test]
    fn urls_with_a_password_and_a_database() {
        let Some(srv) = server(&["--requirepass", "s3cret"]) else {
            return;
        };
        let url = |auth: &str, db: u8| format!("redis://{auth}@127.0.0.1:{}/{db}", srv.port);
        run(async {
            let db3 = RedisStore::open(&url(":s3cret", 3), "ns").unwrap();
            let db4 = RedisStore::open(&url(":s3cret", 4), "ns").unwrap();
            db3.enqueue(vec![job("a")]).await.unwrap();
            assert_eq!(info(&db3, "a").await.ready, 1);
            assert_eq!(info(&db4, "a").await.ready, 0, "another database");
            let t0 = Instant::now();
            let wrong = RedisStore::open(&url(":nope", 3), "ns").unwrap();
            assert!(matches!(wrong.now().await, Err(Error::Backend(_))));
            assert!(t0.elapsed() < Duration::from_secs(3));
        });
    }

    #[test]
    fn a_restarted_redis_is_reconnected() {
        let Some(mut srv) = server(&[]) else { return };
        let store = Store::open(&srv.url(), "re").unwrap();
        let want = wanted("a", 0, 4);
        run(async {
            let mut w = store.waiter();
            w.mark_seen();
            assert!(store
                .fetch("w", &want, 1, 30.0, &w, "")
                .await
                .unwrap()
                .is_empty());
            store.wait_for_work(&mut w, 0.05).await; // the waiter's own connection is up
            let _ = srv.child.kill();
            let _ = srv.child.wait();
            assert!(matches!(store.now().await, Err(Error::Backend(_))));
            store.wait_for_work(&mut w, 0.05).await; // fails, without hanging
            let exe = redis_server_exe().unwrap();
            let port = srv.port.to_string();
            srv.child = Command::new(exe)
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--dir", "/tmp"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let t0 = Instant::now();
            while store.now().await.is_err() {
                assert!(t0.elapsed() < Duration::from_secs(10), "never reconnected");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            store.enqueue(vec![job("a")]).await.unwrap();
            w.mark_seen();
            assert_eq!(
                store
                    .fetch("w", &want, 1, 30.0, &w, "")
                    .await
                    .unwrap()
                    .len(),
                1
            );
            // The waiter reconnects too and is woken again.
            let store2 = store.clone();
            let wait = tokio::spawn(async move {
                let t0 = Instant::now();
                store2.wait_for_work(&mut w, 5.0).await;
                t0.elapsed()
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.enqueue(vec![job("a")]).await.unwrap();
            assert!(wait.await.unwrap() < Duration::from_secs(1));
        });
    }

    /// Throughput of the batch scripts (`cargo test --release -- --ignored throughput
    /// --nocapture`): 100 jobs per fetch and finish call, one caller.
    #[test]
    #[ignore]
    fn throughput() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        let n = 100_000;
        run(async {
            let t0 = Instant::now();
            s.enqueue((0..n).map(|_| job("a")).collect()).await.unwrap();
            let enq = t0.elapsed();
            let (mut fetching, mut finishing) = (Duration::ZERO, Duration::ZERO);
            loop {
                let t0 = Instant::now();
                let c = take(&s, "a", 100, 30.0).await;
                fetching += t0.elapsed();
                if c.is_empty() {
                    break;
                }
                let acks = c.iter().map(|c| ack(c, Outcome::Complete)).collect();
                let t0 = Instant::now();
                s.finish(acks).await.unwrap();
                finishing += t0.elapsed();
            }
            let rate = |d: Duration| n as f64 / d.as_secs_f64();
            eprintln!(
                "enqueue {:.0} jobs/s; fetch {:.0} jobs/s; finish {:.0} jobs/s; both {:.0} jobs/s",
                rate(enq),
                rate(fetching),
                rate(finishing),
                rate(fetching + finishing)
            );
            assert_eq!(s.stats().await.unwrap().processed, n as u64);
        });
    }

    #[test]
    fn a_silent_server_is_an_error_within_seconds() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}/0", listener.local_addr().unwrap());
        let t0 = Instant::now();
        let store = Store::open(&url, "ns").unwrap();
        assert!(matches!(run(store.now()), Err(Error::Backend(_))));
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        drop(listener);
    }

    #[test]
    fn an_unreachable_redis_fails_fast() {
        let t0 = Instant::now();
        let res =
            Store::open("redis://127.0.0.1:1/0", "ns").map(|s| run(async move { s.now().await }));
        assert!(matches!(
            res,
            Err(Error::Backend(_)) | Ok(Err(Error::Backend(_)))
        ));
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn store_open_wiring() {
        assert!(matches!(
            Store::open("redis://127.0.0.1:6399/0", "ns"),
            Ok(Store::Redis(_))
        ));
        assert!(matches!(
            Store::open("rediss://127.0.0.1:6399/0", "ns"),
            Ok(Store::Redis(_))
        ));
        assert!(matches!(
            Store::open("redis://127.0.0.1:6399/0", ""),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            Store::open("redis://:pw@[bad/0", "ns"),
            Err(Error::Invalid(msg)) if !msg.contains("pw")
        ));
        assert!(matches!(
            Store::open("mysql://x", "ns"),
            Err(Error::Invalid(_))
        ));
    }

    /// The same single-name operations on memory:// and redis:// give the same claims, sets and
    /// counters (times aside).
    #[test]
    fn behaves_like_memory() {
        let Some(srv) = server(&[]) else { return };
        let r = store(&srv);
        let m = Memory::named("", "ns");
        let names = ["a", "b"];
        fastrand::seed(7);
        type View = (String, String, u32, Option<String>, Option<String>, bool);
        let view = |j: &JobData| -> View {
            (
                j.id.clone(),
                j.args.clone(),
                j.fails,
                j.last_error.clone(),
                j.unique_key.clone(),
                j.died_at.is_some(),
            )
        };
        run(async {
            // Claims held by both (the same ids and tokens).
            let mut held: Vec<Claim> = Vec::new();
            let mut ids: Vec<String> = Vec::new();
            for step in 0..600 {
                let name = names[fastrand::usize(..names.len())];
                match fastrand::u8(..10) {
                    0..=2 => {
                        let jobs: Vec<NewJob> = (0..fastrand::usize(1..4))
                            .map(|i| {
                                let mut new = NewJob {
                                    delay: if fastrand::u8(..4) == 0 { 1000.0 } else { 0.0 },
                                    unique_key: (fastrand::u8(..3) == 0)
                                        .then(|| format!("u{}", fastrand::u8(..3))),
                                    args: format!(r#"{{"step":{step},"i":{i}}}"#),
                                    ..job(name)
                                };
                                // Now and then an id used before (stored or done), or a due
                                // time by the backend's clock, past or future.
                                if !ids.is_empty() && fastrand::u8(..5) == 0 {
                                    new.id = ids[fastrand::usize(..ids.len())].clone();
                                }
                                if fastrand::u8(..6) == 0 {
                                    let ahead = if fastrand::bool() { 1000.0 } else { -1000.0 };
                                    new.at = Some(crate::queue::memory::now() + ahead);
                                }
                                ids.push(new.id.clone());
                                new
                            })
                            .collect();
                        let a = r.enqueue(jobs.clone()).await.unwrap();
                        let b = m.enqueue(jobs).await.unwrap();
                        let a: Vec<_> = a.iter().map(|j| j.as_ref().map(view)).collect();
                        let b: Vec<_> = b.iter().map(|j| j.as_ref().map(view)).collect();
                        assert_eq!(a, b, "enqueue at step {step}");
                    }
                    3..=4 => {
                        let max = fastrand::usize(1..4);
                        let cap = fastrand::u32(0..3);
                        let w = wanted(name, cap, 3);
                        let a = r.fetch("w", &w, max, 30.0, "").await.unwrap();
                        let b = m.fetch("w", &w, max, 30.0).await.unwrap();
                        let va: Vec<_> = a.iter().map(|c| (view(&c.job), c.token)).collect();
                        let vb: Vec<_> = b.iter().map(|c| (view(&c.job), c.token)).collect();
                        assert_eq!(va, vb, "fetch at step {step}");
                        held.extend(a);
                    }
                    5..=7 if !held.is_empty() => {
                        let c = held.swap_remove(fastrand::usize(..held.len()));
                        let outcome = match fastrand::u8(..6) {
                            0 => Outcome::Complete,
                            1 => Outcome::Retry {
                                delay: 1000.0,
                                error: format!("e{step}"),
                            },
                            2 => Outcome::Dead {
                                reason: format!("d{step}"),
                                failed: fastrand::bool(),
                            },
                            3 => Outcome::Discard,
                            4 => Outcome::Reschedule {
                                delay: 1000.0,
                                args: fastrand::bool().then(|| format!(r#"{{"r":{step}}}"#)),
                            },
                            _ => Outcome::Release,
                        };
                        // Now and then a stale token too.
                        let token = c.token + u64::from(fastrand::u8(..8) == 0);
                        let acks = vec![Ack {
                            token,
                            ..ack(&c, outcome)
                        }];
                        let a = r.finish(acks.clone()).await.unwrap();
                        let b = m.finish(acks).await.unwrap();
                        assert_eq!(a, b, "finish at step {step}");
                        if !a[0] {
                            held.push(c);
                        }
                    }
                    8 => {
                        let set =
                            [JobSet::Scheduled, JobSet::Retry, JobSet::Dead][fastrand::usize(..3)];
                        let (pa, _) = r.page(set, 1, 1).await.unwrap();
                        let id = pa.first().map(|j| j.id.clone());
                        if fastrand::bool() && set == JobSet::Dead {
                            let a = r.retry_dead(id.clone()).await.unwrap();
                            let b = m.retry_dead(id).await.unwrap();
                            assert_eq!(a, b, "retry_dead at step {step}");
                        } else {
                            let a = r.delete(set, id.clone()).await.unwrap();
                            let b = m.delete(set, id).await.unwrap();
                            assert_eq!(a, b, "delete at step {step}");
                        }
                    }
                    _ => {
                        let paused = fastrand::bool();
                        r.set_paused(name, paused).await.unwrap();
                        m.set_paused(name, paused).await.unwrap();
                    }
                }
                let qa: Vec<_> = r.queues().await.unwrap();
                let qb: Vec<_> = m.queues().await.unwrap();
                let counts = |q: &[QueueInfo]| {
                    q.iter()
                        .map(|q| {
                            let QueueInfo {
                                name,
                                ready,
                                scheduled,
                                retry,
                                dead,
                                paused,
                                running,
                                ..
                            } = q.clone();
                            (name, ready, scheduled, retry, dead, paused, running)
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(counts(&qa), counts(&qb), "queues after step {step}");
                for set in [JobSet::Scheduled, JobSet::Retry, JobSet::Dead] {
                    let (pa, ta) = r.page(set, 1, 1000).await.unwrap();
                    let (pb, tb) = m.page(set, 1, 1000).await.unwrap();
                    let mut pa: Vec<View> = pa.iter().map(view).collect();
                    let mut pb: Vec<View> = pb.iter().map(view).collect();
                    pa.sort();
                    pb.sort();
                    assert_eq!((pa, ta), (pb, tb), "{set:?} after step {step}");
                }
            }
            let (sa, sb) = (r.stats().await.unwrap(), m.stats().await.unwrap());
            let nums = |s: &Stats| (s.processed, s.failed, s.dead, s.stale_acks, s.reaped);
            assert_eq!(nums(&sa), nums(&sb));
        });
    }

    #[test]
    fn an_id_stored_already_makes_no_second_job() {
        let Some(srv) = server(&[]) else { return };
        let r = store(&srv);
        let m = Memory::named("", "ns");
        run(async {
            let first = job("a");
            let again = NewJob {
                args: r#"{"n":2}"#.into(),
                ..first.clone()
            };
            let later_again = NewJob {
                delay: 1000.0,
                unique_key: Some("k".into()),
                ..first.clone()
            };
            for (i, answer) in [
                r.enqueue(vec![first.clone(), again.clone()]).await.unwrap(),
                r.enqueue(vec![later_again.clone()]).await.unwrap(),
                m.enqueue(vec![first.clone(), again.clone()]).await.unwrap(),
                m.enqueue(vec![later_again.clone()]).await.unwrap(),
            ]
            .into_iter()
            .enumerate()
            {
                for j in answer {
                    let j = j.expect("the stored job, not None");
                    assert_eq!(
                        (j.id.as_str(), j.args.as_str()),
                        (first.id.as_str(), r#"{"n":1}"#),
                        "{i}"
                    );
                }
            }
            let counts =
                |q: Vec<QueueInfo>| q.iter().map(|q| (q.ready, q.scheduled)).collect::<Vec<_>>();
            assert_eq!(counts(r.queues().await.unwrap()), vec![(1, 0)]);
            assert_eq!(counts(m.queues().await.unwrap()), vec![(1, 0)]);
            // The unique key was not taken by the refused copy.
            assert!(r.enqueue(vec![unique("a", "k")]).await.unwrap()[0].is_some());
            // Done and deleted, the id is free again.
            let c = take(&r, "a", 1, 30.0).await;
            r.finish(vec![ack(&c[0], Outcome::Complete)]).await.unwrap();
            assert!(r.enqueue(vec![first.clone()]).await.unwrap()[0].is_some());
            assert_eq!(info(&r, "a").await.ready, 2);
        });
    }

    #[test]
    fn a_fetch_sent_again_gets_back_the_claims_it_made_that_are_still_held() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            s.enqueue((0..4).map(|_| job("a")).collect()).await.unwrap();
            let w = wanted("a", 0, 4);
            let first = s.fetch_request("w", &w, 2, 30.0, "", "f1").await.unwrap();
            assert_eq!(first.len(), 2);
            // The reply was lost, the fetch sent again (same request): the same two claims,
            // same tokens, and nothing more claimed.
            let again = s.fetch_request("w", &w, 2, 30.0, "", "f1").await.unwrap();
            let pairs = |c: &[Claim]| {
                c.iter()
                    .map(|c| (c.job.id.clone(), c.token))
                    .collect::<Vec<_>>()
            };
            assert_eq!(pairs(&first), pairs(&again));
            assert_eq!(info(&s, "a").await.ready, 2);
            // A claim finished meanwhile is not handed out again.
            s.finish(vec![ack(&first[0], Outcome::Complete)])
                .await
                .unwrap();
            let third = s.fetch_request("w", &w, 2, 30.0, "", "f1").await.unwrap();
            assert_eq!(pairs(&third), pairs(&first[1..]));
            // Another request claims afresh; no request leaves no marker.
            assert_eq!(
                s.fetch_request("w", &w, 1, 30.0, "", "f2")
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(s.fetch("w", &w, 1, 30.0, "").await.unwrap().len(), 1);
            let mut con = s.con.lock().1.clone();
            for (request, ttl_max) in [("f1", 31), ("f2", 31)] {
                let ttl: i64 = redis::cmd("TTL")
                    .arg(s.key(&format!("fetch:{request}")))
                    .query_async(&mut con)
                    .await
                    .unwrap();
                assert!((1..=ttl_max).contains(&ttl), "{request}: {ttl}");
            }
        });
    }

    #[test]
    fn an_enqueue_sent_again_answers_as_the_first_even_after_its_job_ran() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let j = job("a");
            let first = s
                .enqueue_request(std::slice::from_ref(&j), "req1")
                .await
                .unwrap();
            let c = take(&s, "a", 1, 30.0).await;
            s.finish(vec![ack(&c[0], Outcome::Complete)]).await.unwrap();
            // The reply was lost, the call sent again (same request): nothing new is stored.
            let again = s
                .enqueue_request(std::slice::from_ref(&j), "req1")
                .await
                .unwrap();
            assert_eq!(
                first[0].as_ref().map(|j| &j.id),
                again[0].as_ref().map(|j| &j.id)
            );
            assert_eq!(
                first[0].as_ref().map(|j| j.enqueued_at),
                again[0].as_ref().map(|j| j.enqueued_at)
            );
            assert_eq!(info(&s, "a").await.ready, 0);
            assert_eq!(s.stats().await.unwrap().processed, 1);
            // The marker expires: it lives for the attempts' timeouts and ten seconds more.
            let mut con = s.con.lock().1.clone();
            let ttl: i64 = redis::cmd("TTL")
                .arg(s.key("enq:req1"))
                .query_async(&mut con)
                .await
                .unwrap();
            assert!((11..=20).contains(&ttl), "{ttl}");
        });
    }

    #[test]
    fn a_due_time_is_read_by_the_backends_clock() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let t = s.now().await.unwrap();
            let at = |at: f64| NewJob {
                at: Some(at),
                delay: 5.0, // ignored when a due time is given
                ..job("a")
            };
            let out = s
                .enqueue(vec![at(t + 1000.0), at(t - 1000.0)])
                .await
                .unwrap();
            let (future, past) = (out[0].clone().unwrap(), out[1].clone().unwrap());
            assert!((future.run_at - (t + 1000.0)).abs() < 1e-3, "{future:?}");
            assert_eq!(past.run_at, past.enqueued_at);
            let q = info(&s, "a").await;
            assert_eq!((q.ready, q.scheduled), (1, 1));
            let (page, _) = s.page(JobSet::Scheduled, 1, 10).await.unwrap();
            assert!((page[0].run_at - (t + 1000.0)).abs() < 1e-3);
        });
    }

    /// A lease deleted by hand (or evicted) while the job was not handed on is put back: by the
    /// renewal of a worker that still runs it, by its ack, or by the reaper when the worker is
    /// gone (it then expires one lease later and is reaped like any other).
    #[test]
    fn a_vanished_lease_is_put_back_and_a_reaped_one_is_not() {
        let Some(srv) = server(&[]) else { return };
        let s = store(&srv);
        run(async {
            let mut con = s.con.lock().1.clone();
            let plain = s.con.lock().1.clone();
            let del = |args: Vec<String>| {
                let mut con = plain.clone();
                async move {
                    let _: () = redis::cmd(&args[0])
                        .arg(&args[1..])
                        .query_async(&mut con)
                        .await
                        .unwrap();
                }
            };
            s.enqueue(vec![job("a"), job("a"), job("a")]).await.unwrap();
            let c = take(&s, "a", 3, 30.0).await;
            let held: Vec<(String, String, u64)> = c
                .iter()
                .map(|c| (c.job.id.clone(), c.job.name.clone(), c.token))
                .collect();
            let run_key = s.key("run:a");
            // The lease zset; the run info too; the attempts too.
            del(vec!["DEL".into(), run_key.clone()]).await;
            del(vec![
                "HDEL".into(),
                s.key("runinfo"),
                c[1].job.id.clone(),
                c[2].job.id.clone(),
            ])
            .await;
            del(vec!["HDEL".into(), s.key("attempts"), c[2].job.id.clone()]).await;
            assert_eq!(s.renew(&held, 30.0).await.unwrap(), vec![true; 3]);
            let running: u64 = redis::cmd("ZCARD")
                .arg(&run_key)
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(running, 3);
            // Deleted again: the acks still count, no stale ones.
            del(vec!["DEL".into(), run_key.clone()]).await;
            let acks = c.iter().map(|c| ack(c, Outcome::Complete)).collect();
            assert_eq!(s.finish(acks).await.unwrap(), vec![true; 3]);
            let st = s.stats().await.unwrap();
            assert_eq!((st.processed, st.stale_acks), (3, 0));

            // A worker gone, its lease deleted: the reaper puts it back from the run info, and
            // reaps it once that lease is over.
            s.enqueue(vec![job("a")]).await.unwrap();
            let c = take(&s, "a", 1, 0.3).await;
            del(vec!["DEL".into(), run_key.clone()]).await;
            assert_eq!(s.reap().await.unwrap(), 0);
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(&run_key)
                .arg(format!("{}|{}", c[0].job.id, c[0].token))
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(score.is_some(), "the lease was not put back");
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(s.reap().await.unwrap(), 1);
            let again = take(&s, "a", 1, 30.0).await;
            assert_eq!(
                (again[0].job.id.clone(), again[0].job.fails),
                (c[0].job.id.clone(), 1)
            );
            // That first run is a zombie now: its renewal and its ack are refused (the job was
            // claimed again), and so are they after a reap that left the job in its list.
            let zombie = vec![(c[0].job.id.clone(), "a".to_string(), c[0].token)];
            assert_eq!(s.renew(&zombie, 30.0).await.unwrap(), vec![false]);
            assert_eq!(
                s.finish(vec![ack(&c[0], Outcome::Complete)]).await.unwrap(),
                vec![false]
            );
            s.finish(vec![ack(&again[0], Outcome::Complete)])
                .await
                .unwrap();
            s.enqueue(vec![job("a"), job("a")]).await.unwrap();
            let c = take(&s, "a", 1, 0.05).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(s.reap().await.unwrap(), 1);
            let zombie = vec![(c[0].job.id.clone(), "a".to_string(), c[0].token)];
            assert_eq!(s.renew(&zombie, 30.0).await.unwrap(), vec![false]);
            assert_eq!(
                s.finish(vec![ack(&c[0], Outcome::Complete)]).await.unwrap(),
                vec![false]
            );
            assert_eq!(info(&s, "a").await.ready, 2);
        });
    }
}
