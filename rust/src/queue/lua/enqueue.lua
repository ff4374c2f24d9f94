-- ARGV: prefix, then (id, name, args, delay, unique or "", meta or "") per job.
-- Returns per job its stored JSON, or false when its unique key is held.
local t = now()
local out = {}
local any = false
for i = 2, #ARGV, 6 do
  local raw = put(t, ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5])
  out[#out + 1] = raw
  if raw and tonumber(ARGV[i + 3]) <= 0 then any = true end
end
if any then wake() end
return out
