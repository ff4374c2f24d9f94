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
local function release_unique(job)
  if job.unique_key and job.unique_key ~= cjson.null then
    local k = P .. ':u:' .. job.unique_key
    if redis.call('GET', k) == job.id then redis.call('DEL', k) end
  end
end
-- Names added to {ns}:names by this script call already (one SADD per name, not per job).
local known_names = {}
-- Store a new job: false when its unique key is held. Returns the stored JSON.
local function put(t, id, name, args, delay, unique, meta)
  if unique ~= '' then
    if not redis.call('SET', P .. ':u:' .. unique, id, 'NX') then return false end
  end
  local job = {
    id = id, name = name, args = args, enqueued_at = t, run_at = t + math.max(delay, 0),
    fails = 0,
  }
  if unique ~= '' then job.unique_key = unique end
  if meta ~= '' then job.meta = meta end
  local raw = cjson.encode(job)
  redis.call('HSET', P .. ':data', id, raw)
  if not known_names[name] then
    redis.call('SADD', P .. ':names', name)
    known_names[name] = true
  end
  if delay > 0 then
    redis.call('ZADD', P .. ':scheduled', job.run_at, member(id, name))
  else
    redis.call('RPUSH', P .. ':q:' .. name, id)
  end
  return raw
end
