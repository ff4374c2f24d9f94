-- ARGV: prefix. Requeues runs whose lease expired (their worker crashed or froze). A lost run
-- counts as a failure: past its max_fails the job is dead instead of looping forever.
-- Then puts back the leases that vanished (deleted by hand, evicted) of runs whose job was not
-- handed on, found through their run info: each run has one entry there and one lease, so the
-- run info is read only when the two disagree in number. A restored lease lasts one lease from
-- now: renewed if its worker lives, reaped like any other if not.
local t = now()
local reaped = 0
local requeued = false
local running = 0
for _, name in ipairs(redis.call('SMEMBERS', P .. ':names')) do
  local key = P .. ':run:' .. name
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. t)) do
    redis.call('ZREM', key, m)
    reaped = reaped + 1
    local id = string.sub(m, 1, string.find(m, '|', 1, true) - 1)
    local info = redis.call('HGET', P .. ':runinfo', id)
    redis.call('HDEL', P .. ':runinfo', id)
    local max_fails = 0
    if info then max_fails = cjson.decode(info).max_fails or 0 end
    local job = load(id)
    if job then
      job.fails = job.fails + 1
      job.last_error = 'lease expired: the worker running it was lost'
      if max_fails > 0 and job.fails >= max_fails then
        job.died_at = t
        job.reason = job.last_error
        save(job)
        tally('dead')
        add_dead(id, name, t)
      else
        requeue_front(job, name, t)
        requeued = true
      end
    end
  end
  running = running + redis.call('ZCARD', key)
end
if redis.call('HLEN', P .. ':runinfo') ~= running then
  local all = redis.call('HGETALL', P .. ':runinfo')
  for i = 1, #all, 2 do
    local id, info = all[i], cjson.decode(all[i + 1])
    if not redis.call('ZSCORE', P .. ':run:' .. info.name, member(id, info.token))
        and lease_vanished(id, info.name, info.token) then
      restore_lease(id, info.name, info.token, t + (info.lease or 0))
    end
  end
end
if reaped > 0 then tally('reaped', reaped) end
flush_tally()
if requeued then wake() end
return reaped
