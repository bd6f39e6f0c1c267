-- Write an App job's outcome record in one command (service/lanes/app/outcomes.py): the
-- record, one more attempt, its TTL; the claim of its delivery id; the wake-up of the
-- ingest request waiting for it. All keys name the workspace's slot.
-- KEYS: record, claims (= record: no claim), ready (= record: not final)
-- ARGV: record_json, attempt (0/1), ttl_ms, delivery_id, claim_ttl_s, ready_value, ready_ttl_ms
redis.call('HSET', KEYS[1], 'record', ARGV[1])
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[2] ~= KEYS[1] then
  redis.call('SADD', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if KEYS[3] ~= KEYS[1] then
  redis.call('RPUSH', KEYS[3], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
return 1
