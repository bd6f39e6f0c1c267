-- Remove a resolved prefix of the stream (delivered or dead-lettered), fenced by the lease.
-- KEYS: stream, lease, retry, inflight   ARGV: token, min_id_kept
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '=', ARGV[2])
redis.call('DEL', KEYS[3], KEYS[4])
return removed
