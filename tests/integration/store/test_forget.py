"""Forget on a real Redis: every trace of the person goes, everyone else's stays in order,
shards are changed only under their lease, and tombstones stop replays."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis

from service import keys
from service.config import Settings
from service.errors import InvalidRequest, ShardsBusy
from service.jobs import Lane, Traffic
from service.store.connections import connect_async, connect_sync
from service.store.dead_letter_admin import DeadLetterAdmin, DeadLetterFilter
from service.store.dead_letter_repair import LetterRepair
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.forget import REMOVERS, Forgetting, register_remover, unregister_remover
from service.store.forget_run import ForgetRun, Person
from service.store.queue import Queue
from service.store.sent_index import SentJob
from service.store.shards import ShardStore
from service.store.tombstones import FORGOTTEN_RULE
from tests.support.forget import (
    app_send_job,
    email,
    person_id,
    person_shard,
    pipelines_job,
    stream_people,
    traces,
    track_job,
)
from tests.support.streams import stream_entries

WS = "default"
PEOPLE = [person_id(i) for i in range(30)]
TARGET = PEOPLE[7]
PER_PERSON = 12


def _run(settings: Settings, work: Callable[[Queue, Forgetting], Any]) -> Any:
    async def main() -> Any:
        client = connect_async(settings.redis)
        queue = Queue(client, settings.redis, settings.queue, None)
        forgetting = Forgetting(client, settings.queue, lease_ms=settings.drain.lease_ms)
        try:
            return await work(queue, forgetting)
        finally:
            await queue.aclose()
            await client.aclose()

    return asyncio.run(main())


def _letter(person: str, seq: int) -> DeadLetter:
    job = track_job(person, seq)
    return DeadLetter("v2", job.payload, "default:0:1-0", "invalid", "invalid", 400)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(lease_ms=1000, allow_short_lease=True)


@pytest.fixture
def backlog(settings: Settings, redis_client: redis.Redis) -> Iterator[None]:
    """Every place cioq keeps a person: Track live and bulk, Pipelines, App sends and their
    outcome records, dead letters, Idempotency-Key answers (one keyed by the person)."""

    async def fill(queue: Queue, _: Forgetting) -> None:
        for seq in range(PER_PERSON):
            await queue.enqueue(WS, [track_job(p, seq) for p in PEOPLE])
        await queue.enqueue(WS, [track_job(p, 100) for p in PEOPLE], traffic=Traffic.BULK)
        await queue.enqueue(WS, [pipelines_job(p, 0) for p in PEOPLE])
        for p in PEOPLE:
            job = app_send_job(p)
            await queue.enqueue(WS, [job])
            job_id = orjson.loads(job.payload)["id"]
            record = {"job_id": job_id, "state": "delivered", "body": {"to": email(p)}}
            redis_client.hset(keys.app_outcome(WS, job_id), "record", orjson.dumps(record))
            answer = orjson.dumps({"status": 202, "body": f'{{"job_id":"{job_id}"}}'})
            redis_client.set(keys.idempotency(WS, f"welcome-{p}"), answer)
            # A repair's audit diff keeps payload values.
            detail = f'letter 1-0: attributes.email "{email(p)}" -> "x"'
            fields = {"who": "ops", "action": "repair", "workspace": WS, "detail": detail}
            redis_client.xadd(keys.audit(), fields)  # type: ignore[arg-type]
            # A late failure, as the App lane's poller records Customer.io's activity.
            activity = {"customer_id": p, "customer_identifiers": {"id": p, "email": email(p)}}
            record = {"activity": activity, "type": "failed_attribute_change"}
            redis_client.xadd(keys.late_failures(WS), {"r": orjson.dumps(record)})
            # The copy of a delivered event kept to link late failures, by person and event id.
            # A Pipelines identify is kept under its userId and its email, so forgetting
            # by id alone must find it under the email too.
            identify = {"type": "identify", "userId": p, "traits": {"email": email(p)}}
            event = {"type": "track", "userId": p, "event": "paid", "messageId": f"ev-{p}"}
            kept = [
                SentJob(f"t:{n}-0", "cdp", "pipelines", "web", 1, 2, orjson.dumps(call)).copy()
                for n, call in enumerate((identify, event))
            ]
            redis_client.zadd(keys.sent_person(WS, "id", p), {kept[0]: 0, kept[1]: 1})
            redis_client.zadd(keys.sent_person(WS, "email", email(p)), {kept[0]: 0})
            redis_client.set(keys.sent_event(WS, f"ev-{p}"), kept[1])

    _run(settings, fill)
    DeadLetterStore(redis_client).add(WS, [_letter(p, 50 + i) for p in PEOPLE for i in range(2)])
    yield


def test_forget_leaves_no_trace_of_the_person_and_keeps_everyone_else_in_order(
    settings: Settings, redis_client: redis.Redis, backlog: None
) -> None:
    # Given a backlog over 30 people in every place cioq keeps one
    before = stream_people(redis_client, WS, settings.queue.shards)
    assert traces(redis_client, [TARGET, email(TARGET)])
    # When one person is forgotten by id
    result = _run(settings, lambda _, f: f.forget(WS, [TARGET], who="test"))
    # Then no key, value or stream entry anywhere names them
    assert traces(redis_client, [TARGET, email(TARGET)]) == {}
    assert result.removed == {
        "pending_jobs": PER_PERSON + 1 + 1 + 1,  # Track live, Track bulk, Pipelines, App
        "dead_letters": 2,
        "app_outcomes": 1,
        "stored_answers": 1,
        "audit_entries": 1,
        # The record; the delivered calls' keys by id and event id, the identify by email.
        "late_failures": 1 + 2 + 1,
        "late_failures_named": 0,
    }
    # And everyone else's jobs are all still queued, in their order
    after = stream_people(redis_client, WS, settings.queue.shards)
    assert after == {p: seqs for p, seqs in before.items() if p != TARGET}
    assert stream_people(redis_client, WS, settings.queue.shards, Traffic.BULK) == {
        p: [100] for p in PEOPLE if p != TARGET
    }
    for p in PEOPLE[:3]:
        assert traces(redis_client, [email(p)])
    # And the audit names the person by digest only
    audit = stream_entries(redis_client, keys.audit(), newest_first=True)[0][1]
    assert audit[b"action"] == b"forget"
    assert result.digest.encode() in audit[b"detail"]


def test_a_shard_held_by_a_drain_is_not_touched_until_its_lease_is_free(
    settings: Settings, redis_client: redis.Redis, backlog: None
) -> None:
    # Given a drain holding the target's Track shard (its lease, with its token)
    shard = keys.shard_keys(
        WS, person_shard(WS, TARGET, settings.queue.shards), Lane.TRACK, Traffic.LIVE
    )
    shards = ShardStore(connect_sync(settings.redis))
    lease = shards.acquire(shard, lease_ms=60_000)
    assert lease is not None
    # When forget runs while the drain keeps it
    with pytest.raises(ShardsBusy):
        _run(settings, lambda _, f: f.forget(WS, [TARGET], who="test"))
    # Then that shard still holds every job of theirs: nothing removed behind the drain
    assert stream_people(redis_client, WS, settings.queue.shards)[TARGET] == list(range(PER_PERSON))
    # And once the drain hands the shard back, forget takes it and removes them
    lease.release()
    _run(settings, lambda _, f: f.forget(WS, [TARGET], who="test"))
    assert TARGET not in stream_people(redis_client, WS, settings.queue.shards)
    # And the drain's old token is refused: its lease is gone
    assert redis_client.get(shard.lease) is None


def test_a_replay_drops_a_forgotten_persons_letters_and_counts_them(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a forgotten person, whose letters died after the forget (sends in flight)
    _run(settings, lambda _, f: f.forget(WS, [f"email:{email(TARGET)}", TARGET], who="t"))
    other = PEOPLE[1]
    DeadLetterStore(redis_client).add(WS, [_letter(TARGET, 1), _letter(other, 1)])

    async def replay(queue: Queue, _: Forgetting) -> Any:
        dlq = DeadLetterAdmin(queue.redis, queue)
        return await dlq.replay(WS, DeadLetterFilter(), dry_run=False, who="t")

    # When every letter is replayed
    outcome = _run(settings, replay)
    # Then the other person's is queued, the forgotten one's deleted unsent and counted
    assert (outcome.matched, outcome.done, outcome.dropped) == (2, 1, 1)
    assert stream_people(redis_client, WS, settings.queue.shards) == {other: [1]}
    assert redis_client.xlen(keys.dead_letters(WS)) == 0
    assert redis_client.hget(keys.forget_dropped(WS), "replay") == b"1"


def test_a_repair_of_a_forgotten_persons_letter_is_refused_naming_the_rule(
    settings: Settings, redis_client: redis.Redis
) -> None:
    _run(settings, lambda _, f: f.forget(WS, [TARGET], who="t"))
    DeadLetterStore(redis_client).add(WS, [_letter(TARGET, 1)])

    async def repair(queue: Queue, _: Forgetting) -> Any:
        dlq = DeadLetterAdmin(queue.redis, queue)
        stored = (await dlq.page(WS, DeadLetterFilter(), limit=1)).letters[0]
        fixed = orjson.loads(stored.letter.payload)
        return await LetterRepair(dlq).repair(WS, stored.id, fixed, strict=False, who="t")

    with pytest.raises(InvalidRequest) as refused:
        _run(settings, repair)
    assert refused.value.status == 409
    assert refused.value.errors[0].rule == FORGOTTEN_RULE
    assert stream_people(redis_client, WS, settings.queue.shards) == {}


def test_a_new_remover_runs_with_the_others_and_reads_the_person(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """How another index joins forget (docs/data-retention.md, "Adding a remover")."""
    redis_client.sadd("cioq:test-index:{default}", TARGET, PEOPLE[1])

    class IndexRemover:
        name = "test_index"

        async def remove(self, run: ForgetRun) -> int:
            key = "cioq:test-index:{default}"
            return int(await run.redis.srem(key, *run.person.values))

    register_remover(IndexRemover(), after="dead_letters")
    try:
        result = _run(settings, lambda _, f: f.forget(WS, [TARGET], who="t"))
    finally:
        unregister_remover("test_index")
    assert result.removed["test_index"] == 1
    assert list(result.removed).index("test_index") == 2
    assert redis_client.smembers("cioq:test-index:{default}") == {PEOPLE[1].encode()}
    assert [r.name for r in REMOVERS][:2] == ["pending_jobs", "dead_letters"]


def test_identifiers_parse_by_prefix_or_shape() -> None:
    person = Person.parse(WS, ["email:a@b.c", "x@y.z", "42", "cio_id:abc"])
    assert [(i.type.value, i.value) for i in person.identifiers] == [
        ("email", "a@b.c"),
        ("email", "x@y.z"),
        ("id", "42"),
        ("cio_id", "abc"),
    ]
    assert "a@b.c" not in person.digest and person.digest.startswith("sha256:")
    with pytest.raises(InvalidRequest):
        Person.parse(WS, [])


@pytest.mark.parametrize("theirs_at_head", [True, False])
def test_the_retry_state_goes_only_with_a_removed_head(
    settings: Settings, redis_client: redis.Redis, theirs_at_head: bool
) -> None:
    """Attempts counted at the head belong to that entry: removing it resets them."""
    other = next(
        p
        for p in PEOPLE
        if p != TARGET
        and person_shard(WS, p, settings.queue.shards)
        == person_shard(WS, TARGET, settings.queue.shards)
    )
    first, second = (TARGET, other) if theirs_at_head else (other, TARGET)
    _run(settings, lambda q, _: q.enqueue(WS, [track_job(first, 0), track_job(second, 0)]))
    shard = keys.shard_keys(
        WS, person_shard(WS, TARGET, settings.queue.shards), Lane.TRACK, Traffic.LIVE
    )
    head = stream_entries(redis_client, shard.stream)[0][0]
    redis_client.hset(shard.retry, mapping={"head": head, "attempts": 3})
    _run(settings, lambda _, f: f.forget(WS, [TARGET], who="t"))
    assert bool(redis_client.exists(shard.retry)) is not theirs_at_head
    assert stream_people(redis_client, WS, settings.queue.shards) == {other: [0]}
