-- ARGV: prefix, slot, id, name, args, delay, unique or "", meta or "". Enqueue once per cron
-- slot across every process: 1 when this call won the slot and stored the job. The slot stays
-- taken even when the job's unique key was held (as memory:// does).
if not redis.call('SET', P .. ':cron:' .. ARGV[2], ARGV[3], 'NX', 'EX', 86400) then return 0 end
local t = now()
local delay = tonumber(ARGV[6])
local first = nil
if delay > 0 then first = earliest_due() end
if type(put(t, ARGV[3], ARGV[4], ARGV[5], delay, ARGV[7], ARGV[8])) ~= 'string' then
  return 0
end
if delay <= 0 or not first or t + delay < first then wake() end
return 1
