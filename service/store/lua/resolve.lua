-- Remove a resolved prefix of the stream (delivered or dead-lettered), fenced by the lease.
-- The inflight note stays: its suspect range guides the sends after a crash.
-- KEYS: stream, lease, retry   ARGV: token, min_id_kept
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '=', ARGV[2])
redis.call('DEL', KEYS[3])
return removed
