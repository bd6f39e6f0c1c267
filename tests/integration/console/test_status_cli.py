"""``cioq status``, ``cioq pause`` and ``cioq resume`` against a real Redis."""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable

import orjson
import pytest
import redis
from typer.testing import CliRunner

from cioq.cli import app
from service import keys
from service.config import Settings
from service.jobs import Job, Lane
from service.lanes.app.jobs import app_job
from service.lanes.pipelines.jobs import cdp_job
from service.lanes.track.jobs import v2_job
from service.metrics import definitions
from service.metrics.activity import Tally
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.shards import ShardStore
from service.triggers import DRAIN_QUEUE
from tests.support.streams import stream_entries

SHARDS = 4


@pytest.fixture
def cli(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", str(SHARDS))
    return CliRunner()


def _backlog(client: redis.Redis, counts: dict[int, int]) -> None:
    for shard, count in counts.items():
        for i in range(count):
            op = {"type": "person", "action": "identify", "identifiers": {"id": f"p{i}"}}
            job = v2_job(op)
            client.xadd(
                keys.shard_keys("default", shard, Lane.TRACK).stream, {job.field: job.payload}
            )


def _letter(cls: str, person: str) -> DeadLetter:
    op = {"type": "person", "action": "identify", "identifiers": {"id": person}}
    return DeadLetter("v2", v2_job(op).payload, "default:0:1-0", cls, cls, 400)


def _status(cli: CliRunner) -> dict[str, object]:
    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    row: dict[str, object] = orjson.loads(line)
    return row


def test_status_shows_backlog_pause_and_dead_letters_by_class(
    cli: CliRunner, redis_client: redis.Redis
) -> None:
    _backlog(redis_client, {0: 3, 2: 4})
    DeadLetterStore(redis_client).add(
        "default", [_letter("invalid", "a"), _letter("invalid", "b"), _letter("crash", "c")]
    )
    ShardStore(redis_client).pause("default", Lane.TRACK, cause="throttle", duration_ms=30_000)
    row = _status(cli)
    assert row["workspace"] == "default" and row["lane"] == "track"
    assert row["waiting"] == 7
    assert row["paused"] == "throttle" and row["pause_label"] == "429 from Customer.io"
    assert 0 < float(row["pause_remaining_s"]) <= 30  # type: ignore[arg-type]
    assert row["dead_letters"] == 3
    assert row["dead_by_class"] == {"crash": 1, "invalid": 2}
    assert row["dead_by_status"] == {"400": 3}
    table = cli.invoke(app, ["status"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "default" in table.output and "track" in table.output
    assert "429 from Customer.io" in table.output
    assert "crash 1" in table.output and "invalid 2" in table.output


def _lane_jobs() -> dict[Lane, Job]:
    call = {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "m1"}
    trigger = app_job(
        "job-1", "/v1/campaigns/7/triggers", {}, limit="broadcast", route="broadcast:7", op_type="t"
    )
    op = {"type": "person", "action": "identify", "identifiers": {"id": "p1"}}
    return {
        Lane.TRACK: v2_job(op),
        Lane.PIPELINES: cdp_job(call, route="person:id:u1"),
        Lane.BROADCASTS: trigger,
    }


def _dead(job: Job, cls: str) -> DeadLetter:
    return DeadLetter(job.kind, job.payload, "default:0:1-0", cls, cls, 400)


def test_each_lane_shows_its_own_age_rates_and_dead_letters(
    cli: CliRunner,
    redis_client: redis.Redis,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A workspace with three lanes: no lane shows another's oldest job, counts or letters."""
    monkeypatch.setenv("CIOQ_CDP_API_KEY", "cdp-key")
    monkeypatch.setenv("CIOQ_APP_API_KEY", "app-key")
    tally = Tally(background=False)
    tally.configure(make_settings().redis)
    monkeypatch.setattr(definitions, "TALLY", tally)
    jobs = _lane_jobs()
    now_ms = int(time.time() * 1000)
    for lane, age_s in ((Lane.TRACK, 40), (Lane.PIPELINES, 5)):
        stream = keys.shard_keys("default", 0, lane).stream
        job = jobs[lane]
        redis_client.xadd(stream, {job.field: job.payload}, id=f"{now_ms - age_s * 1000}-0")
    definitions.jobs_accepted("default", [jobs[Lane.TRACK]] * 3 + [jobs[Lane.PIPELINES]] * 2)
    DeadLetterStore(redis_client).add(
        "default",
        [_dead(jobs[Lane.TRACK], "invalid"), *[_dead(jobs[Lane.BROADCASTS], "ambiguous")] * 2],
    )
    tally.flush()
    result = cli.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["lane"]: row for row in map(orjson.loads, result.output.splitlines())}
    assert list(rows) == ["track", "pipelines", "app", "broadcasts"]
    figures = {
        lane: (
            row["waiting"],
            round(row["oldest_age_s"] / 5) * 5,
            row["accepted_per_min"],
            row["dead_lettered_per_min"],
            row["dead_letters"],
            row["dead_by_class"],
        )
        for lane, row in rows.items()
    }
    assert figures == {
        "track": (1, 40, 3.0, 1.0, 1, {"invalid": 1}),
        "pipelines": (1, 5, 2.0, 0.0, 0, {}),
        "app": (0, 0, 0.0, 0.0, 0, {}),
        "broadcasts": (0, 0, 0.0, 2.0, 2, {"ambiguous": 2}),
    }


def test_dlq_list_filters_by_lane(cli: CliRunner, redis_client: redis.Redis) -> None:
    jobs = _lane_jobs()
    DeadLetterStore(redis_client).add(
        "default", [_dead(jobs[lane], "invalid") for lane in (Lane.TRACK, Lane.BROADCASTS)]
    )
    listed = cli.invoke(app, ["dlq", "list", "--lane", "broadcasts", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [orjson.loads(line)["lane"] for line in listed.output.splitlines()] == ["broadcasts"]
    refused = cli.invoke(app, ["dlq", "list", "--lane", "sms"])
    assert refused.exit_code == 2
    assert "lane must be one of track, pipelines, app, broadcasts" in refused.output


def test_pause_and_resume_use_the_drains_pause_and_are_audited(
    cli: CliRunner, redis_client: redis.Redis
) -> None:
    _backlog(redis_client, {1: 2, 3: 1})
    result = cli.invoke(
        app, ["pause", "default", "--reason", "Customer.io incident", "--for", "2h"]
    )
    assert result.exit_code == 0, result.output
    # The drain's own check sees the pause, with the time asked for.
    remaining_ms = ShardStore(redis_client).pause_remaining_ms("default", Lane.TRACK)
    assert 2 * 3_600_000 - 60_000 < remaining_ms <= 2 * 3_600_000
    row = _status(cli)
    assert row["paused"] == "manual"
    assert row["pause_reason"] == "Customer.io incident"
    assert row["pause_by"] == f"cli:{getpass.getuser()}"

    result = cli.invoke(app, ["resume", "default", "--lane", "track", "--reason", "fixed"])
    assert result.exit_code == 0, result.output
    assert "lifted: manual" in result.output
    assert ShardStore(redis_client).pause_remaining_ms("default", Lane.TRACK) == 0
    assert _status(cli)["paused"] == ""
    # One drain trigger per shard with backlog went to the broker (the same Redis here).
    assert redis_client.llen(DRAIN_QUEUE) == 2

    audit = stream_entries(redis_client, keys.audit(), newest_first=True)
    actions = [(f[b"action"], f[b"who"], f[b"lane"]) for _, f in audit]
    who = f"cli:{getpass.getuser()}".encode()
    assert actions == [(b"resume", who, b"track"), (b"pause", who, b"track")]
    assert audit[1][1][b"detail"] == b"for 2h: Customer.io incident"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pause", "default", "--reason", "x", "--lane", "chat"],
            "lanes are track, pipelines, app",
        ),
        (["pause", "default", "--reason", "x", "--for", "forever"], "duration like 30m"),
        (["pause", "default", "--reason", "x", "--for", "8d"], "at most 7d"),
        (["pause", "default", "--reason", "  "], "reason of 1 to 200"),
        (["pause", "nowhere", "--reason", "x"], "unknown workspace"),
        (
            ["resume", "default", "--reason", "x", "--lane", "nope"],
            "lanes are track, pipelines, app",
        ),
    ],
)
def test_bad_pause_and_resume_change_nothing(
    cli: CliRunner, redis_client: redis.Redis, args: list[str], message: str
) -> None:
    result = cli.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert redis_client.get(keys.pause("default", Lane.TRACK)) is None
    assert redis_client.xlen(keys.audit()) == 0


def test_dlq_list_shows_the_person(cli: CliRunner, redis_client: redis.Redis) -> None:
    DeadLetterStore(redis_client).add("default", [_letter("invalid", "person-77")])
    result = cli.invoke(app, ["dlq", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "person" in result.output and "id=person-77" in result.output


def test_help_texts_show_no_raw_markup() -> None:
    runner = CliRunner()
    for args in (["--help"], ["dlq", "--help"], ["status", "--help"], ["pause", "--help"]):
        result = runner.invoke(app, args, terminal_width=120)
        assert result.exit_code == 0
        assert "``" not in result.output and "`" not in result.output, args
