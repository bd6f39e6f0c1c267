-- A workspace's backlog in one call: entries waiting in KEYS (its shard streams) and the
-- oldest entry's time, with the server's clock. One node only (standalone Redis): every
-- stream sits in a slot of its own, so a cluster reads them per key instead.
-- Returns {entries, oldest_ms or -1, now_ms}.
local entries, oldest = 0, -1
for _, stream in ipairs(KEYS) do
    local length = redis.call('XLEN', stream)
    if length > 0 then
        entries = entries + length
        local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
        local ms = tonumber(string.match(head[1][1], '^(%d+)'))
        if oldest < 0 or ms < oldest then
            oldest = ms
        end
    end
end
local now = redis.call('TIME')
return {entries, oldest, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}
