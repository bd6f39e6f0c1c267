-- Give up the lease of a workspace's activity-log poller, if the caller still holds it, so a
-- restarted sweeper (a rolling deploy) takes over at once instead of when the lease runs out.
-- KEYS: lease
-- ARGV: holder token
-- Returns 1 when the caller held the lease (now released), else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
