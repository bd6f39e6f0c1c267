"""Dead-letter operations against real Redis: filters, replay, purge, admin API and CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from service import keys
from service.api.app import create_app
from service.config import Settings
from service.errors import InvalidRequest
from service.jobs import Lane
from service.lanes.track.jobs import FIELD_OP, FIELD_V1, v1_job, v2_job
from service.store.connections import connect_async
from service.store.dead_letter_admin import DeadLetterAdmin, DeadLetterFilter, parse_time_ms
from service.store.dead_letters import DeadLetter, DeadLetterStore
from service.store.queue import Queue
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields
from tests.support.triggers import RecordingTriggers

ADMIN = {"Authorization": "Bearer dev-admin-key"}
NOW_MS = 1_800_000_000_000


def _identify(person: str) -> DeadLetter:
    job = v2_job(
        {"type": "person", "action": "identify", "identifiers": {"id": person}, "attributes": {}}
    )
    return DeadLetter("v2", job.payload, "default:0:1-0", "invalid", "invalid", 400)


def _event(
    person: str, event_id: str, reason: str = "crash_loop", outcome_class: str = "crash"
) -> DeadLetter:
    op = {
        "type": "person",
        "action": "event",
        "identifiers": {"email": person},
        "name": "bought",
        "id": event_id,
    }
    return DeadLetter(
        "v2", v2_job(op).payload, "default:1:2-0", reason, outcome_class, dead_ms=NOW_MS
    )


def _segment() -> DeadLetter:
    job = v1_job(
        "POST",
        "/api/v1/segments/7/add_customers",
        {"ids": ["a"]},
        route="segment:7",
        op_type="add_customers",
    )
    return DeadLetter("v1", job.payload, "default:2:3-0", "max_attempts", "transient", 503)


@pytest.fixture
def letters(redis_client: redis.Redis) -> list[DeadLetter]:
    batch = [
        _identify("p1"),
        _identify("p2"),
        _event("a@example.com", "01JABCDEFGHJKMNPQRSTVWXYZ0"),
        _event(
            "b@example.com",
            "01JABCDEFGHJKMNPQRSTVWXYZ1",
            reason="invalid_field",
            outcome_class="partial",
        ),
        _segment(),
    ]
    DeadLetterStore(redis_client).add("default", batch)
    return batch


def _run(settings: Settings, work: Callable[[DeadLetterAdmin], Any]) -> Any:
    async def main() -> Any:
        client = connect_async(settings.redis)
        try:
            return await work(
                DeadLetterAdmin(client, Queue(client, settings.redis, settings.queue, None))
            )
        finally:
            await client.aclose()

    return asyncio.run(main())


def _handled(action: str) -> float:
    value = REGISTRY.get_sample_value(
        "cioq_dead_letters_handled_total", {"workspace": "default", "action": action}
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (DeadLetterFilter(), 5),
        (DeadLetterFilter(reason="invalid"), 2),
        (DeadLetterFilter(outcome_class="partial"), 1),
        (DeadLetterFilter(op_type="event"), 2),
        (DeadLetterFilter(op_type="add_customers"), 1),
        (DeadLetterFilter(person="p2"), 1),
        (DeadLetterFilter(person="a@example.com"), 1),
        (DeadLetterFilter(person="7"), 1),
        (DeadLetterFilter(op_type="event", outcome_class="crash"), 1),
        (DeadLetterFilter(person="nobody"), 0),
        (DeadLetterFilter(until_ms=1), 0),
        (DeadLetterFilter(lane=Lane.TRACK), 5),
        (DeadLetterFilter(lane=Lane.PIPELINES), 0),
    ],
)
def test_filters_select_by_reason_class_op_person_and_time(
    make_settings: Callable[..., Settings],
    letters: list[DeadLetter],
    flt: DeadLetterFilter,
    expected: int,
) -> None:
    page = _run(make_settings(), lambda dlq: dlq.page("default", flt, limit=100))
    assert len(page.letters) == expected


def test_paging_walks_every_letter_once(
    make_settings: Callable[..., Settings], letters: list[DeadLetter]
) -> None:
    settings = make_settings()
    seen: list[str] = []
    after = None
    while True:

        def next_page(dlq: DeadLetterAdmin, after: str | None = after) -> Any:
            return dlq.page("default", DeadLetterFilter(), limit=2, after=after)

        page = _run(settings, next_page)
        seen += [s.id for s in page.letters]
        if page.next_after is None:
            break
        after = page.next_after
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1800000000000", 1_800_000_000_000),
        ("2027-01-15T08:00:00Z", 1_800_000_000_000),
        ("2027-01-15T09:00:00+01:00", 1_800_000_000_000),
        ("2h", NOW_MS - 7_200_000),
        ("30m", NOW_MS - 1_800_000),
        ("7d", NOW_MS - 7 * 86_400_000),
    ],
)
def test_time_forms(text: str, expected: int) -> None:
    assert parse_time_ms(text, field_name="since", now_ms=NOW_MS) == expected


@pytest.mark.parametrize("text", ["yesterday", "2027-01-15T08:00:00", "5w", ""])
def test_bad_times_name_the_field(text: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_time_ms(text, field_name="since", now_ms=NOW_MS)
    assert info.value.errors[0].field == "since"


def test_replay_requeues_unchanged_into_the_route_shard_and_empties_the_dlq(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, letters: list[DeadLetter]
) -> None:
    """Replay keeps payload bytes (event ids) and removes the letters in the same MULTI."""
    settings = make_settings()
    before = _handled("replayed")
    outcome = _run(
        settings, lambda dlq: dlq.replay("default", DeadLetterFilter(), dry_run=False, who="t")
    )
    assert (outcome.matched, outcome.done) == (5, 5)
    assert _handled("replayed") - before == 5
    assert redis_client.xlen(keys.dead_letters("default")) == 0
    queued: list[bytes] = []
    for shard in range(settings.queue.shards):
        for fields in stream_fields(
            redis_client, keys.shard_keys("default", shard, Lane.TRACK).stream
        ):
            queued.append(fields.get(FIELD_OP) or fields[FIELD_V1])
    assert sorted(queued) == sorted(letter.payload for letter in letters)


def test_racing_replays_queue_each_letter_once(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Two replays of the same 600 letters at once: every job is queued exactly once."""
    settings = make_settings()
    DeadLetterStore(redis_client).add("default", [_identify(f"r{i}") for i in range(600)])

    async def race() -> list[int]:
        clients = [connect_async(settings.redis) for _ in range(2)]
        try:
            admins = [
                DeadLetterAdmin(c, Queue(c, settings.redis, settings.queue, None)) for c in clients
            ]
            outcomes = await asyncio.gather(
                *(a.replay("default", DeadLetterFilter(), dry_run=False, who="t") for a in admins)
            )
            return [o.done for o in outcomes]
        finally:
            for client in clients:
                await client.aclose()

    done = asyncio.run(race())
    assert sum(done) == 600
    queued = [
        fields[FIELD_OP]
        for shard in range(settings.queue.shards)
        for fields in stream_fields(
            redis_client, keys.shard_keys("default", shard, Lane.TRACK).stream
        )
    ]
    assert len(queued) == len(set(queued)) == 600
    assert redis_client.xlen(keys.dead_letters("default")) == 0


