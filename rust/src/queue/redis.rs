//! `redis://` and `rediss://`: the queue contract on Redis, shared by processes and machines.
//!
//! Every operation is one Lua script (lua/*.lua, each prefixed with lua/common.lua), so each is
//! atomic; every key starts with the namespace's hash tag `{ns}`, so the scripts also run on a
//! Redis Cluster slot. Time comes from Redis (`TIME`), never from the client. Keys:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:data` | hash | job id -> the job (JSON: args, times, fails, attempt, meta, ...) |
//! | `{ns}:q:<name>` | list | ids ready to run, oldest first |
//! | `{ns}:scheduled`, `{ns}:retry` | zset | `id\|name` by due time |
//! | `{ns}:dead` | zset | `id\|name` by death time, the newest 10,000 |
//! | `{ns}:run:<name>` | zset | `id\|token` by lease deadline (ZCARD = running, max_concurrency) |
//! | `{ns}:runinfo` | hash | id -> worker, token, started_at, max_fails, check-in |
//! | `{ns}:names`, `{ns}:paused` | set | job names seen; paused names |
//! | `{ns}:u:<key>` | string | the id holding a unique key while it waits |
//! | `{ns}:cron:<slot>` | string | the id enqueued for a cron slot (expires after a day) |
//! | `{ns}:pools` | hash | worker id -> heartbeat (JSON) |
//! | `{ns}:stats` | hash | processed, failed, dead, stale_acks, reaped |
//! | `{ns}:waiters`, `{ns}:wake:<id>` | zset, list | consumers waiting, one wake-up token each |
//!
//! Consumers wait with BLPOP on their own wake list (a connection of their own, so the shared
//! multiplexed one never blocks); every script that makes work ready pushes a token to each.

use super::{Ack, Busy, Claim, JobData, JobSet, NewJob, Outcome, Pool, QueueInfo, Stats, Wanted};
use crate::errors::{Error, Result};
use crate::runtime::handle;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script};
use serde_json::Value;
use std::time::Duration;

/// Each connection attempt gives up after this; a command after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
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
    con: ConnectionManager,
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
}

