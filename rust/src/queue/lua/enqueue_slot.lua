-- ARGV: prefix, slot, id, name, args. Enqueue once per cron slot across every process.
if not redis.call('SET', P .. ':cron:' .. ARGV[2], ARGV[3], 'NX', 'EX', 86400) then return 0 end
put(now(), ARGV[3], ARGV[4], ARGV[5], 0, '', '')
wake()
return 1
