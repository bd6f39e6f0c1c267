"""Repairing dead letters on a real Redis: one letter, racing repairs, bulk rules, admin API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client import REGISTRY

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.errors import InvalidRequest
from service.jobs import Lane
from service.lanes.app.jobs import FIELD_APP, app_job
from service.lanes.track.jobs import FIELD_OP, v2_job
from service.store.connections import connect_async
from service.store.dead_letter_admin import DeadLetterAdmin
from service.store.dead_letter_repair import LetterRepair
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.queue import Queue
from service.web.auth import Authenticator
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_entries, stream_fields
from tests.support.triggers import RecordingTriggers

ADMIN = {"Authorization": "Bearer dev-admin-key"}
BASE = "/admin/v1/workspaces/default/dead-letters"


def _op(person: str, **attributes: Any) -> dict[str, Any]:
    return {
        "type": "person",
        "action": "identify",
        "identifiers": {"id": person},
        "attributes": attributes,
        "timestamp": 1_800_000_000,
    }


def _letter(op: dict[str, Any], reason: str = "invalid") -> DeadLetter:
    return DeadLetter(
        "v2",
        v2_job(op).payload,
        f"default:0:{op['identifiers']['id']}-0",
        reason,
        "invalid",
        400,
        message="sandbox_poison at batch index 0",
        field="attributes.sandbox_poison",
    )


def _letter_ids(client: redis.Redis) -> list[str]:
    return [i.decode() for i, _ in stream_entries(client, keys.dead_letters("default"))]


def _queued(client: redis.Redis, settings: Settings, lane: Lane = Lane.TRACK) -> list[Any]:
    field = FIELD_OP if lane is Lane.TRACK else FIELD_APP
    return [
        orjson.loads(fields[field])
        for shard in range(settings.queue.shards)
        for fields in stream_fields(client, keys.shard_keys("default", shard, lane).stream)
    ]


def _repaired_count() -> float:
    labels = {"workspace": "default", "action": "repaired"}
    return REGISTRY.get_sample_value("cioq_dead_letters_handled_total", labels) or 0.0


def _audit(client: redis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in stream_entries(client, keys.audit(), newest_first=True)]


def _run(settings: Settings, work: Callable[[LetterRepair], Any]) -> Any:
    async def main() -> Any:
        client = connect_async(settings.redis)
        try:
            queue = Queue(client, settings.redis, settings.queue, None)
            return await work(LetterRepair(DeadLetterAdmin(client, queue)))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_repair_replays_the_fixed_op_with_its_timestamp_and_audits_the_diff(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings()
    bad = _op("p1", plan="pro", sandbox_poison="400")
    DeadLetterStore(redis_client).add("default", [_letter(bad), _letter(_op("p2"))])
    first, second = _letter_ids(redis_client)
    fix = {k: v for k, v in bad.items() if k != "timestamp"}  # the accept time comes back
    fix["attributes"] = {"plan": "pro"}

    def repair(r: LetterRepair) -> Any:
        return r.repair("default", first, fix, strict=False, who="ops")

    done = _run(settings, repair)
    assert done.changes == ['-attributes.sandbox_poison: "400"']
    assert _queued(redis_client, settings) == [{**fix, "timestamp": 1_800_000_000}]
    assert _letter_ids(redis_client) == [second]
    entry = _audit(redis_client)[0]
    assert (entry[b"who"], entry[b"action"], entry[b"lane"]) == (b"ops", b"repair", b"track")
    assert b"-attributes.sandbox_poison" in entry[b"detail"] and first.encode() in entry[b"detail"]


def test_an_invalid_fix_is_refused_naming_the_field_and_the_letter_stays(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings()
    DeadLetterStore(redis_client).add("default", [_letter(_op("p1", sandbox_poison="400"))])
    (letter_id,) = _letter_ids(redis_client)
    fix = {**_op("p1"), "identifiers": {"id": "x" * 200}}

    with pytest.raises(InvalidRequest) as info:
        _run(settings, lambda r: r.repair("default", letter_id, fix, strict=False, who="ops"))
    assert info.value.status == 422
    assert [(e.field, e.rule) for e in info.value.errors] == [("identifiers.id", "max_bytes")]
    assert _letter_ids(redis_client) == [letter_id]
    assert _queued(redis_client, settings) == []
    assert _audit(redis_client) == []


def test_racing_repairs_of_one_letter_queue_one_job(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings()
    DeadLetterStore(redis_client).add("default", [_letter(_op("p1", sandbox_poison="400"))])
    (letter_id,) = _letter_ids(redis_client)
    fixes = [_op("p1", plan=name) for name in ("a", "b")]

    async def race() -> list[Any]:
        clients = [connect_async(settings.redis) for _ in fixes]
        try:
            repairs = [
                LetterRepair(DeadLetterAdmin(c, Queue(c, settings.redis, settings.queue, None)))
                for c in clients
            ]
            return await asyncio.gather(
                *(
                    r.repair("default", letter_id, fix, strict=False, who="ops")
                    for r, fix in zip(repairs, fixes, strict=True)
                ),
                return_exceptions=True,
            )
        finally:
            for client in clients:
                await client.aclose()

    outcomes = asyncio.run(race())
    refused = [o for o in outcomes if isinstance(o, InvalidRequest)]
    assert len(refused) <= 1 and all(o.status in (404, 409) for o in refused)
    assert len(_queued(redis_client, settings)) == 1
    assert _letter_ids(redis_client) == []


def test_an_app_send_repair_needs_the_may_deliver_twice_confirmation(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings()
    body = {"identifiers": {"id": "p9"}, "transactional_message_id": 3, "to": "555"}
    send = app_job("j-1", "/v1/send/sms", body, limit="send", route="send:j-1", op_type="send_sms")
    letter = DeadLetter("app", send.payload, "default:0:1-0", "invalid", "invalid", 400)
    DeadLetterStore(redis_client).add("default", [letter])
    (letter_id,) = _letter_ids(redis_client)
    fix = {**orjson.loads(send.payload), "body": {**body, "to": "+15555550100"}}

    def repair(twice: bool) -> Callable[[LetterRepair], Any]:
        return lambda r: r.repair(
            "default", letter_id, fix, strict=False, who="ops", may_deliver_twice=twice
        )

    with pytest.raises(InvalidRequest) as info:
        _run(settings, repair(False))
    assert (info.value.status, info.value.errors[0].field) == (409, "may_deliver_twice")
    _run(settings, repair(True))
    (queued,) = _queued(redis_client, settings, Lane.APP)
    assert (queued["id"], queued["body"]["to"]) == ("j-1", "+15555550100")


@pytest.fixture
def admin(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    app = create_app(make_settings(), triggers=RecordingTriggers())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_admin_patch_repairs_and_replays_and_refuses_an_invalid_fix_by_field(
    admin: httpx.Client, make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    DeadLetterStore(redis_client).add("default", [_letter(_op("p1", sandbox_poison="400"))])
    (letter_id,) = _letter_ids(redis_client)
    refused = admin.patch(
        f"{BASE}/{letter_id}", headers=ADMIN, json={"payload": {**_op("p1"), "type": "robot"}}
    )
    assert refused.status_code == 422
    assert {"field": "type", "rule": "enum"}.items() <= refused.json()["errors"][0].items()
    assert admin.patch(f"{BASE}/{letter_id}", json={"payload": _op("p1")}).status_code == 401
    assert admin.patch(f"{BASE}/{letter_id}", headers=ADMIN, json={}).status_code == 400
    fixed = admin.patch(f"{BASE}/{letter_id}", headers=ADMIN, json={"payload": _op("p1")})
    assert fixed.status_code == 200
    assert fixed.json() == {
        "id": letter_id,
        "replayed": True,
        "changes": ['-attributes.sandbox_poison: "400"'],
    }
    assert _queued(redis_client, make_settings()) == [_op("p1")]
    again = admin.patch(f"{BASE}/{letter_id}", headers=ADMIN, json={"payload": _op("p1")})
    assert again.status_code == 404
    settings = make_settings()
    name = Authenticator(settings.workspaces, settings.keys).admin_name("dev-admin-key")
    assert name and _audit(redis_client)[0][b"who"] == name.encode()  # the key's audit name


def test_bulk_repair_dry_run_shows_count_and_example_then_fixes_exactly_those(
    admin: httpx.Client, make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    settings = make_settings()
    poisoned = [_op(f"p{i}", plan="pro", sandbox_poison="400") for i in range(3)]
    without = _op("clean", plan="pro")  # matches the filter, has no such field
    still_bad = {**_op("q", sandbox_poison="400"), "identifiers": {"id": "x" * 200}}
    other = _letter(_op("r", sandbox_poison="400"), reason="max_attempts")  # filtered out
    DeadLetterStore(redis_client).add(
        "default", [*map(_letter, poisoned), _letter(without), _letter(still_bad), other]
    )
    ids = _letter_ids(redis_client)
    body = {"action": "drop", "field": "attributes.sandbox_poison", "reason": "invalid"}
    dry = admin.post(f"{BASE}/repair", headers=ADMIN, json={**body, "dry_run": True}).json()
    assert (dry["matched"], dry["fixable"], dry["invalid"], dry["repaired"]) == (5, 3, 1, 0)
    assert dry["ids"] == ids[:3]
    assert dry["example"]["id"] == ids[0]
    assert dry["example"]["after"] == _op("p0", plan="pro") | {"attributes": {"plan": "pro"}}
    assert dry["example"]["changes"] == ['-attributes.sandbox_poison: "400"']
    assert dry["first_invalid"]["id"] == ids[4]
    assert _letter_ids(redis_client) == ids  # a dry run changes nothing
    assert _queued(redis_client, settings) == []

    before = _repaired_count()
    real = admin.post(f"{BASE}/repair", headers=ADMIN, json=body).json()
    assert _repaired_count() - before == 3
    assert (real["fixable"], real["repaired"]) == (3, 3)
    assert real["ids"] == dry["ids"]
    assert sorted(q["identifiers"]["id"] for q in _queued(redis_client, settings)) == [
        "p0",
        "p1",
        "p2",
    ]
    assert all("sandbox_poison" not in q["attributes"] for q in _queued(redis_client, settings))
    assert _letter_ids(redis_client) == ids[3:]
    assert b"drop attributes.sandbox_poison on 3 of 3" in _audit(redis_client)[0][b"detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "drop", "field": "a"}, "filter"),  # an empty selection needs all
        ({"action": "cut", "field": "a", "all": True}, "action"),
        ({"action": "rename", "field": "a", "all": True}, "to"),
        ({"action": "drop", "field": "a", "colour": "red"}, "colour"),
    ],
)
def test_bulk_repair_bad_requests_name_the_field(
    admin: httpx.Client, body: dict[str, Any], field: str
) -> None:
    r = admin.post(f"{BASE}/repair", headers=ADMIN, json=body)
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == field
