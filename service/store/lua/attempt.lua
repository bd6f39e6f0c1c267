-- Record a failed attempt at the shard's head and when the shard may try again.
-- KEYS: retry, lease, inflight   ARGV: token, head_id, now_ms, not_before_ms, label
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
if redis.call('HGET', KEYS[1], 'head') ~= ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'head', ARGV[2], 'first_ms', ARGV[3], 'attempts', 0, 'history', '')
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local history = redis.call('HGET', KEYS[1], 'history')
redis.call('HSET', KEYS[1], 'last_ms', ARGV[3], 'not_before_ms', ARGV[4],
  'history', history .. ARGV[3] .. ' ' .. ARGV[5] .. '\n')
redis.call('DEL', KEYS[3])
return attempts
