-- Store jobs in one shard's stream, request by request, and take the shard's trigger marker.
-- Every key is in the shard's slot. A request with a marker key (its id) is stored once:
-- if the marker is there an earlier try stored it, and only the marker's TTL is renewed,
-- which is still a write, so the caller's WAIT/WAITAOF on this connection covers that
-- earlier write too. A script runs atomically; under maxmemory it can only be refused at
-- its first write, so a request's jobs for this shard are stored whole or not at all.
-- KEYS: stream, trigger marker, then the request markers of the requests that have one
-- ARGV: trigger_ttl_ms, request_marker_ttl_ms, then per request:
--       marker value ('0' = no marker; '1' when there is no answer), producer name ('' = none),
--       job count n, then n times: field, payload
-- Each entry is {field: payload}, plus {p: producer} when the request names one.
-- The marker keeps the first try's value (its answer), so a retry answers as the first did.
-- Returns: per request 1 (stored now) or the marker's value (stored by an earlier try),
-- then whether the trigger marker was set here: 0 no; 1 yes; 2 yes, but the stream's head
-- has waited longer than the marker lives, so an earlier trigger for it is still unserved
-- (workers down or behind) and another one is only a backstop, not live traffic.
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
  local producer = ARGV[i + 1]
  local n = tonumber(ARGV[i + 2])
  i = i + 3
  if key and redis.call('PEXPIRE', key, ARGV[2]) == 1 then
    out[#out + 1] = redis.call('GET', key)
  else
    if producer == '' then
      for j = i, i + 2 * n - 1, 2 do
        redis.call('XADD', KEYS[1], '*', ARGV[j], ARGV[j + 1])
      end
    else
      for j = i, i + 2 * n - 1, 2 do
        redis.call('XADD', KEYS[1], '*', ARGV[j], ARGV[j + 1], 'p', producer)
      end
    end
    if key then
      redis.call('SET', key, value, 'PX', ARGV[2])
    end
    out[#out + 1] = 1
    wrote = true
  end
  i = i + 2 * n
end
if not (wrote and redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[1])) then
  out[#out + 1] = 0
  return out
end
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local head_ms = tonumber(string.match(head, '^(%d+)'))
out[#out + 1] = (now_ms - head_ms > tonumber(ARGV[1])) and 2 or 1
return out
