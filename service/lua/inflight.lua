-- Note what is about to be sent. If the same head is still noted, the last holder died
-- before any outcome: count it, so a job that kills its worker is isolated, then quarantined.
-- KEYS: inflight, lease   ARGV: token, head_id, count
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local crashes = 0
if redis.call('HGET', KEYS[1], 'head') == ARGV[2] then
  crashes = tonumber(redis.call('HGET', KEYS[1], 'crashes') or '0') + 1
end
redis.call('HSET', KEYS[1], 'head', ARGV[2], 'count', ARGV[3], 'crashes', crashes)
return crashes