def test_dry_runs_change_nothing(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, letters: list[DeadLetter]
) -> None:
    settings = make_settings()
    replay = _run(
        settings, lambda dlq: dlq.replay("default", DeadLetterFilter(), dry_run=True, who="t")
    )
    purge = _run(
        settings, lambda dlq: dlq.purge("default", DeadLetterFilter(), dry_run=True, who="t")
    )
    assert (replay.matched, replay.done, purge.matched, purge.done) == (5, 0, 5, 0)
    assert redis_client.xlen(keys.dead_letters("default")) == 5
    assert not any(
        redis_client.exists(keys.shard_keys("default", s, Lane.TRACK).stream)
        for s in range(settings.queue.shards)
    )


def test_purge_with_filter_removes_only_matches(
    make_settings: Callable[..., Settings], redis_client: redis.Redis, letters: list[DeadLetter]
) -> None:
    settings = make_settings()
    outcome = _run(
        settings,
        lambda dlq: dlq.purge(
            "default", DeadLetterFilter(reason="invalid"), dry_run=False, who="t"
        ),
    )
    assert (outcome.matched, outcome.done) == (2, 2)
    left = _run(settings, lambda dlq: dlq.page("default", DeadLetterFilter(), limit=10))
    assert sorted(s.letter.reason for s in left.letters) == [
        "crash_loop",
        "invalid_field",
        "max_attempts",
    ]


