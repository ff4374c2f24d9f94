-- ARGV: prefix, then (id, name, args, delay, unique or "", meta or "") per job.
-- Returns the enqueue time (Redis TIME, as a string), then per job 1, or 0 when its unique key
-- is held; the client knows the rest of what it stored. Waiting consumers are woken when a job
-- is ready now, or is due before anything else scheduled (they sleep until the earliest).
local t = now()
local out = {tostring(t)}
local any = false
local first = nil
local looked = false
for i = 2, #ARGV, 6 do
  local delay = tonumber(ARGV[i + 3])
  if delay > 0 and not looked and not any then
    first = earliest_due()
    looked = true
  end
  local raw = put(t, ARGV[i], ARGV[i + 1], ARGV[i + 2], delay, ARGV[i + 4], ARGV[i + 5])
  out[#out + 1] = raw and 1 or 0
  if raw then
    if delay <= 0 or not first or t + delay < first then any = true end
  end
end
if any then wake() end
return out
