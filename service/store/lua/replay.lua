-- Re-queue dead letters, each at most once: a letter's job is added to its shard's stream
-- only if the letter is still there, and the letter is deleted in the same step, so two
-- replays of one letter that race queue it once. Each XADD comes before its XDEL: a write
-- refused for lack of memory can only be a script's first one, which leaves no trace.
-- KEYS: dead-letter stream, then the touched shards' streams, then their trigger markers
-- ARGV: trigger_ttl_ms, then per letter: letter id, shard position (1-based), field, payload
-- Returns: the ids of the letters replayed, then 1/0 per shard: whether its marker was set.
local shards = (#KEYS - 1) / 2
local replayed = {}
local touched = {}
for i = 2, #ARGV, 4 do
  if #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 1 then
    local position = tonumber(ARGV[i + 1])
    redis.call('XADD', KEYS[1 + position], '*', ARGV[i + 2], ARGV[i + 3])
    redis.call('XDEL', KEYS[1], ARGV[i])
    touched[position] = true
    replayed[#replayed + 1] = ARGV[i]
  end
end
local out = {#replayed}
for _, id in ipairs(replayed) do
  out[#out + 1] = id
end
for s = 1, shards do
  local set = touched[s] and redis.call('SET', KEYS[1 + shards + s], 1, 'NX', 'PX', ARGV[1])
  out[#out + 1] = set and 1 or 0
end
return out
