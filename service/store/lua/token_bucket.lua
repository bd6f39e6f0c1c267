-- Reserve the next slot of a rate limit shared by every process (GCRA, one key).
-- KEYS: bucket (holds the theoretical arrival time, µs)
-- ARGV: interval_us (1 / rate), burst (slots that may be taken at once), max_wait_us,
--       hold_us (optional: instead of reserving, let no slot start before now + hold_us;
--       how an upstream 429's Retry-After pauses every process at once)
-- Returns the µs to wait before sending (≥ 0, the slot is reserved), or -(µs until a slot
-- within max_wait would be free) when none is (nothing reserved). Redis's clock decides,
-- so workers on hosts with skewed clocks still share one budget.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = (tonumber(ARGV[2]) - 1) * interval
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[4] then
  local hold = now + tonumber(ARGV[4]) + tolerance
  if hold > tat then
    redis.call('SET', KEYS[1], string.format('%.0f', hold), 'PX', math.ceil((hold - now) / 1000) + 1000)
  end
  return 0
end
if tat < now then
  tat = now
end
local wait = tat - tolerance - now
if wait < 0 then
  wait = 0
end
if wait > max_wait then
  return -math.max(1, math.ceil(wait - max_wait))
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return wait
