-- Create an App job's queued outcome record, unless a fast worker wrote the final one
-- first (service/lanes/app/outcomes.py), and give it its TTL: one command, not a MULTI,
-- because redis-py's asyncio cluster client queues each command of a transaction on a
-- throwaway event loop in a thread of its own, and a topology re-read there leaves
-- connections the api's loop cannot use (tests/e2e/store/test_cluster_transactions.py).
-- KEYS: record   ARGV: record_json, ttl_ms
redis.call('HSETNX', KEYS[1], 'record', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
