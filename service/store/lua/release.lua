-- Give the lease back, settle the debounce marker, and say how much is still queued,
-- so a drain that stops can never strand a job written just before it stopped.
-- marker_ms = 0: clear the marker (the next write triggers a drain); > 0: the drain has
-- scheduled its own re-trigger, so the marker stays that long and writes and sweeps in
-- the meantime send no triggers of their own.
-- KEYS: lease, trigger, stream   ARGV: token, marker_ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local marker_ms = tonumber(ARGV[2]) or 0
if marker_ms > 0 then
  redis.call('SET', KEYS[2], 1, 'PX', marker_ms)
else
  redis.call('DEL', KEYS[2])
end
return redis.call('XLEN', KEYS[3])
