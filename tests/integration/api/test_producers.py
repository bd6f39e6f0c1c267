"""Every job records the producer its ingest key names, from ingest to metrics and dead
letters: the stream entry, the accepted/delivered/dead-lettered counters, the letter, the
admin API's and the CLI's filters, the console's column, replays and ``cioq status``."""

from __future__ import annotations

import hashlib
import re
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
from service.jobs import PRODUCER_FIELD, UNKNOWN_PRODUCER, Lane, Traffic
from service.lanes.track.jobs import FIELD_OP, v2_job
from service.metrics import definitions
from service.metrics.activity import Tally
from service.store.dead_letters import DeadLetter, DeadLetterStore
from tests.support.drain import build_drainer
from tests.support.http_server import serve_in_thread
from tests.support.streams import stream_fields
from tests.support.triggers import RecordingTriggers

BARE_KEY = "bare-ingest-key"
BARE_NAME = "key-" + hashlib.sha256(BARE_KEY.encode()).hexdigest()[:8]
ADMIN = {"Authorization": "Bearer dev-admin-key"}
KEYS = {"billing": "billing-key-1", "etl": "etl-key-1"}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox_url: str) -> Settings:
    return make_settings(
        shards=1,
        linger_ms=0,
        track_url=sandbox_url,
        ingest_keys=f"billing:{KEYS['billing']},{BARE_KEY}",
        bulk_ingest_keys=f"etl:{KEYS['etl']}",
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(settings, triggers=RecordingTriggers())) as url:
        yield url


def _identify(url: str, key: str, person: str, **headers: str) -> None:
    body = {"email": f"{person}@example.com"}
    r = httpx.put(
        f"{url}/api/v1/customers/{person}", json=body, auth=("site", key), headers=headers
    )
    assert r.status_code == 200, r.text


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"workspace": "default", **labels}) or 0.0


def _accepted(producer: str) -> float:
    labels = {"lane": "track", "op_type": "identify", "producer": producer}
    return _metric("cioq_jobs_accepted_total", **labels)


def test_each_entry_and_accepted_count_names_the_producer_of_its_key(
    api: str, redis_client: redis.Redis
) -> None:
    before = {name: _accepted(name) for name in ("billing", "etl", BARE_NAME)}
    _identify(api, KEYS["billing"], "a")
    _identify(api, KEYS["billing"], "b", **{"Idempotency-Key": "k-1"})
    _identify(api, KEYS["etl"], "c")  # a bulk key: its own streams
    _identify(api, BARE_KEY, "d")
    live = stream_fields(redis_client, keys.shard_keys("default", 0, Lane.TRACK).stream)
    bulk = stream_fields(
        redis_client, keys.shard_keys("default", 0, Lane.TRACK, traffic=Traffic.BULK).stream
    )
    found = [(f[PRODUCER_FIELD].decode(), orjson.loads(f[FIELD_OP])) for f in (*live, *bulk)]
    people = {op["identifiers"]["id"]: producer for producer, op in found}
    assert people == {"a": "billing", "b": "billing", "c": "etl", "d": BARE_NAME}
    assert BARE_KEY not in str(found)  # the fingerprint, never the key
    after = {name: _accepted(name) - count for name, count in before.items()}
    assert after == {"billing": 2, "etl": 1, BARE_NAME: 1}


def test_delivered_and_dead_lettered_jobs_count_and_keep_their_producer(
    api: str, settings: Settings, redis_client: redis.Redis, sandbox: httpx.Client
) -> None:
    delivered = {p: _metric("cioq_delivered_ops_total", lane="track", producer=p) for p in KEYS}
    dead = _metric("cioq_dead_letters_total", reason="invalid", producer="billing")
    r = httpx.post(
        f"{api}/api/v2/batch",
        auth=("site", KEYS["billing"]),
        json={
            "batch": [
                {"type": "person", "action": "identify", "identifiers": {"id": "ok"}},
                {
                    "type": "person",
                    "action": "identify",
                    "identifiers": {"id": "bad"},
                    "attributes": {"sandbox_poison": "400"},
                },
            ]
        },
    )
    assert r.status_code == 200, r.text
    report = build_drainer(settings, redis_client).drain("default", 0, Lane.TRACK)
    assert report.stopped == "empty"
    got = {p: _metric("cioq_delivered_ops_total", lane="track", producer=p) for p in KEYS}
    assert {p: got[p] - delivered[p] for p in KEYS} == {"billing": 1, "etl": 0}
    assert _metric("cioq_dead_letters_total", reason="invalid", producer="billing") - dead == 1
    [letter] = [DeadLetter.from_fields(f) for f in stream_fields(redis_client, dl_key())]
    assert letter.producer == "billing"


def dl_key() -> str:
    return keys.dead_letters("default")


def _letter(person: str, producer: str) -> DeadLetter:
    op = {"type": "person", "action": "identify", "identifiers": {"id": person}}
    job = v2_job(op)
    return DeadLetter(
        "v2", job.payload, "default:0:1-0", "invalid", "invalid", 400, producer=producer
    )


