-- Note what is about to be sent (see service/delivery/crash_search.py), fenced by the lease.
-- KEYS: inflight, lease   ARGV: token, head_id, count, lone_crashes, suspect_last ('' = none)
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
redis.call('HDEL', KEYS[1], 'answer')  -- an answer belongs to the send of the head it was kept for
redis.call('HSET', KEYS[1], 'head', ARGV[2], 'count', ARGV[3], 'lone', ARGV[4],
  'suspect', ARGV[5])
return 1
