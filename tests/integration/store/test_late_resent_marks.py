"""An operator's re-send marks last as long as the late failures they describe: once the
stream of late failures is full, the poller's commit (``lua/late_commit.lua``) deletes the
marks of the records the stream let go, and only those."""

from __future__ import annotations

import redis

from service import keys
from service.store.connections import load_script

WS = "default"
TOKEN = "holder-1"
KEYS = [
    keys.late_lease(WS),
    keys.late_cursor(WS, "failed_event"),
    keys.late_failures(WS),
    keys.late_counts(WS),
    keys.late_resent(WS),
]


def _commit(client: redis.Redis, records: int, max_entries: int) -> list[str]:
    """Commit `records` records; returns the ids the stream holds after."""
    args: list[str] = [TOKEN, "cursor", str(max_entries)]
    for n in range(records):
        args += ["track|billing|failed_event", f'{{"n": {n}}}']
    assert load_script(client, "late_commit")(keys=KEYS, args=args) == records
    return [raw_id.decode() for raw_id, _ in client.xrange(keys.late_failures(WS))]  # type: ignore[union-attr]


def _marked(client: redis.Redis) -> set[str]:
    return {f.decode() for f in client.hkeys(keys.late_resent(WS))}  # type: ignore[union-attr]


def test_the_marks_of_records_the_full_stream_let_go_go_with_them(
    redis_client: redis.Redis,
) -> None:
    redis_client.set(keys.late_lease(WS), TOKEN)
    first = _commit(redis_client, 150, max_entries=10)
    oldest = first[:2]
    for record_id in oldest:
        redis_client.hset(keys.late_resent(WS), record_id, b'{"who": "ops"}')
    # Not a stream id (a hand-written field): left alone.
    redis_client.hset(keys.late_resent(WS), "note", b"{}")
    kept = _commit(redis_client, 300, max_entries=10)
    assert not set(oldest) & set(kept), "the stream let the oldest records go"
    assert _marked(redis_client) == {"note"}
    newest = kept[-1]
    redis_client.hset(keys.late_resent(WS), newest, b'{"who": "ops"}')
    still = _commit(redis_client, 1, max_entries=10)
    assert newest in still
    assert _marked(redis_client) == {"note", newest}


def test_a_stream_below_its_cap_keeps_every_mark(redis_client: redis.Redis) -> None:
    redis_client.set(keys.late_lease(WS), TOKEN)
    ids = _commit(redis_client, 5, max_entries=1000)
    gone = "1-0"  # older than anything there, but the stream is not full: nothing is trimmed
    redis_client.hset(keys.late_resent(WS), mapping={ids[0]: b"{}", gone: b"{}"})
    _commit(redis_client, 5, max_entries=1000)
    assert _marked(redis_client) == {ids[0], gone}
