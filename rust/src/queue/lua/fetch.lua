-- ARGV: prefix, worker id, lease seconds, max claims, waiter id (or ""), then (name,
-- max_concurrency, max_fails) per wanted name in the client's sampled order. The waiter is
-- registered for wake-ups here, so an enqueue right after an empty fetch still wakes it.
-- Promotes due scheduled and retry jobs, then claims: attempt + 1 (the fencing token), a lease
-- in the name's run zset, the unique key released.
-- Returns a flat array: job JSON, token, job JSON, token, ...
local t = now()
if ARGV[5] ~= '' then redis.call('ZADD', P .. ':waiters', t, ARGV[5]) end
promote(t)
local worker, lease, max = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local claimed = 0
for i = 6, #ARGV, 3 do
  if claimed >= max then break end
  local name, cap, max_fails = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if redis.call('SISMEMBER', P .. ':paused', name) == 0 then
    local room = max - claimed
    if cap > 0 then room = math.min(room, cap - redis.call('ZCARD', P .. ':run:' .. name)) end
    while room > 0 do
      local id = redis.call('LPOP', P .. ':q:' .. name)
      if not id then break end
      local job = load(id)
      if job then
        job.attempt = job.attempt + 1
        save(job)
        release_unique(job)
        redis.call('ZADD', P .. ':run:' .. name, t + lease, member(id, job.attempt))
        redis.call('HSET', P .. ':runinfo', id, cjson.encode({
          worker = worker, name = name, token = job.attempt, started_at = t,
          max_fails = max_fails,
        }))
        out[#out + 1] = cjson.encode(job)
        out[#out + 1] = job.attempt
        claimed = claimed + 1
        room = room - 1
      end
    end
  end
end
return out
