-- ARGV: prefix, command, ... The client's reads and repairs, each one atomic.
local cmd = ARGV[2]
local t = now()
if cmd == 'queues' then
  -- Per name: ready, scheduled, retry, dead, latency, paused, running (flat, 8 per name).
  -- Due jobs count as ready (as memory:// does), so they are promoted first.
  promote(t)
  local names = {}
  local order = {}
  local function info(name)
    if not names[name] then
      names[name] = {ready = 0, scheduled = 0, retry = 0, dead = 0, latency = 0,
                     paused = 0, running = 0}
      order[#order + 1] = name
    end
    return names[name]
  end
  for _, name in ipairs(redis.call('SMEMBERS', P .. ':names')) do
    local q = info(name)
    q.ready = redis.call('LLEN', P .. ':q:' .. name)
    q.running = redis.call('ZCARD', P .. ':run:' .. name)
    local first = redis.call('LINDEX', P .. ':q:' .. name, 0)
    if first then
      local job = load(first)
      if job then q.latency = math.max(0, t - job.run_at) end
    end
  end
  for _, set in ipairs({'scheduled', 'retry', 'dead'}) do
    for _, m in ipairs(redis.call('ZRANGE', P .. ':' .. set, 0, -1)) do
      local q = info(string.sub(m, string.find(m, '|', 1, true) + 1))
      q[set] = q[set] + 1
    end
  end
  for _, name in ipairs(redis.call('SMEMBERS', P .. ':paused')) do info(name).paused = 1 end
  local out = {}
  for _, name in ipairs(order) do
    local q = names[name]
    for _, v in ipairs({name, q.ready, q.scheduled, q.retry, q.dead, tostring(q.latency),
                        q.paused, q.running}) do
      out[#out + 1] = v
    end
  end
  return out
elseif cmd == 'page' then
  -- ARGV: set, start, stop. Returns total, then the jobs' JSON oldest first.
  local set = P .. ':' .. ARGV[3]
  local out = {redis.call('ZCARD', set)}
  local start, stop = tonumber(ARGV[4]), tonumber(ARGV[5])
  if stop < start then return out end
  for _, m in ipairs(redis.call('ZRANGE', set, start, stop)) do
    local raw = redis.call('HGET', P .. ':data', string.sub(m, 1, string.find(m, '|', 1, true) - 1))
    if raw then out[#out + 1] = raw end
  end
  return out
elseif cmd == 'retry_dead' then
  -- ARGV: id or "" for all. Back to ready, fails reset.
  local moved = 0
  local function revive(id, m)
    if redis.call('ZREM', P .. ':dead', m) == 0 then return end
    local job = load(id)
    if job then
      job.died_at = nil; job.reason = nil; job.fails = 0; job.run_at = t
      save(job)
      redis.call('RPUSH', P .. ':q:' .. job.name, id)
      moved = moved + 1
    end
  end
  if ARGV[3] ~= '' then
    local job = load(ARGV[3])
    if job then revive(ARGV[3], member(ARGV[3], job.name)) end
  else
    for _, m in ipairs(redis.call('ZRANGE', P .. ':dead', 0, -1)) do
      revive(string.sub(m, 1, string.find(m, '|', 1, true) - 1), m)
    end
  end
  if moved > 0 then wake() end
  return moved
elseif cmd == 'delete' then
  -- ARGV: set, id or "" for all. Releases the unique keys the jobs held.
  local set = P .. ':' .. ARGV[3]
  local deleted = 0
  local function drop(id, m)
    if redis.call('ZREM', set, m) == 0 then return end
    local job = load(id)
    if job then release_unique(job) end
    redis.call('HDEL', P .. ':data', id)
    deleted = deleted + 1
  end
  if ARGV[4] ~= '' then
    local job = load(ARGV[4])
    if job then drop(ARGV[4], member(ARGV[4], job.name)) end
  else
    for _, m in ipairs(redis.call('ZRANGE', set, 0, -1)) do
      drop(string.sub(m, 1, string.find(m, '|', 1, true) - 1), m)
    end
  end
  return deleted
elseif cmd == 'busy' then
  -- worker, id, name, started_at, checkin or "", checkin_at or "" per running job.
  local out = {}
  local all = redis.call('HGETALL', P .. ':runinfo')
  for i = 1, #all, 2 do
    local info = cjson.decode(all[i + 1])
    out[#out + 1] = info.worker
    out[#out + 1] = all[i]
    out[#out + 1] = info.name
    out[#out + 1] = tostring(info.started_at)
    out[#out + 1] = info.checkin or ''
    out[#out + 1] = info.checkin_at and tostring(info.checkin_at) or ''
  end
  return out
elseif cmd == 'checkin' then
  -- ARGV: id, token, message. 1 if the run still holds the job.
  local raw = redis.call('HGET', P .. ':runinfo', ARGV[3])
  if not raw then return 0 end
  local info = cjson.decode(raw)
  if tostring(info.token) ~= ARGV[4] then return 0 end
  info.checkin = ARGV[5]
  info.checkin_at = t
  redis.call('HSET', P .. ':runinfo', ARGV[3], cjson.encode(info))
  return 1
elseif cmd == 'paused' then
  -- ARGV: name, "1" or "0".
  if ARGV[4] == '1' then
    redis.call('SADD', P .. ':paused', ARGV[3])
  else
    redis.call('SREM', P .. ':paused', ARGV[3])
    wake()
  end
  return 1
elseif cmd == 'heartbeat' then
  -- ARGV: worker id, pool JSON or "" to leave, the epoch this worker saw last or "".
  -- Answers the current epoch. An epoch key that is gone means Redis lost its data (restarted
  -- without persistence, flushed): a new one is made, and the loss counted once, by the first
  -- worker that had seen the old one.
  if ARGV[4] == '' then
    redis.call('HDEL', P .. ':pools', ARGV[3])
  else
    local pool = cjson.decode(ARGV[4])
    pool.heartbeat_at = t
    redis.call('HSET', P .. ':pools', ARGV[3], cjson.encode(pool))
  end
  local epoch = redis.call('GET', P .. ':epoch')
  if not epoch then
    epoch = tostring(t) .. ':' .. ARGV[3]
    redis.call('SET', P .. ':epoch', epoch)
    if ARGV[5] ~= '' then stat('data_losses') end
  end
  return epoch
elseif cmd == 'pools' then
  -- Pools whose heartbeat is under a minute old (older ones are gone and removed).
  local out = {}
  local all = redis.call('HGETALL', P .. ':pools')
  for i = 1, #all, 2 do
    local pool = cjson.decode(all[i + 1])
    if t - pool.heartbeat_at > 60 then
      redis.call('HDEL', P .. ':pools', all[i])
    else
      out[#out + 1] = all[i + 1]
    end
  end
  return out
elseif cmd == 'next_due' then
  -- ARGV: consumer id. Registers it for wake-ups (before it blocks), then answers the seconds
  -- until the earliest scheduled or retry job is due, or "" when there is none.
  redis.call('ZADD', P .. ':waiters', t, ARGV[3])
  local first = earliest_due()
  if not first then return '' end
  return tostring(first - t)
elseif cmd == 'time' then
  return tostring(t)
end
return redis.error_reply('unknown client command ' .. tostring(cmd))
