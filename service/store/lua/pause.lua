-- Pause a workspace's lane for at least ARGV[2] ms: never shorten a pause already set.
-- An operator's four-hour pause must not end when an in-flight request's 429 says two
-- seconds, nor a longer Retry-After be cut by a shorter one from another worker.
-- KEYS: pause   ARGV: cause, duration ms   Returns 1 when this pause was set, else 0.
local remaining = redis.call('PTTL', KEYS[1])
if remaining == -1 or remaining >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
