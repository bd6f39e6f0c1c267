"""A fourth lane, registered by this module alone, goes through cioq end to end.

The "ledger" lane is a fake upstream family: its own route (``POST /v1/ledger``), job
kind (``ledger``, stream field ``l``), batch rule (entries of many requests share one
body) and client (in-process; it refuses a batch that holds a negative amount, as a
400). Nothing outside `ledger_lane` below knows of it: the ingest API, the drain
engine, the store, dead letters and their replay reach it through
`service.lanes.registry` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import orjson
import pytest
import redis

from service import keys
from service.api.app import create_app
from service.config import Settings, Workspace
from service.delivery.outcomes import Outcome, OutcomeClass
from service.errors import FieldError, InvalidRequest
from service.jobs import Job, JobKind, Lane, dumps
from service.lanes import registry
from service.lanes.registry import LaneSpec
from service.store.queue import Queue
from service.web.http import OK, Request, Response, Route
from tests.support.drain import build_drainer, dlq
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

LEDGER = cast(Lane, "ledger")
INGEST = {"Authorization": "Bearer dev-ingest-key"}
ADMIN = {"Authorization": "Bearer dev-admin-key"}
DEAD_LETTERS = "/admin/v1/workspaces/default/dead-letters"


def _entry_job(entry: dict[str, Any]) -> Job:
    return Job("ledger", f"account:{entry['account']}", dumps(entry), "post")


def _restore(payload: bytes) -> Job:
    return _entry_job(orjson.loads(payload))


LEDGER_KIND = JobKind(
    "ledger",
    b"l",
    LEDGER,
    batches=True,
    restore=_restore,
    subjects=lambda data: {str(data.get("account"))},
    person=lambda data: f"account={data.get('account')}",
)


class FakeLedger:
    """The lane's upstream: takes ``{"batch":[...]}`` bodies; refuses negative amounts."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refuse_negative = True

    def send_batch(self, body: bytes, *, op_count: int) -> Outcome:
        entries = orjson.loads(body)["batch"]
        if self.refuse_negative and any(e["amount"] < 0 for e in entries):
            return Outcome(OutcomeClass.INVALID, 400, "negative amount")
        self.received += entries
        return Outcome(OutcomeClass.SUCCESS, 200)

    def close(self) -> None: ...


def _routes(queue: Queue, settings: Settings) -> list[Route]:
    async def post(req: Request, ws: Workspace) -> Response:
        entries = req.json().get("entries")
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("account"), str) for e in entries
        ):
            raise InvalidRequest([FieldError("entries", "type", "entries need an account")])
        await queue.enqueue(ws.name, [_entry_job(e) for e in entries])
        return OK

    return [Route("POST", ("v1", "ledger"), "ledger.post", post)]


@pytest.fixture
def ledger_lane() -> Iterator[FakeLedger]:
    """The whole registration of the lane: one `LaneSpec`."""
    upstream = FakeLedger()
    registry.register(
        LaneSpec(
            LEDGER,
            (LEDGER_KIND,),
            batches=True,
            routes=_routes,
            max_batch_bytes=lambda s: 4096,
            max_item_bytes=lambda s: 512,
            client=lambda ws, s: upstream,
        )
    )
    yield upstream
    registry.unregister(LEDGER)


def _drain_triggered(
    settings: Settings, client: redis.Redis, triggers: RecordingTriggers
) -> list[str]:
    """Run a drain for each trigger sent so far (and forget them); their stop reasons."""
    drainer = build_drainer(settings, client)
    done = []
    for (workspace, shard, _), lane in zip(triggers.sent, triggers.lanes, strict=True):
        done.append(str(drainer.drain(workspace, shard, lane).stopped))
    triggers.sent.clear()
    triggers.lanes.clear()
    return done


def test_a_registered_lane_ingests_drains_dead_letters_and_replays(
    ledger_lane: FakeLedger,
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
    triggers: RecordingTriggers,
) -> None:
    settings = make_settings(shards=1)
    entries = [{"account": "a1", "amount": 5}, {"account": "a1", "amount": -3}]
    entries += [{"account": "a1", "amount": 7}]
    stream = keys.shard_keys("default", 0, LEDGER).stream
    with (
        serve_in_thread(create_app(settings, triggers=triggers)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        post = http.post("/v1/ledger", json={"entries": entries}, headers=INGEST)
        assert post.status_code == 200
        refused = http.post("/v1/ledger", json={"entries": [{}]}, headers=INGEST)
        assert refused.status_code == 400
        assert triggers.lanes == [LEDGER]
        assert redis_client.xlen(stream) == 3

        assert _drain_triggered(settings, redis_client, triggers) == ["empty"]
        # The refused batch was split until the negative entry stood alone.
        assert [e["amount"] for e in ledger_lane.received] == [5, 7]
        [letter] = dlq(redis_client)
        assert (letter[b"kind"], letter[b"reason"], letter[b"cls"]) == (
            b"ledger",
            b"invalid",
            b"invalid",
        )
        assert orjson.loads(letter[b"payload"]) == {"account": "a1", "amount": -3}
        listed = http.get(f"{DEAD_LETTERS}?lane=ledger", headers=ADMIN).json()["dead_letters"]
        assert [(x["lane"], x["person"]) for x in listed] == [("ledger", "account=a1")]

        ledger_lane.refuse_negative = False
        replay = http.post(f"{DEAD_LETTERS}/replay", json={"lane": "ledger"}, headers=ADMIN)
        assert replay.json() == {"matched": 1, "replayed": 1, "dry_run": False}
    assert dlq(redis_client) == []
    assert _drain_triggered(settings, redis_client, triggers) == ["empty"]
    assert [e["amount"] for e in ledger_lane.received] == [5, 7, -3]
    assert redis_client.xlen(stream) == 0