fn backend(err: redis::RedisError) -> Error {
    Error::Backend(format!("redis: {err}"))
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// A job as the scripts store it (JSON) -> JobData, and its attempt.
fn job_of(raw: &str) -> Result<(JobData, u64)> {
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
    Ok((job, num(&v, "attempt") as u64))
}

impl RedisStore {
    /// Connect lazily; the first command (Queue.from_url pings) says whether Redis is there.
    pub(crate) fn open(url: &str, namespace: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| {
            Error::Invalid(format!(
                "invalid Redis URL (not shown: it may hold a password): {e}"
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let runtime = handle();
        let _inside = runtime.enter();
        let con =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(backend)?;
        Ok(RedisStore {
            client,
            con,
            prefix: format!("{{{namespace}}}"),
            scripts: Scripts::new(),
            epoch: parking_lot::Mutex::new(None),
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }

    async fn client_call<T: redis::FromRedisValue>(&self, args: &[&str]) -> Result<T> {
        let mut inv = self.scripts.client.prepare_invoke();
        inv.key(self.key("data")).arg(&self.prefix);
        for a in args {
            inv.arg(*a);
        }
        let mut con = self.con.clone();
        inv.invoke_async(&mut con).await.map_err(backend)
    }

    pub(crate) fn waiter(&self) -> RedisWaiter {
        RedisWaiter {
            id: super::new_id(),
            con: None,
            blocked: false,
        }
    }

    pub(crate) async fn now(&self) -> Result<f64> {
        let t: String = self.client_call(&["time"]).await?;
        t.parse()
            .map_err(|_| Error::Backend(format!("redis: TIME gave {t:?}")))
    }

    pub(crate) async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Option<JobData>>> {
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            let mut inv = self.scripts.enqueue.prepare_invoke();
            inv.key(self.key("data")).arg(&self.prefix);
            for job in chunk {
                inv.arg(&job.id)
                    .arg(&job.name)
                    .arg(&job.args)
                    .arg(job.delay)
                    .arg(job.unique_key.as_deref().unwrap_or(""))
                    .arg(job.meta.as_deref().unwrap_or(""));
            }
            let mut con = self.con.clone();
            let answer: Vec<String> = inv.invoke_async(&mut con).await.map_err(backend)?;
            let t: f64 = answer
                .first()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Error::Backend("redis: enqueue gave no time".into()))?;
            for (job, stored) in chunk.iter().zip(answer.iter().skip(1)) {
                out.push((stored == "1").then(|| JobData {
                    id: job.id.clone(),
                    name: job.name.clone(),
                    args: job.args.clone(),
                    enqueued_at: t,
                    run_at: t + job.delay.max(0.0),
                    fails: 0,
                    last_error: None,
                    unique_key: job.unique_key.clone(),
                    died_at: None,
                    reason: None,
                    meta: job.meta.clone(),
                }));
            }
        }
        Ok(out)
    }

    pub(crate) async fn enqueue_slot(&self, slot: String, job: NewJob) -> Result<bool> {
        let mut inv = self.scripts.enqueue_slot.prepare_invoke();
        inv.key(self.key("data"))
            .arg(&self.prefix)
            .arg(slot)
            .arg(&job.id)
            .arg(&job.name)
            .arg(&job.args);
        let mut con = self.con.clone();
        let won: i64 = inv.invoke_async(&mut con).await.map_err(backend)?;
        Ok(won == 1)
    }

    pub(crate) async fn fetch(
        &self,
        worker_id: &str,
        wanted: &[Wanted],
        max: usize,
        lease: f64,
        waiter_id: &str,
    ) -> Result<Vec<Claim>> {
        let mut inv = self.scripts.fetch.prepare_invoke();
        inv.key(self.key("data"))
            .arg(&self.prefix)
            .arg(worker_id)
            .arg(lease)
            .arg(max)
            .arg(waiter_id);
        for i in super::sample_order(wanted) {
            let w = &wanted[i];
            inv.arg(&w.name).arg(w.max_concurrency).arg(w.max_fails);
        }
        let mut con = self.con.clone();
        let flat: Vec<redis::Value> = inv.invoke_async(&mut con).await.map_err(backend)?;
        let mut claims = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            let bad = |e: redis::ParsingError| Error::Backend(format!("redis: fetch gave {e}"));
            let raw: String = redis::from_redis_value_ref(&pair[0]).map_err(bad)?;
            let token: u64 = redis::from_redis_value_ref(&pair[1]).map_err(bad)?;
            let (job, _) = job_of(&raw)?;
            claims.push(Claim { job, token });
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
        let mut con = self.con.clone();
        let fresh: Vec<i64> = inv.invoke_async(&mut con).await.map_err(backend)?;
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
        let mut con = self.con.clone();
        let kept: Vec<i64> = inv.invoke_async(&mut con).await.map_err(backend)?;
        Ok(kept.into_iter().map(|k| k == 1).collect())
    }

    pub(crate) async fn reap(&self) -> Result<u64> {
        let mut inv = self.scripts.reap.prepare_invoke();
        inv.key(self.key("data")).arg(&self.prefix);
        let mut con = self.con.clone();
        inv.invoke_async(&mut con).await.map_err(backend)
    }

    pub(crate) async fn wait_for_work(&self, waiter: &mut RedisWaiter, max: f64) {
        waiter.rotate_if_orphaned();
        // Register for wake-ups (again: fetch did already, unless the list just changed) and learn when the earliest scheduled job is due, in one call.
        let due: Result<String> = self.client_call(&["next_due", &waiter.id]).await;
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
                    max + RESPONSE_TIMEOUT.as_secs_f64(),
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
        let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
            .arg(&list)
            .arg(wait.max(0.01))
            .query_async(con)
            .await;
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
        let start = page.saturating_sub(1).saturating_mul(per_page);
        let stop = start + per_page.max(1) - 1;
        let flat: Vec<String> = self
            .client_call(&["page", set_name(set), &start.to_string(), &stop.to_string()])
            .await?;
        let total = flat.first().and_then(|t| t.parse().ok()).unwrap_or(0);
        let jobs = flat
            .iter()
            .skip(1)
            .map(|raw| job_of(raw).map(|(job, _)| job))
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
        let mut con = self.con.clone();
        let fields: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(self.key("stats"))
            .arg(&[
                "processed",
                "failed",
                "dead",
                "stale_acks",
                "reaped",
                "data_losses",
            ])
            .query_async(&mut con)
            .await
            .map_err(backend)?;
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
            self.id = super::new_id();
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
