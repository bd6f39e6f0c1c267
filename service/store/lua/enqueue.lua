-- Store jobs in one shard's stream, request by request, and take the shard's trigger marker.
-- Every key is in the shard's slot. A request with a marker key (its id) is stored once:
-- if the marker is there an earlier try stored it, and only the marker's TTL is renewed,
-- which is still a write, so the caller's WAIT/WAITAOF on this connection covers that
-- earlier write too. A script runs atomically; under maxmemory it can only be refused at
-- its first write, so a request's jobs for this shard are stored whole or not at all.
-- KEYS: stream, trigger marker, then the request markers of the requests that have one
-- ARGV: trigger_ttl_ms, request_marker_ttl_ms, then per request:
--       marker value ('0' = no marker; '1' when there is no answer), job count n, then n times: field, payload
-- The marker keeps the first try's value (its answer), so a retry answers as the first did.
-- Returns: per request 1 (stored now) or the marker's value (stored by an earlier try),
-- then 1/0: whether the trigger marker was set here.
local out = {}
local marker = 2
local wrote = false
local i = 3
while i <= #ARGV do
  local key = nil
  local value = ARGV[i]
  if value ~= '0' then
    marker = marker + 1
    key = KEYS[marker]
  end
  local n = tonumber(ARGV[i + 1])
  i = i + 2
  if key and redis.call('PEXPIRE', key, ARGV[2]) == 1 then
    out[#out + 1] = redis.call('GET', key)
  else
    for j = i, i + 2 * n - 1, 2 do
      redis.call('XADD', KEYS[1], '*', ARGV[j], ARGV[j + 1])
    end
    if key then
      redis.call('SET', key, value, 'PX', ARGV[2])
    end
    out[#out + 1] = 1
    wrote = true
  end
  i = i + 2 * n
end
out[#out + 1] = (wrote and redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[1])) and 1 or 0
return out
