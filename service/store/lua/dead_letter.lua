-- Add dead letters, each at most once per source (the shard entry it came from), fenced by
-- the leases of the shards they come from when those live on this Redis.
-- A drain that lost its lease, or a second try of a transaction whose reply was lost, then
-- cannot add a second letter for one job (a replay would send it twice).
-- KEYS: dead-letter stream, then per letter its once-marker, then the fenced leases
-- ARGV: letter count n, lease count m, marker_ttl_ms, then m tokens, then per letter:
--       field count f, then f times: name, value
-- Returns the number of letters added, or -1 when a lease is held by another drain.
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
for l = 1, m do
  if redis.call('GET', KEYS[1 + n + l]) ~= ARGV[3 + l] then
    return -1
  end
end
local added = 0
local i = 4 + m
for l = 1, n do
  local f = tonumber(ARGV[i])
  if redis.call('SET', KEYS[1 + l], 1, 'NX', 'PX', ARGV[3]) then
    local fields = {}
    for j = i + 1, i + 2 * f do
      fields[#fields + 1] = ARGV[j]
    end
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    added = added + 1
  end
  i = i + 1 + 2 * f
end
return added
