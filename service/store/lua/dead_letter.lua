-- Add dead letters, each at most once per shard entry when it names one, fenced by the
-- leases of the shards they come from when those live on this Redis.
-- A drain that lost its lease, or a second try of a write whose reply was lost, then
-- cannot add a second letter for one job (a replay would send it twice).
-- KEYS: dead-letter stream, then the once-markers (of letters that name an entry), then
--       the fenced leases
-- ARGV: letter count n, marker count k, lease count m, marker_ttl_ms, then m tokens, then
--       per letter: has_marker (0/1), field count f, then f times: name, value
-- Returns per letter 1 (added) or 0 (its entry already has one), or -1 when a lease is held
-- by another drain.
local n = tonumber(ARGV[1])
local k = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
for l = 1, m do
  if redis.call('GET', KEYS[1 + k + l]) ~= ARGV[4 + l] then
    return -1
  end
end
local added = {}
local marker = 1
local i = 5 + m
for _ = 1, n do
  local fresh = true
  if ARGV[i] == '1' then
    marker = marker + 1
    fresh = redis.call('SET', KEYS[marker], 1, 'NX', 'PX', ARGV[4])
  end
  local f = tonumber(ARGV[i + 1])
  if fresh then
    local fields = {}
    for j = i + 2, i + 1 + 2 * f do
      fields[#fields + 1] = ARGV[j]
    end
    redis.call('XADD', KEYS[1], '*', unpack(fields))
  end
  added[#added + 1] = fresh and 1 or 0
  i = i + 2 + 2 * f
end
return added
