"""Forget over the admin API and the CLI, replays that meet a tombstone, and suppress mode:
real Redis, the real app over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest
import redis
from typer.testing import CliRunner

from cioq.cli import app as cli
from service import keys
from service.api.app import create_app
from service.config import Settings
from service.metrics.queue_state import QueueStateCollector
from service.store.connections import connect_sync
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.tombstones import FORGOTTEN_RULE
from tests.support.forget import email, person_id, stream_people, traces, track_job
from tests.support.http_server import serve_in_thread
from tests.support.ingest import AUTH
from tests.support.streams import stream_entries
from tests.support.triggers import RecordingTriggers

ADMIN = {"Authorization": "Bearer dev-admin-key"}
FORGET = "/admin/v1/workspaces/default/people/forget"
REPLAY = "/admin/v1/workspaces/default/dead-letters/replay"
GONE, OTHER = person_id(1), person_id(2)


def _letter(person: str, seq: int) -> DeadLetter:
    job = track_job(person, seq)
    return DeadLetter("v2", job.payload, "default:0:1-0", "invalid", "invalid", 400)


def _api(settings: Settings) -> Iterator[httpx.Client]:
    app = create_app(settings, triggers=RecordingTriggers())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture
def api(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    yield from _api(make_settings())


@pytest.fixture
def suppressing(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    yield from _api(make_settings(forget_suppress=True))


def _identify(client: httpx.Client, person: str, seq: int) -> httpx.Response:
    body = {"email": email(person), "seq": seq}
    return client.put(f"/api/v1/customers/{person}", json=body, auth=AUTH)


def test_the_admin_api_forgets_a_person_and_answers_by_digest(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    for seq in range(3):
        assert _identify(api, GONE, seq).status_code == 200
        assert _identify(api, OTHER, seq).status_code == 200
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 9)])
    r = api.post(FORGET, json={"person": [GONE, f"email:{email(GONE)}"]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["removed"]["pending_jobs"] == 3
    assert answer["removed"]["dead_letters"] == 1
    assert GONE not in r.text and answer["person"].startswith("sha256:")
    assert traces(redis_client, [GONE, email(GONE)]) == {}
    assert set(stream_people(redis_client, "default", 4)) == {OTHER}


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "person"), ({"person": 42}, "person"), ({"person": "x", "who": 1}, "who")],
)
def test_a_bad_forget_request_names_the_field(
    api: httpx.Client, body: dict[str, object], field: str
) -> None:
    r = api.post(FORGET, json=body, headers=ADMIN)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == field


def test_forget_needs_an_admin_key(api: httpx.Client) -> None:
    r = api.post(FORGET, json={"person": GONE}, headers={"Authorization": "Bearer dev-ingest-key"})
    assert r.status_code == 401


def test_an_api_replay_drops_a_forgotten_persons_letters(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    assert api.post(FORGET, json={"person": GONE}, headers=ADMIN).status_code == 200
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 1), _letter(OTHER, 1)])
    r = api.post(REPLAY, json={"all": True}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 2, "replayed": 1, "dropped_forgotten": 1, "dry_run": False}
    assert stream_people(redis_client, "default", 4) == {OTHER: [1]}


def test_the_cli_forgets_and_its_replay_drops_the_forgotten(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", "4")
    runner = CliRunner()
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 1)])
    forgot = runner.invoke(cli, ["forget", "default", GONE, "--json"])
    assert forgot.exit_code == 0, forgot.output
    assert orjson.loads(forgot.output)["removed"]["dead_letters"] == 1
    (_, audit), *_ = stream_entries(redis_client, keys.audit(), newest_first=True)
    assert audit[b"action"] == b"forget" and GONE.encode() not in audit[b"detail"]
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 2), _letter(OTHER, 2)])
    replayed = runner.invoke(cli, ["dlq", "replay", "--all", "--yes"])
    assert replayed.exit_code == 0, replayed.output
    assert "2 matched, 1 replayed, 1 of forgotten people deleted unsent" in replayed.output
    assert stream_people(redis_client, "default", 4) == {OTHER: [2]}
    unknown = runner.invoke(cli, ["forget", "nope", GONE])
    assert unknown.exit_code == 2
    upstream = runner.invoke(cli, ["forget", "default", OTHER, "--delete-upstream"])
    assert upstream.exit_code == 0, upstream.output
    assert "queued 1 delete(s) to Customer.io" in upstream.output
    assert _queued(redis_client, OTHER) == ["delete"]


def test_suppress_mode_refuses_a_forgotten_persons_calls_and_counts_them(
    suppressing: httpx.Client, redis_client: redis.Redis, make_settings: Callable[..., Settings]
) -> None:
    assert suppressing.post(FORGET, json={"person": GONE}, headers=ADMIN).status_code == 200
    # A call naming only them: refused with the rule named, nothing queued
    r = _identify(suppressing, GONE, 1)
    assert r.status_code == 409
    assert r.json()["errors"][0]["rule"] == FORGOTTEN_RULE
    # A batch naming them and another: the other's op is queued, theirs dropped, and said so
    ops = [
        {"type": "person", "action": "identify", "identifiers": {"id": p}, "attributes": {}}
        for p in (GONE, OTHER)
    ]
    r = suppressing.post("/api/v2/batch", json={"batch": ops}, auth=AUTH)
    assert r.status_code == 200, r.text
    assert r.headers["cioq-dropped"] == f"{FORGOTTEN_RULE}=1"
    assert _identify(suppressing, OTHER, 2).status_code == 200
    assert set(traces(redis_client, [OTHER])) and not any(
        k.startswith("cioq:q:") for k in traces(redis_client, [GONE])
    )
    # And the drops are counted where the metrics endpoint reads them
    settings = make_settings()
    collector = QueueStateCollector(
        settings.queue, settings.metrics, settings.workspaces, connect_sync(settings.redis)
    )
    assert dict(collector.read("default").forgotten_dropped) == {"ingest": 2}


def test_without_suppress_mode_ingest_takes_a_forgotten_persons_calls(
    api: httpx.Client,
) -> None:
    """The default: a tombstone stops replays, not new calls (docs/data-retention.md)."""
    assert api.post(FORGET, json={"person": GONE}, headers=ADMIN).status_code == 200
    assert _identify(api, GONE, 1).status_code == 200


def _queued(client: redis.Redis, person: str) -> list[str]:
    """What is queued for `person`, every lane and shard: each job's action or event."""
    found: list[str] = []
    for name in client.scan_iter(match="cioq:q:*"):
        for _, fields in stream_entries(client, name.decode()):
            for field, value in fields.items():
                if field == b"p" or person.encode() not in value:
                    continue
                job = orjson.loads(value)
                found.append(str(job.get("action") or job.get("event")))
    return found


