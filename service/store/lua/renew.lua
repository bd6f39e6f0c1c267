-- Extend the lease only while we still hold it.
-- KEYS: lease   ARGV: token, lease_ms
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
