-- Forget a workspace's linger chain, only if the given shard still leads it.
-- KEYS: linger chain   ARGV: shard
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
