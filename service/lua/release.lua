-- Give the lease back, clear the debounce marker, and say how much is still queued,
-- so a drain that stops can never strand a job written just before it stopped.
-- KEYS: lease, trigger, stream   ARGV: token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('DEL', KEYS[2])
return redis.call('XLEN', KEYS[3])
