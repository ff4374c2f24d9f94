-- ARGV: prefix, worker id, lease seconds, max claims, waiter id (or ""), request id (or ""),
-- seconds its marker lives, then (name, max_concurrency, max_fails) per wanted name in the
-- client's sampled order. The waiter is registered for wake-ups here, so an enqueue right after
-- an empty fetch still wakes it.
-- Promotes due scheduled and retry jobs, then claims: attempts + 1 (the fencing token), a lease
-- in the name's run zset, the unique key released. A fetch that claimed something leaves
-- `{ns}:fetch:<request>` (its claims) for a lease: the same fetch sent again after its reply was
-- lost answers those claims that are still held instead of claiming more, so they are not
-- leased to nobody until the reaper counts them as failures.
-- Returns a flat array: job JSON, token, job JSON, token, ...
local t = now()
if ARGV[5] ~= '' then redis.call('ZADD', P .. ':waiters', t, ARGV[5]) end
local marker = ARGV[6] ~= '' and (P .. ':fetch:' .. ARGV[6]) or nil
if marker then
  local seen = redis.call('GET', marker)
  if seen then
    local out = {}
    for _, c in ipairs(cjson.decode(seen)) do
      if redis.call('ZSCORE', P .. ':run:' .. c[1], member(c[2], c[3])) then
        local raw = redis.call('HGET', P .. ':data', c[2])
        if raw then
          out[#out + 1] = raw
          out[#out + 1] = c[3]
        end
      end
    end
    return out
  end
end
promote(t)
local worker, lease, max = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local worker_json = cjson.encode(worker)
local out = {}
local claimed = 0
local made = {}
for i = 8, #ARGV, 3 do
  if claimed >= max then break end
  local name, cap, max_fails = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if redis.call('SISMEMBER', P .. ':paused', name) == 0 then
    local room = max - claimed
    if cap > 0 then room = math.min(room, cap - redis.call('ZCARD', P .. ':run:' .. name)) end
    -- The run's info (JSON) is the same for every claim of this name but its token: built once.
    local info = '{"worker":' .. worker_json .. ',"name":' .. cjson.encode(name) ..
      ',"started_at":' .. tostring(t) .. ',"max_fails":' .. max_fails .. ',"lease":' ..
      tostring(lease) .. ',"token":'
    while room > 0 do
      local id = redis.call('LPOP', P .. ':q:' .. name)
      if not id then break end
      -- The stored JSON goes out as it is: decoded only when it holds a unique key.
      local raw = redis.call('HGET', P .. ':data', id)
      if raw then
        local token = redis.call('HINCRBY', P .. ':attempts', id, 1)
        if string.find(raw, '"unique_key"', 1, true) then release_unique(cjson.decode(raw)) end
        redis.call('ZADD', P .. ':run:' .. name, t + lease, member(id, token))
        redis.call('HSET', P .. ':runinfo', id, info .. token .. '}')
        out[#out + 1] = raw
        out[#out + 1] = token
        made[#made + 1] = {name, id, token}
        claimed = claimed + 1
        room = room - 1
      end
    end
  end
end
if marker and claimed > 0 then
  redis.call('SET', marker, cjson.encode(made), 'EX', tonumber(ARGV[7]))
end
return out
