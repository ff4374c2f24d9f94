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
    fails = 0, attempt = 0,
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
