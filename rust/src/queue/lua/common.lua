-- Shared by every script (prepended when the scripts are built). Keys all start with the
-- namespace's hash tag, ARGV[1] (e.g. "{app}"), so every script runs on one Redis Cluster slot.
local P = ARGV[1]
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
local function member(id, name) return id .. '|' .. name end
local function load(id)
  local raw = redis.call('HGET', P .. ':data', id)
  if not raw then return nil end
  return cjson.decode(raw)
end
local function save(job) redis.call('HSET', P .. ':data', job.id, cjson.encode(job)) end
-- A job's data and its attempt counter (the fencing token) go together; 1 if it existed.
local function forget(id)
  redis.call('HDEL', P .. ':attempts', id)
  return redis.call('HDEL', P .. ':data', id)
end
local function wake()
  -- Every consumer that waited in the last minute gets one token on its own list (BLPOP).
  local cutoff = now() - 60
  redis.call('ZREMRANGEBYSCORE', P .. ':waiters', '-inf', cutoff)
  for _, w in ipairs(redis.call('ZRANGE', P .. ':waiters', 0, -1)) do
    redis.call('LPUSH', P .. ':wake:' .. w, 1)
    redis.call('LTRIM', P .. ':wake:' .. w, 0, 0)
    redis.call('EXPIRE', P .. ':wake:' .. w, 120)
  end
end
local function stat(field, n) redis.call('HINCRBY', P .. ':stats', field, n or 1) end
-- Counters of a batch: summed in the script (tally), written once at its end (flush_tally).
local counts = {}
local function tally(field, n) counts[field] = (counts[field] or 0) + (n or 1) end
local function flush_tally()
  for field, n in pairs(counts) do stat(field, n) end
end
-- The earliest due time in the scheduled and retry sets, or nil.
local function earliest_due()
  local first = nil
  for _, set in ipairs({':scheduled', ':retry'}) do
    local top = redis.call('ZRANGE', P .. set, 0, 0, 'WITHSCORES')
    if top[2] then
      local at = tonumber(top[2])
      if not first or at < first then first = at end
    end
  end
  return first
end
-- Move due scheduled and retry jobs (at most 1000 of each per call) to their ready lists.
local function promote(t)
  for _, set in ipairs({':scheduled', ':retry'}) do
    local due = redis.call('ZRANGEBYSCORE', P .. set, '-inf', t, 'LIMIT', 0, 1000)
    for _, m in ipairs(due) do
      local bar = string.find(m, '|', 1, true)
      redis.call('ZREM', P .. set, m)
      redis.call('RPUSH', P .. ':q:' .. string.sub(m, bar + 1), string.sub(m, 1, bar - 1))
    end
  end
end
-- Into the dead set, which keeps the newest 10,000 (the oldest are deleted).
local function add_dead(id, name, t)
  redis.call('ZADD', P .. ':dead', t, member(id, name))
  local n = redis.call('ZCARD', P .. ':dead')
  if n > 10000 then
    for _, m in ipairs(redis.call('ZRANGE', P .. ':dead', 0, n - 10001)) do
      forget(string.sub(m, 1, string.find(m, '|', 1, true) - 1))
    end
    redis.call('ZREMRANGEBYRANK', P .. ':dead', 0, n - 10001)
  end
end
-- Back to the front of its ready list (a released or reaped run): it runs next.
local function requeue_front(job, name, t)
  job.run_at = t
  save(job)
  redis.call('LPUSH', P .. ':q:' .. name, job.id)
end
-- A run whose lease entry is gone although nothing handed its job on (deleted by hand, or
-- evicted: asynq #1144): its lease may be put back. Handed on means the job is gone, or was
-- claimed again (its attempts counter moved past the token), or was reaped or finished (that
-- deletes the run info with the lease) and now waits in a set or list. A reaped run waits at the
-- front of its list, so the LPOS that tells it apart from a vanished lease is short; it only
-- runs for a missing lease.
local function lease_vanished(id, name, token)
  if redis.call('HEXISTS', P .. ':data', id) == 0 then return false end
  local attempts = redis.call('HGET', P .. ':attempts', id)
  if attempts and attempts ~= tostring(token) then return false end
  local info = redis.call('HGET', P .. ':runinfo', id)
  if info then return tostring(cjson.decode(info).token) == tostring(token) end
  local m = member(id, name)
  for _, set in ipairs({':scheduled', ':retry', ':dead'}) do
    if redis.call('ZSCORE', P .. set, m) then return false end
  end
  return not redis.call('LPOS', P .. ':q:' .. name, id)
end
-- The attempts counter of a run whose lease vanished may have gone with it: put it back, so the
-- next claim still gets a newer token than this run's.
local function keep_attempts(id, token)
  if not redis.call('HGET', P .. ':attempts', id) then
    redis.call('HSET', P .. ':attempts', id, token)
  end
end
-- Put back the lease of a run whose lease vanished, until `until_`.
local function restore_lease(id, name, token, until_)
  redis.call('ZADD', P .. ':run:' .. name, until_, member(id, token))
  redis.call('SADD', P .. ':names', name)
  keep_attempts(id, token)
end
local function release_unique(job)
  if job.unique_key and job.unique_key ~= cjson.null then
    local k = P .. ':u:' .. job.unique_key
    if redis.call('GET', k) == job.id then redis.call('DEL', k) end
  end
end
-- Names added to {ns}:names by this script call already (one SADD per name, not per job).
local known_names = {}
-- Store a new job, due `delay` seconds from t, or at epoch time `at` when given (Redis's clock,
-- not the enqueuer's). Returns its JSON and due time; false when its unique key is held; true
-- when its id is stored already (a retried enqueue, a user's own id): nothing is enqueued twice.
local function put(t, id, name, args, delay, unique, meta, at)
  if redis.call('HEXISTS', P .. ':data', id) == 1 then return true end
  if unique ~= '' then
    if not redis.call('SET', P .. ':u:' .. unique, id, 'NX') then return false end
  end
  local run_at = t + math.max(delay, 0)
  if at then run_at = math.max(at, t) end
  local job = {
    id = id, name = name, args = args, enqueued_at = t, run_at = run_at, fails = 0,
  }
  if unique ~= '' then job.unique_key = unique end
  if meta ~= '' then job.meta = meta end
  local raw = cjson.encode(job)
  redis.call('HSET', P .. ':data', id, raw)
  if not known_names[name] then
    redis.call('SADD', P .. ':names', name)
    known_names[name] = true
  end
  if run_at > t then
    redis.call('ZADD', P .. ':scheduled', run_at, member(id, name))
  else
    redis.call('RPUSH', P .. ':q:' .. name, id)
  end
  return raw, run_at
end
