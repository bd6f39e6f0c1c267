"""cioq against Customer.io's own published contract (its Track and Pipelines OpenAPI).

Positive mode: every request the document allows is accepted, unless the refusal is a
rule in docs/validation-rules.md's exception table (kept with evidence, or a place where
the document is wrong); everything accepted drains into the sandbox without a dead
letter. Negative mode: every refusal is a 4xx naming a field. Nothing is ever a 5xx.

Each test runs a fixed seed and a rotating one (printed, so a failure can be replayed
with CIOQ_CONFORMANCE_SEED). CIOQ_CONFORMANCE_EXAMPLES sets the examples per operation
(default 10, to keep the suite short; the acceptance figure uses 100: docs/validation-rules.md
"Checking it").
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import httpx
import pytest
import redis
from schemathesis.generation.modes import GenerationMode

from service.api.app import create_app
from service.config import Settings
from service.jobs import Lane
from tests.support import customerio_openapi as oracle
from tests.support.drain import build_drainer, dlq
from tests.support.http_server import serve_in_thread
from tests.support.triggers import RecordingTriggers

pytestmark = pytest.mark.skipif(not oracle.available(), reason="no Customer.io OpenAPI documents")

EXAMPLES = int(os.environ.get("CIOQ_CONFORMANCE_EXAMPLES", "10"))
FIXED_SEED = 28
ROTATING_SEED = int(os.environ.get("CIOQ_CONFORMANCE_SEED", random.randrange(2**32)))
SEEDS = [FIXED_SEED, ROTATING_SEED]
INGEST_KEY = "dev-ingest-key"

#: (last part of the field, rule) of every refusal a conforming request may get: the
#: rows of docs/validation-rules.md "Kept with evidence" and "Where the document is wrong".
EXCEPTIONS = {
    # Kept with evidence.
    ("name", "required"),  # "event name must not be blank"
    ("event", "required"),
    ("id", "required"),  # "id ... cannot be an empty string" (every identifier)
    ("email", "required"),
    ("cio_id", "required"),
    ("phone", "required"),
    ("anonymous_id", "required"),
    ("object_id", "required"),
    ("cio_object_id", "required"),
    ("delivery_id", "required"),
    ("ids[]", "required"),
    ("phone", "format"),  # E.164
    ("object_type_id", "format"),  # "a string holding an integer, starting at 1"
    ("object_type_id", "required"),
    ("identifier", "required"),
    ("*", "max_bytes"),  # ID, attribute, event and op limits (TRACK §2)
    ("*", "max_items"),
    ("identifiers", "required"),  # "id attribute must be present"
    ("identifiers", "one_identifier"),
    ("action", "required"),  # v1 cio_relationships {action, relationships}
    ("relationships", "required"),
    ("groupId", "required"),  # group call
    ("deliveryId", "required"),  # Pipelines semantic-event schemas
    ("metric", "required"),
    ("objectId", "required"),
    ("objectTypeId", "required"),
    ("token", "required"),
    ("userId", "required"),
    ("anonymousId", "required"),
    # Where the document is wrong: a /v1/batch item need not name its type, though
    # nothing else says which call it is.
    ("type", "one_of"),
}


#: Customer.io's documented size and count limits, whatever field they fall on (an
#: attribute's name is the last part of its path).
LIMIT_RULES = {"max_bytes", "max_items"}


def _exception_key(field: str, rule: str) -> tuple[str, str]:
    if rule in LIMIT_RULES:
        return ("*", rule)
    last = field.split(".")[-1]
    if last.startswith("ids["):
        last = "ids[]"
    return (last, rule)


def _excepted(answer: object) -> bool:
    """A 4xx whose every error is on the exception list."""
    if not isinstance(answer, dict) or not answer.get("errors"):
        return False
    return all(_exception_key(e["field"], e["rule"]) in EXCEPTIONS for e in answer["errors"])


@pytest.mark.parametrize("which", ["track", "pipelines"])
@pytest.mark.parametrize("seed_value", SEEDS, ids=["fixed", "rotating"])
def test_conforming_requests_are_accepted_and_reach_customerio(
    which: str,
    seed_value: int,
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
    redis_client: redis.Redis,
    sandbox_url: str,
    client: httpx.Client,
) -> None:
    print(f"seed {seed_value} (CIOQ_CONFORMANCE_SEED={seed_value} replays it)")
    settings = make_settings(
        track_url=sandbox_url,
        cdp_url=sandbox_url,
        cdp_api_key="dev-cdp-key",
        bulk_drain_budget_s=60,
    )
    with serve_in_thread(create_app(settings, triggers=triggers)) as url:
        tally = oracle.run(
            which,
            url,
            INGEST_KEY,
            mode=GenerationMode.POSITIVE,
            examples=EXAMPLES,
            seed_value=seed_value,
        )
    assert [r for r in tally.refused if r[1] >= 500] == []
    # Where the document is wrong: every request body is optional, though its schema has
    # required fields; a request without one conforms but names nothing to do.
    outside = [
        (label, body, answer)
        for label, _, body, answer in tally.refused
        if body is not None and not _excepted(answer)
    ]
    print("examples per operation:", dict(tally.calls), "accepted:", dict(tally.accepted))
    assert outside == []
    assert sum(tally.accepted.values()) > 0
    lane = Lane.TRACK if which == "track" else Lane.PIPELINES
    drainer = build_drainer(settings, redis_client)
    for shard in range(settings.queue.shards):
        assert drainer.drain("default", shard, lane, bulk=True).stopped == "empty"
    assert dlq(redis_client) == []
    assert client.get("/_sandbox/received", params={"limit": 1}).json()["records"]


@pytest.mark.parametrize("which", ["track", "pipelines"])
@pytest.mark.parametrize("seed_value", SEEDS, ids=["fixed", "rotating"])
@pytest.mark.parametrize("strict", [False, True], ids=["drop-in", "strict"])
def test_non_conforming_requests_are_refused_with_a_named_field(
    which: str,
    seed_value: int,
    strict: bool,
    make_settings: Callable[..., Settings],
    triggers: RecordingTriggers,
) -> None:
    print(f"seed {seed_value} (CIOQ_CONFORMANCE_SEED={seed_value} replays it)")
    settings = make_settings(cdp_api_key="cdp-key", strict_validation=strict)
    with serve_in_thread(create_app(settings, triggers=triggers)) as url:
        tally = oracle.run(
            which,
            url,
            INGEST_KEY,
            mode=GenerationMode.NEGATIVE,
            examples=EXAMPLES,
            seed_value=seed_value,
        )
    assert sum(tally.calls.values()) > 0
    for label, status, body, answer in tally.refused:
        assert 400 <= status < 500, (label, status, body, answer)
        assert isinstance(answer, dict) and answer["errors"], (label, body, answer)
        assert all(isinstance(e["field"], str) for e in answer["errors"])
        assert any(e["field"] for e in answer["errors"]), (label, body, answer)
