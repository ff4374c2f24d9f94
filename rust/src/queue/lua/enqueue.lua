-- ARGV: prefix, request id, seconds its marker lives, then (id, name, args, delay, due time or
-- "", unique or "", meta or "") per job.
-- Returns the enqueue time (Redis TIME, as a string), then per job 1 when stored, 0 when its
-- unique key is held, or the stored job's JSON when its id was stored already (nothing is
-- enqueued twice); the client knows the rest of what it stored. The same call sent again after
-- its reply was lost carries the same request id: while its marker `{ns}:enq:<request>` lives,
-- it answers what the first did and changes nothing (even if the jobs ran and were deleted
-- meanwhile). Waiting consumers are woken when a job is ready now, or is due before anything
-- else scheduled (they sleep until the earliest).
local marker = P .. ':enq:' .. ARGV[2]
local seen = redis.call('GET', marker)
if seen then
  local bar = string.find(seen, '|', 1, true)
  local out = {string.sub(seen, 1, bar - 1)}
  local k = bar
  for i = 4, #ARGV, 7 do
    k = k + 1
    local code = string.sub(seen, k, k)
    if code == '2' then
      out[#out + 1] = redis.call('HGET', P .. ':data', ARGV[i]) or 1
    else
      out[#out + 1] = tonumber(code)
    end
  end
  return out
end
local t = now()
local out = {tostring(t)}
local codes = {}
local any = false
local first = nil
local looked = false
for i = 4, #ARGV, 7 do
  local delay, at = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  if not looked and not any and ((at and at > t) or (not at and delay > 0)) then
    first = earliest_due()
    looked = true
  end
  local raw, run_at = put(t, ARGV[i], ARGV[i + 1], ARGV[i + 2], delay, ARGV[i + 5], ARGV[i + 6], at)
  if raw == true then
    out[#out + 1] = redis.call('HGET', P .. ':data', ARGV[i])
    codes[#codes + 1] = '2'
  elseif raw then
    out[#out + 1] = 1
    codes[#codes + 1] = '1'
    if run_at <= t or not first or run_at < first then any = true end
  else
    out[#out + 1] = 0
    codes[#codes + 1] = '0'
  end
end
redis.call('SET', marker, tostring(t) .. '|' .. table.concat(codes), 'EX', tonumber(ARGV[3]))
if any then wake() end
return out
