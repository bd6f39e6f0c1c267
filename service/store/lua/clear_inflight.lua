-- Forget the note of the last send (it got an answer, or the drain hands the shard over),
-- fenced by the lease: a drain that lost its lease must not erase the next holder's note.
-- KEYS: inflight, lease   ARGV: token
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return -1
end
redis.call('DEL', KEYS[1])
return 1
