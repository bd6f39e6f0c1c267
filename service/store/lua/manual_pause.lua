-- An operator's pause of a workspace's lane (service/store/workspace_control.py): the
-- pause and its note, together and with the same TTL. One command, not a MULTI, for the
-- reason outcome_create.lua gives. Both keys name the workspace's slot.
-- KEYS: pause, note   ARGV: cause, duration_ms, reason, who, at_ms
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'reason', ARGV[3], 'who', ARGV[4], 'at_ms', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
