-- Record newly found late failures and move the poller's cursor, only for the lease holder.
-- Every key is in the workspace's slot. Recording and moving the cursor in one script is
-- what lets a restarted (or another) poller resume with no gap and no repeat; counting in it
-- keeps the metric (the counts hash) equal to what was recorded.
-- KEYS: lease, cursor, late-failure stream, counts hash
-- ARGV: holder token, new cursor value, max entries, then per record (oldest first) its
--       counts field (lane|producer|type) and its JSON
-- Returns the number of records added, or -1 when the caller no longer holds the lease.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[i + 1])
  redis.call('HINCRBY', KEYS[4], ARGV[i], 1)
end
redis.call('SET', KEYS[2], ARGV[2])
return (#ARGV - 3) / 2