@pytest.fixture
def admin(make_settings: Callable[..., Settings]) -> Iterator[httpx.Client]:
    app = create_app(make_settings(), triggers=RecordingTriggers())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


BASE = "/admin/v1/workspaces/default/dead-letters"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/v1/workspaces"),
        ("GET", BASE),
        ("GET", f"{BASE}/summary"),
        ("GET", f"{BASE}/1-0"),
        ("POST", f"{BASE}/replay"),
        ("POST", f"{BASE}/purge"),
    ],
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer dev-ingest-key"}, {"Authorization": "Bearer nope"}],
    ids=["none", "ingest-key", "wrong-key"],
)
def test_admin_routes_need_an_admin_key(
    admin: httpx.Client, method: str, path: str, headers: dict[str, str]
) -> None:
    r = admin.request(method, path, headers=headers, json={"all": True})
    assert r.status_code == 401
    assert r.json()["errors"][0]["field"] == "authorization"


def _audit(client: redis.Redis) -> list[tuple[str, str, str]]:
    """(who, action, detail) of every audit entry, oldest first."""
    return [
        (f[b"who"].decode(), f[b"action"].decode(), f[b"detail"].decode())
        for f in stream_fields(client, keys.audit())
    ]


def test_admin_list_show_summary_and_purge(
    admin: httpx.Client, redis_client: redis.Redis, letters: list[DeadLetter]
) -> None:
    listed = admin.get(BASE, params={"op_type": "event"}, headers=ADMIN).json()
    assert [d["op_type"] for d in listed["dead_letters"]] == ["event", "event"]
    first = listed["dead_letters"][0]
    assert first["payload"]["id"] == "01JABCDEFGHJKMNPQRSTVWXYZ0"
    shown = admin.get(f"{BASE}/{first['id']}", headers=ADMIN).json()
    assert shown == first
    summary = admin.get(f"{BASE}/summary", headers=ADMIN).json()
    assert summary == {
        "size": 5,
        "by_reason": {"invalid": 2, "crash_loop": 1, "invalid_field": 1, "max_attempts": 1},
    }
    dry = admin.post(f"{BASE}/purge", headers=ADMIN, json={"class": "partial", "dry_run": True})
    assert dry.json() == {"matched": 1, "purged": 0, "dry_run": True}
    assert _audit(redis_client) == []  # a dry run acts on nothing, so audits nothing
    r = admin.post(f"{BASE}/purge", headers=ADMIN, json={"class": "partial"})
    assert r.json() == {"matched": 1, "purged": 1, "dry_run": False}
    assert redis_client.xlen(keys.dead_letters("default")) == 4
    [(who, action, detail)] = _audit(redis_client)
    assert (action, detail) == ("purge", "purged 1 of 1 matched letters (class=partial)")
    assert who and not who.startswith("cli:")
    workspaces = admin.get("/admin/v1/workspaces", headers=ADMIN).json()
    assert workspaces == {
        "workspaces": [{"name": "default", "site_id": "dev-site", "dead_letters": 4}]
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "status"),
    [
        ("POST", f"{BASE}/replay", {}, "filter", 400),
        ("POST", f"{BASE}/purge", {"dry_run": "yes"}, "dry_run", 400),
        ("POST", f"{BASE}/purge", {"colour": "red"}, "colour", 400),
        ("POST", f"{BASE}/purge", {"ids": ["abc"]}, "ids", 400),
        ("POST", f"{BASE}/purge", {"since": "last week"}, "since", 400),
        ("POST", f"{BASE}/purge", {"lane": "sms"}, "lane", 400),
        ("GET", f"{BASE}?limit=0", None, "limit", 400),
        ("GET", f"{BASE}/1-0", None, "id", 404),
        ("GET", "/admin/v1/workspaces/nope/dead-letters", None, "workspace", 404),
    ],
)
def test_admin_bad_requests_name_the_field(
    admin: httpx.Client, method: str, path: str, body: Any, field: str, status: int
) -> None:
    r = admin.request(method, path, headers=ADMIN, json=body)
    assert r.status_code == status
    assert r.json()["errors"][0]["field"] == field


