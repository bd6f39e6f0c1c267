"""Dead-letter retention on a real Redis: exactly the letters past the age go, counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import redis

from service import keys
from service.config import Settings
from service.lanes.track.jobs import v2_job
from service.metrics.queue_state import QueueStateCollector
from service.store.dead_letter_retention import PAGE_SIZE, LetterRemover
from service.store.dead_letters import DeadLetter
from service.triggers import Triggers
from tests.support.streams import stream_entries
from tests.support.triggers import RecordingTriggers
from workers.sweeper import Sweeper

NOW_MS = 1_800_000_000_000
MAX_AGE_S = 3600
CUTOFF_MS = NOW_MS - MAX_AGE_S * 1000


def _letter(person: str) -> DeadLetter:
    op = {"type": "person", "action": "identify", "identifiers": {"id": person}}
    return DeadLetter("v2", v2_job(op).payload, "default:0:1-0", "invalid", "invalid", 400)


def _add(client: redis.Redis, dead_ms: int, seq: int = 0, workspace: str = "default") -> str:
    """A letter that died at `dead_ms` (its stream id, as the dead-letter script adds it)."""
    letter_id = f"{dead_ms}-{seq}"
    fields: Any = _letter(letter_id).to_fields()
    client.xadd(keys.dead_letters(workspace), fields, id=letter_id)
    return letter_id


def _ids(client: redis.Redis, workspace: str = "default") -> list[str]:
    return [i.decode() for i, _ in stream_entries(client, keys.dead_letters(workspace))]


@pytest.mark.parametrize(
    ("dead_ms", "removed"),
    [
        (CUTOFF_MS - 3_600_000, True),
        (CUTOFF_MS - 1, True),
        (CUTOFF_MS, False),  # exactly the age: not older than it
        (CUTOFF_MS + 1, False),
        (NOW_MS, False),
    ],
)
def test_retention_removes_a_letter_only_when_it_is_older_than_the_age(
    redis_client: redis.Redis, dead_ms: int, removed: bool
) -> None:
    letter_id = _add(redis_client, dead_ms)
    count = LetterRemover(redis_client).expire("default", now_ms=NOW_MS, max_age_s=MAX_AGE_S)
    assert count == int(removed)
    assert _ids(redis_client) == ([] if removed else [letter_id])


def test_retention_removes_exactly_the_letters_past_the_age_across_pages(
    redis_client: redis.Redis,
) -> None:
    old = [_add(redis_client, CUTOFF_MS - 1000 + i // 3, i % 3) for i in range(PAGE_SIZE + 7)]
    young = [_add(redis_client, CUTOFF_MS + i, 0) for i in range(5)]
    other = _add(redis_client, CUTOFF_MS - 5000, workspace="other")
    remover = LetterRemover(redis_client)
    assert remover.expire("default", now_ms=NOW_MS, max_age_s=MAX_AGE_S) == len(old)
    assert _ids(redis_client) == young
    assert _ids(redis_client, "other") == [other]  # another workspace's letters stay
    assert remover.expire("default", now_ms=NOW_MS, max_age_s=MAX_AGE_S) == 0
    assert remover.expired_total("default") == len(old)


def test_a_pass_reads_at_most_its_share_and_the_next_takes_the_rest(
    redis_client: redis.Redis,
) -> None:
    ids = [_add(redis_client, CUTOFF_MS - 100, i) for i in range(PAGE_SIZE + 10)]
    remover = LetterRemover(redis_client)
    first = remover.expire("default", now_ms=NOW_MS, max_age_s=MAX_AGE_S, max_read=PAGE_SIZE)
    assert first == PAGE_SIZE
    assert _ids(redis_client) == ids[PAGE_SIZE:]
    assert remover.expire("default", now_ms=NOW_MS, max_age_s=MAX_AGE_S, max_read=PAGE_SIZE) == 10
    assert _ids(redis_client) == []


def test_zero_keeps_every_letter(redis_client: redis.Redis) -> None:
    _add(redis_client, 1)
    assert LetterRemover(redis_client).expire("default", now_ms=NOW_MS, max_age_s=0) == 0
    assert len(_ids(redis_client)) == 1


def test_a_letter_removed_first_by_a_purge_is_not_counted(redis_client: redis.Redis) -> None:
    """Two removers racing over one letter (retention and a purge, or two sweepers)
    remove it once and count it once."""
    first, second = _add(redis_client, CUTOFF_MS - 10), _add(redis_client, CUTOFF_MS - 5)
    remover = LetterRemover(redis_client)

    def purge_first(stored: object) -> bool:
        redis_client.xdel(keys.dead_letters("default"), first)  # a purge lands meanwhile
        return True

    removed = remover.remove(
        "default",
        purge_first,
        before_ms=CUTOFF_MS,
        counter=keys.dead_letters_expired("default"),
    )
    assert removed == 1
    assert remover.expired_total("default") == 1
    assert second not in _ids(redis_client)


def test_the_sweeper_expires_letters_and_the_metrics_endpoint_counts_them(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings(dead_letter_max_age_s=MAX_AGE_S)
    for i in range(3):
        _add(redis_client, CUTOFF_MS - 100, i)
    kept = _add(redis_client, CUTOFF_MS + 100)
    sweeper = Sweeper(
        settings, redis_client, cast(Triggers, RecordingTriggers()), clock=lambda: NOW_MS / 1000
    )
    assert sweeper.expire_dead_letters() == (3, False)
    assert _ids(redis_client) == [kept]
    collector = QueueStateCollector(
        settings.queue, settings.metrics, settings.workspaces, redis_client
    )
    samples = {
        (s.name, s.labels.get("workspace")): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert samples[("cioq_dead_letters_expired_total", "default")] == 3
    assert samples[("cioq_dead_letter_entries", "default")] == 1