@pytest.fixture
def erasing(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    yield from _api(make_settings(forget_on_delete=True, cdp_api_key="cdp-key"))


def test_a_producers_delete_removes_the_persons_older_jobs_when_the_workspace_says_so(
    erasing: httpx.Client, redis_client: redis.Redis
) -> None:
    for seq in range(3):
        assert _identify(erasing, GONE, seq).status_code == 200
    assert _identify(erasing, OTHER, 0).status_code == 200
    DeadLetterStore(redis_client).add("default", [_letter(GONE, 9), _letter(OTHER, 9)])
    # When the producer deletes the person
    assert erasing.delete(f"/api/v1/customers/{GONE}", auth=AUTH).status_code == 200
    # Then only the delete is queued for them, their letter is gone, the other's stay
    assert _queued(redis_client, GONE) == ["delete"]
    assert _queued(redis_client, OTHER) == ["identify"]
    assert redis_client.xlen(keys.dead_letters("default")) == 1
    (_, audit), *_ = stream_entries(redis_client, keys.audit(), newest_first=True)
    assert audit[b"action"] == b"forget_on_delete" and GONE.encode() not in audit[b"detail"]
    # And later calls for the person are taken as usual (no tombstone)
    assert _identify(erasing, GONE, 4).status_code == 200
    assert _queued(redis_client, GONE) == ["delete", "identify"]


def test_a_pipelines_user_deleted_removes_the_persons_older_calls(
    erasing: httpx.Client, redis_client: redis.Redis
) -> None:
    basic = httpx.BasicAuth("dev-ingest-key", "")
    for event in ("Viewed", "Bought"):
        call = {"userId": GONE, "event": event}
        assert erasing.post("/v1/track", json=call, auth=basic).status_code == 200
    deleted = {"userId": GONE, "event": "User Deleted"}
    assert erasing.post("/v1/track", json=deleted, auth=basic).status_code == 200
    assert _queued(redis_client, GONE) == ["User Deleted"]


def test_by_default_a_producers_delete_leaves_older_jobs_to_be_delivered(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    assert _identify(api, GONE, 0).status_code == 200
    assert api.delete(f"/api/v1/customers/{GONE}", auth=AUTH).status_code == 200
    assert sorted(_queued(redis_client, GONE)) == ["delete", "identify"]


def test_forget_can_queue_the_persons_delete_to_customerio_behind_nothing_of_theirs(
    api: httpx.Client, redis_client: redis.Redis
) -> None:
    for seq in range(3):
        assert _identify(api, GONE, seq).status_code == 200
    body = {"person": [f"email:{email(GONE)}", GONE], "delete_upstream": True}
    r = api.post(FORGET, json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["upstream_deletes"] == 1
    # Only the delete is queued for them, by id (the best identifier), through Track
    assert _queued(redis_client, GONE) == ["delete"]
    assert email(GONE) not in str(traces(redis_client, [email(GONE)]))
