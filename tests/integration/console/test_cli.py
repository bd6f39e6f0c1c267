"""The CLI's refusals: a bad setting, mismatched sandbox credentials, bad DLQ input, no Redis.

Each is an operator's mistake; each must exit non-zero with a message naming what to fix.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from cioq.cli import app
from service import keys
from service.lanes.track.jobs import v2_job
from service.store.dead_letters import DeadLetter, DeadLetterStore


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_a_bad_setting_exits_2_before_anything_starts(runner: CliRunner) -> None:
    result = runner.invoke(app, ["api"], env={"CIOQ_SHARDS": "0"})
    assert result.exit_code == 2
    assert "configuration error" in result.output and "shards" in result.output


def test_sandbox_wants_one_api_key_per_site_id(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sandbox", "--site-id", "a", "--site-id", "b", "--api-key", "k"])
    assert result.exit_code == 2
    assert "one --api-key per --site-id" in result.output


def test_sandbox_late_failure_options_reach_its_config(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sandbox

    served: list[Any] = []
    monkeypatch.setattr(sandbox, "serve", lambda config, **_: served.append(config))
    late = ["--late-failure-rate", "0.01", "--late-failure-max-delay-s", "3"]
    result = runner.invoke(app, ["sandbox", *late])
    assert result.exit_code == 0, result.output
    [config] = served
    got = config.late_failures
    assert (got.rate, got.min_delay_s, got.max_delay_s) == (0.01, 0.5, 3.0)
    bad = ["--late-failure-min-delay-s", "5", "--late-failure-max-delay-s", "1"]
    refused = runner.invoke(app, ["sandbox", *bad])
    assert refused.exit_code == 2 and "min_delay_s" in refused.output


def test_dlq_without_redis_exits_1_and_says_so(runner: CliRunner) -> None:
    result = runner.invoke(app, ["dlq", "list"], env={"CIOQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.exit_code == 1
    assert result.output.startswith("cioq dlq: ")


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        (["list", "--since", "last tuesday"], "ISO 8601"),
        (["replay", "not-an-id"], "not a dead-letter id (<ms>-<seq>): 'not-an-id'"),
    ],
    ids=["unreadable-time", "malformed-id"],
)
def test_dlq_bad_input_exits_2_stating_the_rule(
    runner: CliRunner, redis_url: str, args: list[str], rule: str
) -> None:
    env = {"CIOQ_REDIS_URL": redis_url, "COLUMNS": "200"}
    result = runner.invoke(app, ["dlq", *args], env=env)
    assert result.exit_code == 2
    assert rule in result.output


def _letter(person: str) -> DeadLetter:
    job = v2_job({"type": "person", "action": "identify", "identifiers": {"id": person}})
    return DeadLetter("v2", job.payload, "default:0:1-0", "invalid", "invalid", 400)


def test_dlq_list_says_when_more_letters_follow_and_show_refuses_an_unknown_id(
    runner: CliRunner, redis_url: str, redis_client: redis.Redis
) -> None:
    DeadLetterStore(redis_client).add("default", [_letter("a"), _letter("b")])
    assert redis_client.xlen(keys.dead_letters("default")) == 2
    env = {"CIOQ_REDIS_URL": redis_url, "COLUMNS": "200"}
    listed = runner.invoke(app, ["dlq", "list", "--limit", "1"], env=env)
    assert listed.exit_code == 0
    assert "more letters follow; 1 shown" in listed.output
    missing = runner.invoke(app, ["dlq", "show", "1-0"], env=env)
    assert missing.exit_code == 1
    assert "no dead letter 1-0 in 'default'" in missing.output
