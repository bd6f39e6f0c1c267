"""``cioq dlq repair`` on a real Redis (``edit`` runs an editor: tests/e2e/store)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import redis
from typer.testing import CliRunner

from service import keys
from service.jobs import Lane
from service.lanes.track.jobs import FIELD_OP, v2_job
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.streams import stream_entries, stream_fields

SHARDS = 4


def _op(person: str, **attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": person},
        "attributes": attributes,
    }


def _add(client: redis.Redis, *ops: dict[str, Any], producer: str = "") -> list[str]:
    letters = [
        DeadLetter(
            "v2",
            v2_job(op).payload,
            "default:0:1-0",
            "invalid",
            "invalid",
            400,
            message="sandbox_poison at batch index 0",
            field="attributes.sandbox_poison",
            producer=producer,
        )
        for op in ops
    ]
    DeadLetterStore(client).add("default", letters)
    return [i.decode() for i, _ in stream_entries(client, keys.dead_letters("default"))]


def _queued(client: redis.Redis) -> list[Any]:
    return [
        orjson.loads(fields[FIELD_OP])
        for shard in range(SHARDS)
        for fields in stream_fields(client, keys.shard_keys("default", shard, Lane.TRACK).stream)
    ]


@pytest.fixture
def runner(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", str(SHARDS))
    return CliRunner()


def test_repair_shows_the_dry_run_then_fixes_exactly_those(
    runner: CliRunner, redis_client: redis.Redis
) -> None:
    from cioq.cli import app

    ids = _add(
        redis_client, _op("p1", sandbox_poison="400"), _op("p2", sandbox_poison="400"), _op("c")
    )
    args = ["dlq", "repair", "--drop", "attributes.sandbox_poison", "--reason", "invalid"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "3 matched; 2 to drop attributes.sandbox_poison, 0 still invalid" in dry.output
    assert f"e.g. {ids[0]}:" in dry.output
    assert _queued(redis_client) == []
    real = runner.invoke(app, args)
    assert real.exit_code == 0 and "2 fixed, 2 replayed" in real.output, real.output
    assert sorted(q["identifiers"]["id"] for q in _queued(redis_client)) == ["p1", "p2"]
    assert [i.decode() for i, _ in stream_entries(redis_client, keys.dead_letters("default"))] == [
        ids[2]
    ]
    bad = runner.invoke(app, ["dlq", "repair", "--rename", "a", "--all"])
    assert bad.exit_code == 2 and "new name" in bad.output


def test_repair_by_producer_fixes_only_that_producers_letters(
    runner: CliRunner, redis_client: redis.Redis
) -> None:
    from cioq.cli import app

    _add(redis_client, _op("b1", sandbox_poison="400"), producer="billing")
    _add(redis_client, _op("s1", sandbox_poison="400"), producer="signup")
    args = ["dlq", "repair", "--drop", "attributes.sandbox_poison", "--producer", "billing"]
    real = runner.invoke(app, args)
    assert real.exit_code == 0 and "1 fixed, 1 replayed" in real.output, real.output
    assert [q["identifiers"]["id"] for q in _queued(redis_client)] == ["b1"]
    assert len(stream_entries(redis_client, keys.dead_letters("default"))) == 1


def test_edit_refuses_a_kind_without_repair_rules_before_opening_an_editor(
    runner: CliRunner, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cioq.cli import app
    from service.lanes.track.jobs import v1_job

    job = v1_job("POST", "/api/v1/segments/7/add_customers", {"ids": ["a"]}, route="s", op_type="x")
    letter = DeadLetter("v1", job.payload, "default:0:1-0", "invalid", "invalid", 400)
    DeadLetterStore(redis_client).add("default", [letter])
    (letter_id,) = [
        i.decode() for i, _ in stream_entries(redis_client, keys.dead_letters("default"))
    ]
    monkeypatch.setenv("EDITOR", "/nonexistent/editor")  # never started
    result = runner.invoke(app, ["dlq", "edit", letter_id])
    assert result.exit_code == 2 and "cannot be edited" in result.output
    assert redis_client.xlen(keys.dead_letters("default")) == 1