def test_cli_list_show_replay_purge(
    make_settings: Callable[..., Settings],
    redis_url: str,
    redis_client: redis.Redis,
    letters: list[DeadLetter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cioq.cli import app

    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", "4")
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--json", "--reason", "invalid"])
    assert listed.exit_code == 0, listed.output
    rows = [orjson.loads(line) for line in listed.output.splitlines()]
    assert [r["payload"]["identifiers"]["id"] for r in rows] == ["p1", "p2"]
    table = runner.invoke(app, ["dlq", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "crash_loop" in table.output and "add_customers" in table.output
    shown = runner.invoke(app, ["dlq", "show", rows[0]["id"]])
    assert shown.exit_code == 0 and '"p1"' in shown.output
    refused = runner.invoke(app, ["dlq", "purge"])
    assert refused.exit_code == 2 and "--all" in refused.output
    dry = runner.invoke(app, ["dlq", "purge", "--class", "crash", "--dry-run"])
    assert dry.exit_code == 0 and "1 matched; dry run" in dry.output
    assert redis_client.xlen(keys.dead_letters("default")) == 5
    purged = runner.invoke(app, ["dlq", "purge", "--op", "add_customers"])
    assert purged.exit_code == 0 and "1 matched, 1 purged" in purged.output
    replayed = runner.invoke(app, ["dlq", "replay", rows[0]["id"], rows[1]["id"]])
    assert replayed.exit_code == 0 and "2 matched, 2 replayed" in replayed.output
    assert redis_client.xlen(keys.dead_letters("default")) == 2
    # The purge and the replay are audited as the operator at the terminal; the dry run not.
    audit = _audit(redis_client)
    assert [(action, detail.split(" (")[0]) for _, action, detail in audit] == [
        ("purge", "purged 1 of 1 matched letters"),
        ("replay", "replayed 2 of 2 matched letters"),
    ]
    assert all(who.startswith("cli:") for who, _, _ in audit)
    assert rows[0]["id"] in audit[1][2]
    unknown = runner.invoke(app, ["dlq", "list", "-w", "nope"])
    assert unknown.exit_code == 2 and "nope" in unknown.output


def test_cli_replay_of_app_sends_asks_first(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ambiguous send may have been delivered: replay asks, ``--yes`` skips the question,
    and the job goes back to its own lane (a trigger to the broadcasts lane)."""
    from cioq.cli import app
    from service.jobs import Lane
    from service.lanes.app.jobs import app_job

    send = app_job(
        "j-1",
        "/v1/send/email",
        {"identifiers": {"id": "p9"}},
        limit="send",
        route="send:j-1",
        op_type="send_email",
    )
    trigger = app_job(
        "t-1",
        "/v1/campaigns/3/triggers",
        {},
        limit="broadcast",
        bucket="3",
        route="broadcast:3",
        op_type="trigger_broadcast",
    )
    DeadLetterStore(redis_client).add(
        "default",
        [
            DeadLetter(
                kind="app",
                payload=job.payload,
                source="default:0:1-0",
                reason="ambiguous",
                outcome_class="ambiguous",
                message="may have acted",
                dead_ms=1,
            )
            for job in (send, trigger)
        ],
    )
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_SHARDS", "4")
    runner = CliRunner()
    table = runner.invoke(app, ["dlq", "list", "--class", "ambiguous"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "app" in table.output and "ambiguous" in table.output
    person = runner.invoke(app, ["dlq", "list", "--json", "--person", "p9"])
    assert [orjson.loads(line)["payload"]["id"] for line in person.output.splitlines()] == ["j-1"]
    declined = runner.invoke(app, ["dlq", "replay", "--class", "ambiguous"], input="n\n")
    assert declined.exit_code == 1 and "may deliver them twice" in declined.output, declined.output
    assert redis_client.xlen(keys.dead_letters("default")) == 2
    replayed = runner.invoke(app, ["dlq", "replay", "--class", "ambiguous", "--yes"])
    assert replayed.exit_code == 0 and "2 matched, 2 replayed" in replayed.output
    lanes = {
        lane
        for lane in (Lane.APP, Lane.BROADCASTS)
        for shard in range(4)
        if redis_client.xlen(keys.shard_keys("default", shard, lane).stream)
    }
    assert lanes == {Lane.APP, Lane.BROADCASTS}
