"""The api's own App sends (`service.lanes.app.inline`), over real HTTP and Redis: a send
it may make goes out once without a worker; one it may not (shard held, lane paused, turned
off) is left stored and triggered with nothing written; an answer it does not settle is
kept with the note, and the drain its trigger starts settles it without sending again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from sandbox import SandboxConfig, create_sandbox_app
from service import keys
from service.api.app import create_app
from service.config import Settings
from service.delivery.upstream import decode_answer
from service.jobs import Lane
from service.lanes.app.jobs import FIELD_APP
from tests.support.drain import build_drainer
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields
from tests.support.triggers import RecordingTriggers

HEADERS = {"Authorization": "Bearer dev-ingest-key"}
EMAIL = {"transactional_message_id": 1, "to": "a@example.com", "identifiers": {"id": "p1"}}


@pytest.fixture
def sandbox() -> Iterator[httpx.Client]:
    with (
        serve_in_thread(create_sandbox_app(SandboxConfig())) as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


@pytest.fixture
def make_api(
    make_settings: Callable[..., Settings], triggers: RecordingTriggers, sandbox: httpx.Client
) -> Iterator[Callable[..., tuple[httpx.Client, Settings]]]:
    opened: list[Any] = []

    def build(**overrides: Any) -> tuple[httpx.Client, Settings]:
        values = {"app_api_key": "dev-app-key", "app_url": str(sandbox.base_url), **overrides}
        settings = make_settings(**values)
        server = serve_in_thread(create_app(settings, triggers=triggers))
        client = httpx.Client(base_url=server.__enter__(), headers=HEADERS, timeout=15)
        opened.append((server, client))
        return client, settings

    yield build
    for server, client in opened:
        client.close()
        server.__exit__(None, None, None)


def arrivals(sandbox: httpx.Client) -> list[dict[str, Any]]:
    """The App sends the sandbox recorded (acted on)."""
    records = sandbox.get("/_sandbox/received", params={"limit": 100_000}).json()["records"]
    return [r["op"] for r in records if r["kind"] == "app"]


def inline_count(api: httpx.Client, outcome: str) -> float:
    """The api's ``cioq_app_inline_sends_total`` for `outcome` (the process's own count)."""
    prefix = f'cioq_app_inline_sends_total{{outcome="{outcome}",workspace="default"}}'
    lines = api.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def upstream_seconds() -> tuple[float, float]:
    """This process's ``cioq_upstream_request_duration_seconds`` sum and count for the
    default workspace's App sends (the api runs in a thread of the test's process)."""
    found = {"_sum": 0.0, "_count": 0.0}
    for family in REGISTRY.collect():
        if family.name != "cioq_upstream_request_duration_seconds":
            continue
        for sample in family.samples:
            suffix = sample.name.removeprefix(family.name)
            if suffix in found and sample.labels.get("lane") == "app":
                found[suffix] += sample.value
    return found["_sum"], found["_count"]


def rate_waits() -> float:
    """How many waits for a send slot this process observed (``app_rate_wait_seconds``)."""
    labels = {"workspace": "default", "limit_class": "send"}
    return REGISTRY.get_sample_value("cioq_app_rate_wait_seconds_count", labels) or 0.0


def app_shards(client: redis.Redis) -> list[str]:
    return [key.decode() for key in client.scan_iter(match="cioq:q:*") if client.xlen(key)]


def stored(client: redis.Redis) -> list[dict[str, Any]]:
    return [
        orjson.loads(fields[FIELD_APP])
        for key in app_shards(client)
        for fields in stream_fields(client, key)
    ]


def test_a_send_goes_out_from_the_api_once_with_no_worker(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
) -> None:
    api, _ = make_api()
    sent = inline_count(api, "sent")
    timed = upstream_seconds()[1]
    waits = rate_waits()
    answer = api.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 200 and set(answer.json()) == {"delivery_id", "queued_at"}
    assert inline_count(api, "sent") == sent + 1
    # Counted as a worker's send is: its request timed, its slot's (nil) wait observed.
    assert upstream_seconds()[1] == timed + 1
    assert rate_waits() == waits + 1
    assert len(arrivals(sandbox)) == 1
    assert triggers.sent == []  # no worker was asked
    assert stored(redis_client) == []  # resolved
    assert list(redis_client.scan_iter(match="cioq:lease:*")) == []  # given back
    # The status record says what the producer was told.
    [record_key] = list(redis_client.scan_iter(match="cioq:outcome:*"))
    record = orjson.loads(redis_client.hget(record_key, "record") or b"{}")
    assert record["state"] == "delivered"


def test_sends_of_one_shard_at_once_each_go_out_once(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    redis_client: redis.Redis,
) -> None:
    # Every send in one shard: one after another; the rate limit lifted (a slot taken by
    # the api is one free now, else the send goes to a worker: the next test).
    api, _ = make_api(shards=1, app_send_rps=1_000_000)

    def send(n: int) -> int:
        return api.post("/v1/send/email", json={**EMAIL, "message_data": {"n": n}}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, range(24)))
    assert statuses == [200] * 24
    numbers = sorted(a["body"]["message_data"]["n"] for a in arrivals(sandbox))
    assert numbers == list(range(24))
    assert stored(redis_client) == []


def test_a_send_whose_slot_is_not_free_now_goes_to_a_worker_that_waits_for_it(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
) -> None:
    api, _ = make_api(shards=1, app_send_rps=1, app_send_wait_ms=300)
    assert api.post("/v1/send/email", json=EMAIL).status_code == 200  # the slot was free
    no_slot = inline_count(api, "no_slot")
    second = api.post("/v1/send/email", json={**EMAIL, "to": "b@example.com"})
    assert second.status_code == 202
    assert inline_count(api, "no_slot") == no_slot + 1
    assert len(arrivals(sandbox)) == 1
    shard = keys.shard_keys("default", 0, Lane.APP)
    assert [job["id"] for job in stored(redis_client)] == [second.json()["job_id"]]
    assert not redis_client.exists(shard.inflight) and not redis_client.exists(shard.lease)
    assert triggers.lanes == [Lane.APP]


def _held(client: redis.Redis, shard: keys.ShardKeys) -> None:
    client.set(shard.lease, "99", px=60_000)  # a drain holds the shard


def _retrying(client: redis.Redis, shard: keys.ShardKeys) -> None:
    client.hset(shard.retry, mapping={"head": "0-1", "not_before_ms": 2**50})


def _older_job_first(client: redis.Redis, shard: keys.ShardKeys) -> None:
    older = {"id": "older", "path": "/v1/send/email", "body": EMAIL, "limit": "send"}
    client.xadd(shard.stream, {FIELD_APP: orjson.dumps(older)})


@pytest.mark.parametrize(
    ("setup", "outcome", "triggered"),
    [
        # The holder hands the shard back with a trigger when work remains (release.lua).
        (_held, "busy", []),
        (_retrying, "retry", [Lane.APP]),
        (_older_job_first, "behind", [Lane.APP]),
    ],
)
def test_a_send_a_drain_would_not_make_now_is_left_to_a_worker_with_nothing_written(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
    setup: Callable[[redis.Redis, keys.ShardKeys], None],
    outcome: str,
    triggered: list[Lane],
) -> None:
    api, _ = make_api(shards=1, app_send_wait_ms=300)
    shard = keys.shard_keys("default", 0, Lane.APP)
    setup(redis_client, shard)
    lease_before = redis_client.get(shard.lease)
    counted = inline_count(api, outcome)
    answer = api.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 202
    assert inline_count(api, outcome) == counted + 1
    assert arrivals(sandbox) == []
    assert any(job["id"] == answer.json()["job_id"] for job in stored(redis_client))
    assert not redis_client.exists(shard.inflight)
    assert redis_client.get(shard.lease) == lease_before
    assert triggers.lanes == triggered


def test_a_paused_lane_gives_the_shard_back_and_triggers_it(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
) -> None:
    api, _ = make_api(shards=1, app_send_wait_ms=300)
    redis_client.set(keys.pause("default", Lane.APP), "throttle", px=60_000)
    paused = inline_count(api, "paused")
    answer = api.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 202
    assert inline_count(api, "paused") == paused + 1
    assert arrivals(sandbox) == []
    shard = keys.shard_keys("default", 0, Lane.APP)
    assert not redis_client.exists(shard.inflight) and not redis_client.exists(shard.lease)
    assert triggers.lanes == [Lane.APP]


def test_turned_off_every_send_goes_to_a_worker(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    triggers: RecordingTriggers,
) -> None:
    api, _ = make_api(app_inline_sends=False, app_send_wait_ms=200)
    assert api.post("/v1/send/email", json=EMAIL).status_code == 202
    assert arrivals(sandbox) == [] and triggers.lanes == [Lane.APP]


@pytest.mark.parametrize(
    ("faults", "state", "resent"),
    [
        # 429: not acted on; the drain pauses the lane and the job is sent again later.
        ({"error_rate": 1.0, "error_status": 429, "retry_after_s": 1}, "retrying", True),
        # Reset after recording: may have acted; the drain looks the message up, never resends.
        ({"reset_rate": 1.0}, None, False),
    ],
)
def test_an_answer_the_api_does_not_settle_is_settled_by_the_drain_without_a_resend(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
    faults: dict[str, Any],
    state: str | None,
    resent: bool,
) -> None:
    api, settings = make_api(shards=1, app_send_wait_ms=300)
    sandbox.post("/_sandbox/app_faults", json=faults).raise_for_status()
    answer = api.post("/v1/send/email", json=EMAIL)
    assert answer.status_code == 202
    shard = keys.shard_keys("default", 0, Lane.APP)
    note = redis_client.hgetall(shard.inflight)
    assert b"answer" in note and not redis_client.exists(shard.lease)
    assert triggers.lanes == [Lane.APP]
    sandbox.post("/_sandbox/app_faults", json={}).raise_for_status()
    before = len(arrivals(sandbox))
    seconds_before, count_before = upstream_seconds()
    report = build_drainer(settings, redis_client).drain("default", 0, Lane.APP)
    assert report.requests == 1
    after = len(arrivals(sandbox))
    assert after == before  # the drain settled it: nothing went out
    # The request is timed as the api's send took, not as long as settling it took.
    seconds_after, count_after = upstream_seconds()
    assert count_after == count_before + 1
    kept = note[b"answer"]
    assert isinstance(kept, bytes)
    kept_s = decode_answer(kept).answer.elapsed_s
    assert seconds_after - seconds_before == pytest.approx(kept_s, rel=1e-9)
    if resent:
        assert len(stored(redis_client)) == 1  # kept, to be sent after the pause
        assert not redis_client.exists(shard.inflight)  # its next send is a fresh one
        assert redis_client.pttl(keys.pause("default", Lane.APP)) > 0
    else:
        # Dead-lettered (or confirmed) and trimmed: the note names a head gone for good.
        assert stored(redis_client) == []
    if state is not None:
        record_key = keys.app_outcome("default", str(orjson.loads(answer.content)["job_id"]))
        record = orjson.loads(redis_client.hget(record_key, "record") or b"{}")
        assert record["state"] == state


def test_a_repeat_of_a_delivered_send_answers_at_once_with_its_answer(
    make_api: Callable[..., tuple[httpx.Client, Settings]], sandbox: httpx.Client
) -> None:
    """A producer whose answer was lost repeats its request: it gets Customer.io's answer
    from the record, not after waiting out a push that was never coming."""
    api, _ = make_api(app_send_wait_ms=3000)
    headers = {"Idempotency-Key": "lost-answer"}
    first = api.post("/v1/send/email", json=EMAIL, headers=headers)
    again = api.post("/v1/send/email", json=EMAIL, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.elapsed.total_seconds() < 2  # a stall guard: it waited 3 s before
    assert len(arrivals(sandbox)) == 1


class _Unexpected(Exception):
    """Not a store error: a bug, or a dependency failing in a way nobody listed."""


def _fail(*_: Any, **__: Any) -> Any:
    raise _Unexpected


@pytest.mark.parametrize(
    ("target", "after_send"),
    [
        # After the api's own POST: its answer went missing between send and record.
        ("service.lanes.app.inline_store.InlineStore.record_delivered", True),
        # While a producer waits for a worker's outcome.
        ("service.lanes.app.outcomes.AsyncOutcomes.wait", False),
    ],
    ids=["after-the-api-send", "in-the-outcome-wait"],
)
def test_an_unexpected_error_after_the_job_is_stored_answers_202_and_sends_once(
    make_api: Callable[..., tuple[httpx.Client, Settings]],
    sandbox: httpx.Client,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    after_send: bool,
) -> None:
    """A 5xx for a stored job has the official clients (which send no Idempotency-Key and
    resend on a 5xx) store it again and send it twice."""
    api, settings = make_api(shards=1, app_send_wait_ms=300)
    if not after_send:
        api.post("/v1/send/email", json=EMAIL)  # the shard's next send then goes to a worker
        monkeypatch.setattr("service.lanes.app.inline.InlineSends.usable", lambda *_: False)
    monkeypatch.setattr(target, _fail)
    answer = api.post("/v1/send/email", json={**EMAIL, "to": "b@example.com"})
    assert answer.status_code == 202
    job_id = answer.json()["job_id"]
    monkeypatch.undo()
    redis_client.delete(keys.shard_keys("default", 0, Lane.APP).lease)  # its lease ran out
    build_drainer(settings, redis_client).drain("default", 0, Lane.APP)
    sent = [op for op in arrivals(sandbox) if op["body"]["to"] == "b@example.com"]
    assert len(sent) == 1  # the api's send, or the worker's; never both
    record_key = keys.app_outcome("default", str(job_id))
    state = orjson.loads(redis_client.hget(record_key, "record") or b"{}").get("state")
    # After the send its record is lost with the error: the drain finds the note and
    # settles the job as cut off (found by the message lookup, or dead-lettered as
    # ambiguous) rather than send it again.
    assert state in (("ambiguous", "delivered") if after_send else ("delivered",))
