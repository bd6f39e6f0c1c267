-- Remove dead letters by id and count the ones that were still there.
-- Deleting and counting in one script keeps the count exact: a letter a racing purge,
-- replay or second sweeper removed first is neither deleted twice nor counted twice.
-- KEYS: the dead-letter stream, then optionally the counter of removed letters (same slot)
-- ARGV: letter ids
-- Returns how many letters were removed.
local removed = redis.call('XDEL', KEYS[1], unpack(ARGV))
if removed > 0 and KEYS[2] then
  redis.call('INCRBY', KEYS[2], removed)
end
return removed
