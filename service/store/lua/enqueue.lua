-- Store one request's jobs and take each touched shard's trigger marker, in one call.
-- A script runs atomically; under maxmemory it can only be refused at its first write,
-- so the request is stored whole or not at all, as with MULTI, for one round trip and
-- one reply instead of one per job.
-- KEYS: the touched shards' streams, then their trigger markers (same order)
-- ARGV: trigger_ttl_ms, then per job: its shard's position in KEYS (1-based), field, payload
-- Returns: the jobs' stream ids, then 1/0 per shard: whether its marker was set here.
local shards = #KEYS / 2
local out = {}
for i = 2, #ARGV, 3 do
  out[#out + 1] = redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', ARGV[i + 1], ARGV[i + 2])
end
for s = 1, shards do
  out[#out + 1] = redis.call('SET', KEYS[shards + s], 1, 'NX', 'PX', ARGV[1]) and 1 or 0
end
return out
