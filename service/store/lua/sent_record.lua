-- Index jobs Customer.io just accepted (service/store/sent_index.py): one call per 250 jobs
-- of a request instead of about five commands per job, each of which the client packed, and
-- on a cluster routed, one by one.
-- KEYS: the person keys (p of them), then the event keys, all of one workspace (one slot).
-- ARGV[1] = now_ms, ARGV[2] = window_ms, ARGV[3] = copies kept per person, ARGV[4] = p,
-- then for each person key its copy count c and its c copies, then one copy per event key.
-- A person's set gets its copies scored now, loses those older than the window and all
-- but the newest per-person, and expires with the window; an event key holds its copy
-- for the window.
local now_ms, window_ms = ARGV[1], tonumber(ARGV[2])
local keep, people = tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
for k = 1, people do
  local key = KEYS[k]
  local count = tonumber(ARGV[a])
  for j = a + 1, a + count do
    redis.call('ZADD', key, now_ms, ARGV[j])
  end
  a = a + count + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', tonumber(now_ms) - window_ms)
  redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  redis.call('PEXPIRE', key, window_ms)
end
for k = people + 1, #KEYS do
  redis.call('SET', KEYS[k], ARGV[a], 'PX', window_ms)
  a = a + 1
end
return 0