@pytest.fixture
def letters(redis_client: redis.Redis) -> None:
    DeadLetterStore(redis_client).add(
        "default", [_letter("p1", "billing"), _letter("p2", "etl"), _letter("p3", "")]
    )


@pytest.mark.parametrize(
    ("producer", "people"), [("billing", ["p1"]), ("etl", ["p2"]), ("nobody", [])]
)
def test_the_admin_api_lists_and_filters_letters_by_producer(
    api: str, letters: None, producer: str, people: list[str]
) -> None:
    r = httpx.get(
        f"{api}/admin/v1/workspaces/default/dead-letters",
        params={"producer": producer},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    rows = r.json()["dead_letters"]
    assert [row["payload"]["identifiers"]["id"] for row in rows] == people
    assert all(row["producer"] == producer for row in rows)


def test_a_replayed_letter_is_stored_under_its_producer(
    api: str, letters: None, redis_client: redis.Redis
) -> None:
    r = httpx.post(
        f"{api}/admin/v1/workspaces/default/dead-letters/replay",
        json={"all": True},
        headers=ADMIN,
    )
    assert r.status_code == 200 and r.json()["replayed"] == 3, r.text
    entries = stream_fields(redis_client, keys.shard_keys("default", 0, Lane.TRACK).stream)
    producers = {
        orjson.loads(f[FIELD_OP])["identifiers"]["id"]: f.get(PRODUCER_FIELD, b"").decode()
        for f in entries
    }
    assert producers == {"p1": "billing", "p2": "etl", "p3": ""}


def test_the_cli_filters_and_shows_letters_by_producer(
    letters: None, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cioq.cli import app

    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--json", "--producer", "etl"])
    assert listed.exit_code == 0, listed.output
    rows = [orjson.loads(line) for line in listed.output.splitlines()]
    assert [(r["producer"], r["payload"]["identifiers"]["id"]) for r in rows] == [("etl", "p2")]
    table = runner.invoke(app, ["dlq", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "billing" in table.output and "etl" in table.output
    dry = runner.invoke(app, ["dlq", "purge", "--producer", "billing", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("1 matched"), dry.output


def test_the_console_shows_and_filters_the_producer_column(api: str, letters: None) -> None:
    with httpx.Client(base_url=api, timeout=10) as client:
        assert client.post("/console/sign-in", data={"key": "dev-admin-key"}).status_code == 303
        page = client.get("/console/dead-letters", params={"producer": "etl"})
        assert page.status_code == 200, page.text
        cells = re.findall(r'<td class="producer">([^<]*)</td>', page.text)
        assert cells == ["etl"]
        every = client.get("/console/dead-letters").text
        assert re.findall(r'<td class="producer">([^<]*)</td>', every) == ["billing", "etl", "—"]


def test_status_splits_rates_and_letters_by_producer(
    settings: Settings,
    letters: None,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Configured producers are listed even when idle; jobs without one count as unknown."""
    from cioq.cli import app

    tally = Tally(background=False)
    tally.configure(settings.redis)
    monkeypatch.setattr(definitions, "TALLY", tally)
    job = v2_job({"type": "person", "action": "identify", "identifiers": {"id": "x"}})
    definitions.jobs_accepted("default", [job] * 3, "billing")
    definitions.delivered("default", [(0, "billing"), (0, "billing"), (0, "")], 1, job.lane)
    tally.flush()
    monkeypatch.setenv("CIOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("CIOQ_INGEST_KEYS", f"billing:{KEYS['billing']},{BARE_KEY}")
    monkeypatch.setenv("CIOQ_BULK_INGEST_KEYS", f"etl:{KEYS['etl']}")
    result = CliRunner().invoke(app, ["status", "--by-producer", "--json"])
    assert result.exit_code == 0, result.output
    rows: dict[str, dict[str, Any]] = {
        row["producer"]: row for row in map(orjson.loads, result.output.splitlines())
    }
    figures = {
        name: (row["accepted_per_min"], row["delivered_per_min"], row["dead_letters"])
        for name, row in rows.items()
    }
    assert figures == {
        "billing": (3.0, 2.0, 1),
        BARE_NAME: (0.0, 0.0, 0),
        "etl": (0.0, 0.0, 1),
        UNKNOWN_PRODUCER: (0.0, 1.0, 1),
    }
    table = CliRunner().invoke(app, ["status", "--by-producer"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "billing" in table.output and BARE_NAME in table.output


def test_producer_labels_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(definitions, "_seen_producers", set())
    labels = {definitions.producer_label(f"svc-{n}") for n in range(3 * definitions.MAX_PRODUCERS)}
    assert len(labels) == definitions.MAX_PRODUCERS + 1 and "other" in labels
    assert definitions.producer_label("svc-0") == "svc-0"  # admitted names stay themselves
    assert definitions.producer_label("") == UNKNOWN_PRODUCER
