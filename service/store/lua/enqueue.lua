-- Store jobs in shards' streams, request by request, and take each shard's trigger marker.
-- One call carries one or more *parts*, each one shard: on a standalone Redis every part of
-- a group commit goes in one call (one command to pack and one reply to parse, instead of
-- one per shard); on a cluster a call carries one part, since its keys must share a slot.
-- ARGV[1] = number of parts p, then per part its key count and argument count (2p values),
-- then each part's arguments; KEYS are the parts' keys, in the same order.
-- A part's keys: stream, trigger marker, then the request markers of the requests that
-- have one. A part's arguments: trigger_ttl_ms, request_marker_ttl_ms, then per request:
--       marker value ('0' = no marker; '1' when there is no answer), producer name ('' = none),
--       job count n, then n times: field, payload
-- A request with a marker key (its id) is stored once: if the marker is there an earlier
-- try stored it, and only the marker's TTL is renewed, which is still a write, so the
-- caller's WAIT/WAITAOF on this connection covers that earlier write too. A script runs
-- atomically. Over maxmemory Redis refuses a script's first write that needs memory and
-- lets every write after any first one through, so the renewals (PEXPIRE, allowed over
-- maxmemory) come last, after every part's XADDs: a retry's renewal earlier in the call let
-- the other requests' XADDs after it fill memory past the limit. So over maxmemory each
-- part that stores something is refused, and a retry whose jobs are stored still answers
-- as the first try did. A part that raises (a key of the wrong type, refused over
-- maxmemory) answers an error in its place and the other parts go on, as they would as
-- calls of their own.
-- Each entry is {field: payload}, plus {p: producer} when the request names one.
-- The marker keeps the first try's value (its answer), so a retry answers as the first did.
-- Returns per part: per request 1 (stored now) or the marker's value (stored by an earlier
-- try), then whether the trigger marker was set here: 0 no; 1 yes; 2 yes, but the stream's
-- head has waited longer than the marker lives, so an earlier trigger for it is still
-- unserved (workers down or behind) and another one is only a backstop, not live traffic.
local function store_part(k, a, last, renewals)
  local stream, trigger = KEYS[k + 1], KEYS[k + 2]
  local trigger_ttl, marker_ttl = ARGV[a + 1], ARGV[a + 2]
  local out = {}
  local marker = k + 2
  local wrote = false
  local i = a + 3
  while i <= last do
    local key = nil
    local value = ARGV[i]
    if value ~= '0' then
      marker = marker + 1
      key = KEYS[marker]
    end
    local producer = ARGV[i + 1]
    local n = tonumber(ARGV[i + 2])
    i = i + 3
    local earlier = key and redis.call('GET', key)
    if earlier then
      out[#out + 1] = earlier
      renewals[#renewals + 1] = {key, marker_ttl}
    else
      if producer == '' then
        for j = i, i + 2 * n - 1, 2 do
          redis.call('XADD', stream, '*', ARGV[j], ARGV[j + 1])
        end
      else
        for j = i, i + 2 * n - 1, 2 do
          redis.call('XADD', stream, '*', ARGV[j], ARGV[j + 1], 'p', producer)
        end
      end
      if key then
        redis.call('SET', key, value, 'PX', marker_ttl)
      end
      out[#out + 1] = 1
      wrote = true
    end
    i = i + 2 * n
  end
  if not (wrote and redis.call('SET', trigger, 1, 'NX', 'PX', trigger_ttl)) then
    out[#out + 1] = 0
    return out
  end
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local head_ms = tonumber(string.match(head, '^(%d+)'))
  out[#out + 1] = (now_ms - head_ms > tonumber(trigger_ttl)) and 2 or 1
  return out
end

local parts = tonumber(ARGV[1])
local replies = {}
local renewals = {}
local k, a = 0, 1 + 2 * parts
for p = 1, parts do
  local key_count, arg_count = tonumber(ARGV[2 * p]), tonumber(ARGV[2 * p + 1])
  local renewed = {}
  local ok, reply = pcall(store_part, k, a, a + arg_count, renewed)
  if ok then
    replies[p] = reply
    for _, renewal in ipairs(renewed) do
      renewals[#renewals + 1] = renewal
    end
  else
    replies[p] = redis.error_reply(type(reply) == 'table' and reply.err or tostring(reply))
  end
  k, a = k + key_count, a + arg_count
end
for _, renewal in ipairs(renewals) do
  redis.call('PEXPIRE', renewal[1], renewal[2])
end
return replies
