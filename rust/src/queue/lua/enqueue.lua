-- ARGV: prefix, then (id, name, args, delay, unique or "", meta or "") per job.
-- Returns the enqueue time (Redis TIME, as a string), then per job 1, or 0 when its unique key
-- is held; the client knows the rest of what it stored.
local t = now()
local out = {tostring(t)}
local any = false
for i = 2, #ARGV, 6 do
  local delay = tonumber(ARGV[i + 3])
  local raw = put(t, ARGV[i], ARGV[i + 1], ARGV[i + 2], delay, ARGV[i + 4], ARGV[i + 5])
  out[#out + 1] = raw and 1 or 0
  if raw and delay <= 0 then any = true end
end
if any then wake() end
return out
