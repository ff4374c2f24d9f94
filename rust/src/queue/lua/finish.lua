-- ARGV: prefix, then (id, name, token, outcome, delay, text, args or "") per finished run.
-- Applies each outcome only if the run still holds the job under its token (else STALE, 0); a
-- run whose lease vanished without the job being handed on (lease_vanished) still holds it.
local t = now()
local out = {}
local wake_them = false
-- A release, or a retry or reschedule due before everything else scheduled (consumers sleep
-- until the earliest), wakes the waiting consumers. Called before the job joins its set.
local first, looked = nil, false
local function due_at(at)
  if wake_them then return end
  if not looked then
    first = earliest_due()
    looked = true
  end
  if not first or at < first then wake_them = true end
end
for i = 2, #ARGV, 7 do
  local id, name, token, outcome = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local delay, text, args = tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6]
  local held = redis.call('ZREM', P .. ':run:' .. name, member(id, token)) == 1
  if not held and lease_vanished(id, name, token) then
    keep_attempts(id, token)
    held = true
  end
  if not held then
    tally('stale_acks')
    out[#out + 1] = 0
  else
    redis.call('HDEL', P .. ':runinfo', id)
    out[#out + 1] = 1
    -- Complete and discard need not read the job (the common case stays cheap); a job deleted
    -- while running is not counted (as memory:// does).
    if outcome == 'complete' then
      if forget(id) == 1 then tally('processed') end
    elseif outcome == 'discard' then
      if forget(id) == 1 then tally('processed'); tally('failed') end
    end
    local job = nil
    if outcome ~= 'complete' and outcome ~= 'discard' then job = load(id) end
    if job then
      if outcome == 'retry' then
        tally('processed'); tally('failed')
        job.fails = job.fails + 1
        job.last_error = text
        job.run_at = t + math.max(delay, 0)
        save(job)
        due_at(job.run_at)
        redis.call('ZADD', P .. ':retry', job.run_at, member(id, name))
      elseif outcome == 'dead' or outcome == 'dead_failed' then
        tally('processed'); tally('dead')
        if outcome == 'dead_failed' then
          tally('failed')
          job.fails = job.fails + 1
          job.last_error = text
        end
        job.died_at = t
        job.reason = text
        save(job)
        add_dead(id, name, t)
      elseif outcome == 'reschedule' then
        tally('processed')
        if args ~= '' then job.args = args end
        job.run_at = t + math.max(delay, 0)
        save(job)
        due_at(job.run_at)
        redis.call('ZADD', P .. ':scheduled', job.run_at, member(id, name))
      elseif outcome == 'release' then
        requeue_front(job, name, t)
        wake_them = true
      end
    end
  end
end
flush_tally()
if wake_them then wake() end
return out
