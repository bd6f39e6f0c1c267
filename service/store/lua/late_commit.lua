-- Record newly found late failures and move the poller's cursor, only for the lease holder.
-- Every key is in the workspace's slot. Recording and moving the cursor in one script is
-- what lets a restarted (or another) poller resume with no gap and no repeat; counting in it
-- keeps the metric (the counts hash) equal to what was recorded.
-- The stream keeps its newest `max entries`; once it is full, the re-send marks of records
-- it let go are deleted with them (they may hold payload values: kept no longer than the
-- record they describe). Marks are an operator's re-sends, so the hash stays small.
-- KEYS: lease, cursor, late-failure stream, counts hash, re-send marks hash
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
if #ARGV > 3 and redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[3]) then
  local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1][1]
  local first_ms, first_seq = string.match(first, '^(%d+)-(%d+)$')
  first_ms, first_seq = tonumber(first_ms), tonumber(first_seq)
  for _, id in ipairs(redis.call('HKEYS', KEYS[5])) do
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    ms, seq = tonumber(ms), tonumber(seq)
    if ms and (ms < first_ms or (ms == first_ms and seq < first_seq)) then
      redis.call('HDEL', KEYS[5], id)
    end
  end
end
return (#ARGV - 3) / 2
