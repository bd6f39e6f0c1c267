-- resolve.lua, and when that empties the stream the lease goes back and the trigger
-- marker is cleared in the same step (release.lua with marker 0): a drain of lone sends
-- whose shard is empty stops without a round trip of its own. Nothing can be stranded:
-- a write after this finds no marker and sends a trigger.
-- KEYS: stream, lease, retry, trigger   ARGV: token, min_id_kept
-- Returns {removed, released (1/0)}, or -1 when the lease is not ours.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '=', ARGV[2])
redis.call('DEL', KEYS[3])
if redis.call('XLEN', KEYS[1]) > 0 then
  return {removed, 0}
end
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[4])
return {removed, 1}
