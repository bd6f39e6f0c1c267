-- The api's own send of the job it just stored (service/lanes/app/inline.py): take the
-- shard's lease and note the send in one step, but only when a drain would send exactly
-- this job now: nobody holds the shard, it waits out no retry, the job is its head, and
-- no earlier send of it was cut off. Otherwise nothing is written and a drain sends it.
-- KEYS: lease, fence, retry, stream, inflight   ARGV: lease_ms, payload, now_ms
-- The job is known by its payload (it holds the job's own id), as XADD chose the entry id.
-- Returns {lease token, entry id}, or why not: 'busy', 'retry', 'behind' or 'cut_off'.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 'busy'
end
local not_before = tonumber(redis.call('HGET', KEYS[3], 'not_before_ms') or '0')
if not_before > tonumber(ARGV[3]) then
  return 'retry'
end
local head = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
if head == nil or head[2][2] ~= ARGV[2] then
  return 'behind'
end
if redis.call('HGET', KEYS[5], 'head') == head[1] then
  return 'cut_off'
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
redis.call('DEL', KEYS[5])
redis.call('HSET', KEYS[5], 'head', head[1], 'count', 1, 'lone', 0, 'suspect', '')
return {token, head[1]}
