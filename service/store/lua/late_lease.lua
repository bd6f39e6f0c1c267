-- Take or keep the lease of a workspace's activity-log poller (one holder cluster-wide).
-- KEYS: lease
-- ARGV: holder token, lease ms
-- Returns 1 when the caller holds the lease now (taken or renewed), else 0.
local held = redis.call('GET', KEYS[1])
if held == false or held == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
