-- The api's own send got an answer it does not settle itself (anything but a 2xx): keep
-- the answer with the send's in-flight note and give the shard back, so the drain its
-- trigger starts settles the job by the lane's policy as if it had sent it, without
-- sending it again (workers/drain/heads.py `NextRequest.answer`). Fenced by the lease,
-- and only for the head the note names. The trigger marker is cleared: the caller sends
-- the trigger.
-- KEYS: inflight, lease, trigger   ARGV: token, head_id, answer
-- Returns 1, or -1 when the lease or the note is no longer this send's.
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'head') ~= ARGV[2] then
  return -1
end
redis.call('HSET', KEYS[1], 'answer', ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3])
return 1
