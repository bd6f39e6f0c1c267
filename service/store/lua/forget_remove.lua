-- Remove one person's entries from a shard's stream by id, fenced by the lease forget
-- holds, so no drain has them read and unsent. When the head goes, the retry state
-- (attempts at that head) goes with it; the in-flight note stays, as after a resolve:
-- it names ids only, and crash search reads it against whatever head comes next.
-- KEYS: stream, lease, retry   ARGV: token, ids...
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
local removed = redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
if head then
  for i = 2, #ARGV do
    if ARGV[i] == head[1] then
      redis.call('DEL', KEYS[3])
      break
    end
  end
end
return removed
