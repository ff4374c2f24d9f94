-- ARGV: prefix, lease seconds, then (id, name, token) per held run. Extends (never shortens)
-- the leases still held; 1 per kept lease, 0 per lost one. A lease that vanished while the job
-- was not handed on (deleted by hand, evicted) is put back and kept.
local t = now()
local until_ = t + tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 3 do
  local key, m = P .. ':run:' .. ARGV[i + 1], member(ARGV[i], ARGV[i + 2])
  if redis.call('ZSCORE', key, m) then
    redis.call('ZADD', key, 'XX', 'GT', until_, m)
    out[#out + 1] = 1
  elseif lease_vanished(ARGV[i], ARGV[i + 1], ARGV[i + 2]) then
    restore_lease(ARGV[i], ARGV[i + 1], ARGV[i + 2], until_)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
